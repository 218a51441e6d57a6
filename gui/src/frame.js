// Batches live events so the page does its work at most once per animation frame, however fast they arrive, and
// never more than a frame's share of them at once (a replay of thousands is spread over a few frames).

/** Most items handled in one frame. */
const PER_FRAME = 2_000;

export class FrameBatch {
  /** `flush(items)` receives everything pushed since the last frame, in order. */
  constructor(flush) {
    this.flushFn = flush;
    this.items = [];
    this.scheduled = false;
  }

  push(item) {
    this.items.push(item);
    this.schedule();
  }

  schedule() {
    if (this.scheduled) return;
    this.scheduled = true;
    // A hidden tab gets no animation frames: flush on a timer instead, so memory does not grow while it is hidden.
    if (document.hidden) setTimeout(() => this.flush(), 250);
    else requestAnimationFrame(() => this.flush());
  }

  flush() {
    this.scheduled = false;
    const items = this.items.length > PER_FRAME ? this.items.splice(0, PER_FRAME) : this.items;
    if (items === this.items) this.items = [];
    else this.schedule();
    if (items.length > 0) this.flushFn(items);
  }
}
