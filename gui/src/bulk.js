// Bulk actions: retry, cancel or delete the selected jobs, or every job matching the filter, after a confirmation
// that names how many jobs it will touch.

import { confirmAction } from './confirm.js';
import { describe, toQuery } from './filters.js';
import { count } from './format.js';

const MAX_IDS = 1_000;
const COUNT_PAGES = 10;
const VERB = { retry: 'Retry', cancel: 'Cancel', delete: 'Delete' };
/** The states each action applies to (the gateway skips the others). */
const APPLIES = { retry: ['dead', 'cancelled'], cancel: ['queued', 'running'], delete: ['succeeded', 'dead', 'cancelled'] };

export class BulkActions {
  constructor(root, dialog, { api, notice, page, tabs, store, currentFilter, done }) {
    this.root = root;
    this.dialog = dialog;
    this.api = api;
    this.notice = notice;
    this.page = page;
    this.tabs = tabs;
    this.store = store;
    this.currentFilter = currentFilter;
    this.done = done;
    this.summary = root.querySelector('#bulk-summary');
    this.status = root.querySelector('#bulk-status');
    this.scope = root.querySelector('#bulk-scope');
    for (const button of root.querySelectorAll('button[data-action]')) {
      button.addEventListener('click', () => this.ask(button.dataset.action));
    }
    page.onSelection(() => this.render());
    this.scope.addEventListener('change', () => this.render());
    this.render();
  }

  get allMatching() {
    return this.scope.value === 'filter';
  }

  render() {
    const n = this.page.selected.size;
    this.summary.textContent = this.allMatching ? 'Every job matching the filter' : `${count(n)} selected`;
    for (const button of this.root.querySelectorAll('button[data-action]')) button.disabled = !this.allMatching && n === 0;
  }

  /** How many jobs the filter selects for `action`: from the counts when only the status and engine filter, else
   *  by reading the matching jobs, up to `COUNT_PAGES` pages of 500 (the gateway counts only by engine). */
  async matching(filter, action) {
    const states = (filter.status ? filter.status.split(',') : APPLIES[action]).filter((s) => APPLIES[action].includes(s));
    const onlyCounted = Object.keys(filter).every((key) => key === 'status' || (key === 'engine' && filter.engine === this.tabs.engine));
    if (onlyCounted) return { exact: true, n: states.reduce((sum, s) => sum + (this.tabs.counts[s] ?? 0), 0) };
    if (states.length === 0) return { exact: true, n: 0 };
    let n = 0;
    let cursor = null;
    for (let pages = 0; pages < COUNT_PAGES; pages += 1) {
      const { data } = await this.api.get(`/jobs?${toQuery({ ...filter, status: states.join(',') }, { limit: 500, cursor })}`);
      n += data.jobs.length;
      cursor = data.next_cursor;
      if (!cursor) return { exact: true, n };
    }
    return { exact: false, n };
  }

  async ask(action) {
    this.notice.clear();
    let request;
    let what;
    if (this.allMatching) {
      const { filter, error } = this.currentFilter();
      if (error) return this.notice.message(error);
      let size;
      try {
        size = await this.matching(filter, action);
      } catch (failure) {
        return this.notice.failure(failure);
      }
      request = { action, filter };
      what = `${size.exact ? count(size.n) : `more than ${count(size.n)}`} job${size.n === 1 ? '' : 's'} matching: ${describe(filter)}`;
    } else {
      const ids = [...this.page.selected];
      request = { action, ids };
      what = `${count(ids.length)} selected job${ids.length === 1 ? '' : 's'}`;
    }
    const text = `${VERB[action]} ${what}?${action === 'delete' ? ' Deleted jobs and their history are gone for good.' : ''} Only jobs that are ${APPLIES[action].join(' or ')} are changed.`;
    if (!(await confirmAction(this.dialog, text, `${VERB[action]} ${request.ids?.length === 1 ? 'job' : 'jobs'}`))) return;
    await this.run(request);
  }

  async run({ action, ids, filter }) {
    this.status.textContent = `${VERB[action]}: working…`;
    let matched = 0;
    let changed = 0;
    try {
      const batches = ids ? chunks(ids, MAX_IDS).map((part) => ({ action, ids: part })) : [{ action, filter }];
      for (const body of batches) {
        const { data } = await this.api.post('/jobs/bulk', body);
        matched += data.matched;
        changed += data.changed;
        this.status.textContent = `${VERB[action]}: ${count(changed)} changed so far…`;
      }
      this.status.textContent = `${VERB[action]}: ${count(changed)} of ${count(matched)} matched job${matched === 1 ? '' : 's'} changed.`;
    } catch (failure) {
      this.status.textContent = `${VERB[action]} stopped after ${count(changed)} changed.`;
      this.notice.failure(failure);
    }
    if (action === 'delete' && ids) {
      // Deletions have no live event: take them off the page and out of the counts here.
      for (const id of ids) this.store.forget(id);
      this.page.removeRows(ids);
    }
    this.page.clearSelection();
    await this.done();
  }
}

function chunks(items, size) {
  const out = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}
