// Batches live events so the page does its work at most once per animation frame, however fast they arrive.

export class FrameBatch {
  /** `flush(items)` receives everything pushed since the last frame, in order. */
  constructor(flush) {
    this.flushFn = flush;
    this.items = [];
    this.scheduled = false;
  }

  push(item) {
    this.items.push(item);
    if (this.scheduled) return;
    this.scheduled = true;
    // A hidden tab gets no animation frames: flush on a timer instead, so memory does not grow while it is hidden.
    if (document.hidden) setTimeout(() => this.flush(), 250);
    else requestAnimationFrame(() => this.flush());
  }

  flush() {
    this.scheduled = false;
    const items = this.items;
    this.items = [];
    if (items.length > 0) this.flushFn(items);
  }
}
