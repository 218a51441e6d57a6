// The status tabs with live counts: read once from GET /jobs/counts, then moved by each change the store reports
// (one status down, one up). A change whose previous status the page never knew re-reads the counts, at most
// every two seconds; nothing re-reads a list. Events reach the page later than the database sees them, so a read
// is pinned to the live feed's cursor taken just before it: an event up to that cursor is already in the numbers
// read and does not move them again.

import { count } from './format.js';
import { STATUSES } from './jobs.js';

const RECONCILE_MS = 2_000;

export class StatusTabs {
  /** `root`: the tab list; `onPick(status)` when a tab is chosen ('' = all). */
  /** `cursorNow()` resolves to the live feed's current cursor (parsed), or null when it cannot tell. */
  constructor(root, { api, notice, onPick, cursorNow = async () => null }) {
    this.root = root;
    this.cursorNow = cursorNow;
    /** Counts read at this cursor include every event up to it. */
    this.floor = null;
    /** Changes counted while a read was on its way (re-applied over it when newer than its cursor). */
    this.inFlight = null;
    this.api = api;
    this.notice = notice;
    this.onPick = onPick;
    this.engine = '';
    this.counts = Object.fromEntries(STATUSES.map((s) => [s, 0]));
    this.status = '';
    this.timer = null;
    this.tabs = new Map();
    for (const status of ['', ...STATUSES]) {
      const tab = document.createElement('button');
      tab.type = 'button';
      tab.setAttribute('role', 'tab');
      tab.dataset.status = status;
      const label = document.createElement('span');
      label.textContent = status || 'all';
      const number = document.createElement('span');
      number.className = 'count';
      tab.append(label, ' ', number);
      tab.addEventListener('click', () => this.pick(status));
      this.tabs.set(status, { tab, number, shown: null });
      root.append(tab);
    }
    this.markChosen();
  }

  pick(status) {
    this.status = status;
    this.markChosen();
    this.onPick(status);
  }

  markChosen() {
    for (const [status, { tab }] of this.tabs) tab.setAttribute('aria-selected', String(status === this.status));
  }

  /** Reads the counts for `engine` ('' = every engine). */
  async load(engine = this.engine) {
    this.engine = engine;
    clearTimeout(this.timer);
    this.timer = null;
    const moved = [];
    this.inFlight = moved;
    try {
      const floor = await this.cursorNow().catch(() => null);
      const query = engine ? `?engine=${encodeURIComponent(engine)}` : '';
      const { data } = await this.api.get(`/jobs/counts${query}`);
      if (engine !== this.engine || this.inFlight !== moved) return;
      for (const status of STATUSES) this.counts[status] = data[status] ?? 0;
      this.floor = floor;
      this.inFlight = null;
      // What moved meanwhile after the cursor is not in the numbers read (or only just: a rare double count).
      this.move(moved.filter(({ job }) => !this.counted(job)));
      this.render();
    } catch (failure) {
      this.notice.failure(failure);
    } finally {
      if (this.inFlight === moved) this.inFlight = null;
    }
  }

  /** Whether the counts read already include the event that last changed `job`. */
  counted(job) {
    return Boolean(this.floor && job.at && job.at.boot === this.floor.boot && job.at.seq <= this.floor.seq);
  }

  /** Moves the counts by the store's changes. */
  apply(changes) {
    const fresh = changes.filter(({ job }) => !this.counted(job));
    this.inFlight?.push(...fresh.map((change) => ({ ...change, job: { ...change.job } })));
    this.move(fresh);
  }

  move(changes) {
    let unknown = false;
    for (const { job, previous, created } of changes) {
      if (this.engine && job.engine !== this.engine) continue;
      if (previous === job.status) continue;
      if (previous) this.counts[previous] = Math.max(0, this.counts[previous] - 1);
      else if (!created) unknown = true;
      this.counts[job.status] = (this.counts[job.status] ?? 0) + 1;
    }
    if (unknown) this.reconcileSoon();
    this.render();
  }

  /** A job left (deleted) in `status`. */
  removed(status) {
    if (status) this.counts[status] = Math.max(0, this.counts[status] - 1);
    this.render();
  }

  /** Stops re-reading (signed out). */
  stop() {
    clearTimeout(this.timer);
    this.timer = null;
  }

  reconcileSoon() {
    if (this.timer) return;
    this.timer = setTimeout(() => this.load(), RECONCILE_MS);
  }

  render() {
    const total = STATUSES.reduce((sum, s) => sum + this.counts[s], 0);
    for (const [status, entry] of this.tabs) {
      const value = status ? this.counts[status] : total;
      if (entry.shown === value) continue;
      entry.shown = value;
      entry.number.textContent = count(value);
      entry.tab.dataset.count = String(value);
    }
  }
}
