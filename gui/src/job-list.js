// The jobs table: one page of the filtered list (newest first), paged by cursor. Its DOM holds only this page's
// rows; a change updates its row in place, and on the first page a new matching job goes in at the top while the
// oldest row leaves, so the page never grows.

import { matches, toQuery } from './filters.js';
import { createRow, updateRow } from './job-row.js';

export class JobPage {
  constructor(table, { api, store, notice, onOpen, info, older, newer, empty }) {
    this.body = table.querySelector('tbody');
    this.pickAll = table.querySelector('#pick-page');
    this.api = api;
    this.store = store;
    this.notice = notice;
    this.onOpen = onOpen;
    this.info = info;
    this.empty = empty;
    this.olderButton = older;
    this.newerButton = newer;
    this.filter = {};
    this.pageSize = 50;
    /** The cursor each page was read from, first page first (the first has none). */
    this.starts = [null];
    this.next = null;
    /** Row elements of this page by job id, in page order (newest first). */
    this.rows = new Map();
    this.selected = new Set();
    this.selectionListeners = new Set();
    this.loading = 0;
    older.addEventListener('click', () => this.older());
    newer.addEventListener('click', () => this.newer());
    this.pickAll.addEventListener('change', () => {
      for (const id of this.rows.keys()) this.select(id, this.pickAll.checked, false);
      this.selectionChanged();
    });
  }

  get firstPage() {
    return this.starts.length === 1;
  }

  /** Shows the first page of `filter` with `pageSize` rows. */
  show(filter, pageSize = this.pageSize) {
    this.filter = filter;
    this.pageSize = pageSize;
    this.starts = [null];
    this.clearSelection();
    return this.load();
  }

  older() {
    if (!this.next) return;
    this.starts.push(this.next);
    return this.load();
  }

  newer() {
    if (this.firstPage) return;
    this.starts.pop();
    return this.load();
  }

  /** Re-reads the current page. */
  async load() {
    const ticket = ++this.loading;
    const since = this.store.seq;
    const cursor = this.starts.at(-1);
    try {
      const { data } = await this.api.get(`/jobs?${toQuery(this.filter, { limit: this.pageSize, cursor })}`);
      if (ticket !== this.loading) return [];
      const changes = this.store.remember(data.jobs, since);
      // A job changed while the list was on its way shows as the store has it now.
      this.render(data.jobs.map((job) => this.store.get(job.id) ?? job));
      this.next = data.next_cursor;
      this.updatePaging();
      return changes;
    } catch (failure) {
      if (ticket === this.loading) this.notice.failure(failure);
      return [];
    }
  }

  render(jobs) {
    this.rows = new Map();
    const rows = jobs.map((job) => this.makeRow(job));
    this.body.replaceChildren(...rows);
    this.updateEmpty();
    this.updatePickAll();
  }

  makeRow(job) {
    const row = createRow(job, {
      selected: this.selected.has(job.id),
      onOpen: this.onOpen,
      onSelect: (id, on) => this.select(id, on),
    });
    this.rows.set(job.id, row);
    return row;
  }

  /** Applies a frame's worth of store changes: rows in place, new matching jobs at the top of the first page. */
  apply(changes) {
    let added = false;
    for (const { job } of changes) {
      const row = this.rows.get(job.id);
      if (row) {
        updateRow(row, job);
      } else if (this.firstPage && job.kind && matches(job, this.filter) && this.belongsOnFirstPage(job.id)) {
        this.insert(job);
        added = true;
      }
    }
    if (added) {
      this.trim();
      this.updateEmpty();
      this.updatePickAll();
    }
  }

  /** Newer than this page's oldest row, or the page still has room. */
  belongsOnFirstPage(id) {
    if (this.rows.size < this.pageSize) return true;
    const last = this.body.lastElementChild?.dataset.jobId;
    return !last || id > last;
  }

  /** Puts a row for `job` where its id sorts (newest first); usually the top. */
  insert(job) {
    const row = this.makeRow(job);
    let before = this.body.firstElementChild;
    while (before && before.dataset.jobId > job.id) before = before.nextElementSibling;
    this.body.insertBefore(row, before);
  }

  /** Keeps the page at its size: the oldest rows leave, and the next page starts after the last one kept. */
  trim() {
    let cut = false;
    while (this.rows.size > this.pageSize) {
      const last = this.body.lastElementChild;
      this.rows.delete(last.dataset.jobId);
      last.remove();
      cut = true;
    }
    if (cut) {
      this.next = this.body.lastElementChild?.dataset.jobId ?? null;
      this.updatePaging();
    }
  }

  /** Takes deleted jobs off the page. */
  removeRows(ids) {
    for (const id of ids) {
      this.rows.get(id)?.remove();
      this.rows.delete(id);
      this.selected.delete(id);
    }
    this.updateEmpty();
    this.selectionChanged();
  }

  updateEmpty() {
    this.empty.hidden = this.rows.size > 0;
  }

  updatePaging() {
    this.olderButton.disabled = !this.next;
    this.newerButton.disabled = this.firstPage;
    const page = this.starts.length;
    this.info.textContent = `Page ${page}${this.firstPage ? ' (newest, updates live)' : ''}`;
  }

  select(id, on, notify = true) {
    if (on) this.selected.add(id);
    else this.selected.delete(id);
    const box = this.rows.get(id)?.parts.box;
    if (box && box.checked !== on) box.checked = on;
    if (notify) this.selectionChanged();
  }

  clearSelection() {
    this.selected.clear();
    for (const row of this.rows.values()) row.parts.box.checked = false;
    this.selectionChanged();
  }

  onSelection(listener) {
    this.selectionListeners.add(listener);
  }

  /** The header checkbox is ticked when every row of this page is selected. */
  updatePickAll() {
    const onPage = [...this.rows.keys()];
    this.pickAll.checked = onPage.length > 0 && onPage.every((id) => this.selected.has(id));
  }

  selectionChanged() {
    this.updatePickAll();
    for (const listener of this.selectionListeners) listener(this.selected);
  }
}
