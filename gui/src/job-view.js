// The job view: one job's fields, status history, attempts, payload, result or error and queue position.

import { shortTime } from './jobs.js';

export class JobView {
  constructor(root, { api, table, notice }) {
    this.root = root;
    this.api = api;
    this.table = table;
    this.notice = notice;
    this.id = null;
    this.detail = null;
    root.querySelector('#job-close').addEventListener('click', () => this.close());
    root.querySelector('#job-cancel').addEventListener('click', () => this.cancel());
    root.addEventListener('keydown', (event) => {
      if (event.key === 'Escape') this.close();
    });
    table.onChange((job) => {
      if (job.id !== this.id) return;
      // A finished job's result and error come with the event; a queued one's position needs a fresh look.
      if (job.status === 'queued') this.refresh();
      else this.render();
    });
  }

  async open(id) {
    this.id = id;
    this.detail = null;
    this.root.hidden = false;
    this.render();
    this.root.focus();
    await this.refresh();
  }

  close() {
    const id = this.id;
    this.id = null;
    this.root.hidden = true;
    this.root.ownerDocument.querySelector(`tr[data-job-id="${CSS.escape(id ?? '')}"] button`)?.focus();
  }

  async refresh() {
    const id = this.id;
    try {
      const { data } = await this.api.get(`/jobs/${encodeURIComponent(id)}`);
      if (id === this.id) {
        this.detail = data;
        this.render();
      }
    } catch (failure) {
      this.notice.failure(failure);
    }
  }

  async cancel() {
    try {
      await this.api.post(`/jobs/${encodeURIComponent(this.id)}/cancel`);
      await this.refresh();
    } catch (failure) {
      this.notice.failure(failure);
    }
  }

  render() {
    if (!this.id) return;
    const live = this.table.get(this.id) ?? {};
    const job = { ...this.detail, ...live };
    const fields = this.root.querySelector('#job-fields');
    const rows = [
      ['Id', job.id ?? this.id],
      ['Engine', job.engine],
      ['Kind', job.kind],
      ['Status', job.status],
      ['Attempts', job.attempts === undefined ? undefined : `${job.attempts} of ${job.max_attempts}`],
      ['Queue position', job.status === 'queued' ? this.detail?.queue_position : undefined],
      ['Waiting on', job.status === 'queued' ? this.detail?.waiting_on : undefined],
      ['Progress', job.progress ? `${job.progress.percent ?? '?'} % ${job.progress.message ?? ''}` : undefined],
      ['Enqueued', shortTime(job.enqueued_at)],
      ['Started', shortTime(job.claimed_at)],
      ['Finished', shortTime(job.finished_at)],
    ].filter(([, value]) => value !== undefined && value !== null);
    fields.replaceChildren(
      ...rows.flatMap(([term, value]) => {
        const dt = document.createElement('dt');
        dt.textContent = term;
        const dd = document.createElement('dd');
        dd.textContent = String(value);
        if (term === 'Status') dd.id = 'job-view-status';
        return [dt, dd];
      }),
    );
    const history = this.root.querySelector('#job-history');
    history.replaceChildren(
      ...(live.history ?? []).map((step) => {
        const item = document.createElement('li');
        item.textContent = `${step.status}${step.at ? ` at ${shortTime(step.at)}` : ''}${step.live ? '' : ' (from the job’s times)'}`;
        return item;
      }),
    );
    this.root.querySelector('#job-payload-view').textContent = this.detail ? JSON.stringify(this.detail.payload, null, 2) : '…';
    const failed = job.status === 'dead' || (job.error && job.status !== 'succeeded');
    this.root.querySelector('#job-outcome-title').textContent = failed ? 'Error' : 'Result';
    const outcome = failed ? job.error : job.result;
    this.root.querySelector('#job-outcome').textContent =
      outcome === undefined || outcome === null ? '(none yet)' : typeof outcome === 'string' ? outcome : JSON.stringify(outcome, null, 2);
    this.root.querySelector('#job-cancel').hidden = !['queued', 'running'].includes(job.status);
  }
}
