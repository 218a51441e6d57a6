// The job view: one job's fields, progress bar, queue position, status history, every attempt, payload, result or
// error, and retry / cancel / delete with immediate feedback.

import { confirmAction } from './confirm.js';
import { dateTime, duration } from './format.js';
import { FINAL } from './jobs.js';

export class JobView {
  /** `removed(id, status)` is called once the job is deleted; `applyAnswer(job, guard)` takes an action's answer. */
  constructor(root, { api, store, notice, dialog, removed, applyAnswer }) {
    this.root = root;
    this.api = api;
    this.store = store;
    this.notice = notice;
    this.dialog = dialog;
    this.removed = removed;
    this.applyAnswer = applyAnswer;
    this.id = null;
    this.detail = null;
    this.attempts = null;
    /** What the user just asked for and the gateway has not confirmed yet, e.g. 'cancel requested'. */
    this.pending = null;
    this.$ = (selector) => root.querySelector(selector);
    this.$('#job-close').addEventListener('click', () => this.close());
    this.$('#job-cancel').addEventListener('click', () => this.cancel());
    this.$('#job-retry').addEventListener('click', () => this.retry());
    this.$('#job-delete').addEventListener('click', () => this.remove());
    root.addEventListener('keydown', (event) => {
      if (event.key === 'Escape' && !this.dialog.open) this.close();
    });
  }

  /** A frame's store changes: re-render if this job moved; re-read it when its status changed. */
  apply(changes) {
    if (!this.id || !changes.some((c) => c.job.id === this.id)) return;
    const statusMoved = changes.some((c) => c.job.id === this.id && c.previous !== c.job.status);
    // A finished job's result and error come with the event; a queued one's position and the attempts need a look.
    if (statusMoved) this.refresh();
    else this.render();
  }

  async open(id) {
    this.id = id;
    this.detail = null;
    this.attempts = null;
    this.pending = null;
    this.missing = false;
    this.$('#job-action-status').textContent = '';
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

  async refresh({ quiet = false } = {}) {
    const id = this.id;
    if (!id) return;
    try {
      const [{ data: detail }, { data: attempts }] = await Promise.all([
        this.api.get(`/jobs/${encodeURIComponent(id)}`),
        this.api.get(`/jobs/${encodeURIComponent(id)}/attempts`),
      ]);
      if (id !== this.id) return;
      this.detail = detail;
      this.attempts = attempts.attempts;
      this.render();
    } catch (failure) {
      if (id === this.id && !quiet) this.failed('Could not read the job', failure);
      if (id === this.id) this.render();
    }
  }

  /** Runs an action: says so at once, shows the gateway's refusal with its message, re-reads the job after. */
  async act(label, call) {
    const id = this.id;
    // The answer describes the job as the action left it; an event applied since then is newer.
    const since = this.store.seq;
    const guard = (known) => !known || known.seq <= since;
    this.pending = label;
    this.say(`${label}…`);
    this.render();
    let refused = false;
    try {
      const { data } = await call(id);
      if (data?.id) this.applyAnswer(data, guard);
      this.say(`${label}: done.`);
    } catch (failure) {
      refused = true;
      this.failed(`${label} was refused`, failure);
    }
    // From here the job's own fields tell (a running job's `cancel_requested`, a retried one's status).
    this.pending = null;
    // After a refusal the refusal stays on screen, whatever the re-read says.
    if (id === this.id) await this.refresh({ quiet: refused });
  }

  cancel() {
    // A running job stops at its engine's next heartbeat: until then it reads "cancel requested".
    return this.act('cancel requested', (id) => this.api.post(`/jobs/${encodeURIComponent(id)}/cancel`));
  }

  retry() {
    return this.act('retry requested', (id) => this.api.post(`/jobs/${encodeURIComponent(id)}/retry`));
  }

  async remove() {
    const id = this.id;
    if (!(await confirmAction(this.dialog, `Delete job ${id} and its history for good?`, 'Delete job'))) return;
    this.say('delete requested…');
    try {
      await this.api.delete(`/jobs/${encodeURIComponent(id)}`);
      const status = this.store.forget(id);
      this.removed(id, status);
      this.close();
      this.notice.message(`Job ${id} was deleted.`);
    } catch (failure) {
      this.failed('Delete was refused', failure);
    }
  }

  say(text) {
    this.$('#job-action-status').textContent = text;
  }

  failed(what, failure) {
    this.say(`${what}: ${failure.message}`);
    this.notice.failure(failure);
    if (failure.status === 404 && this.id && !this.missing) this.gone();
  }

  /** The gateway no longer has the job (deleted elsewhere): off the table and the counts; the view says so. */
  gone() {
    this.missing = true;
    this.removed(this.id, this.store.forget(this.id));
    this.render();
  }

  render() {
    if (!this.id) return;
    const live = this.store.get(this.id) ?? {};
    const job = { ...this.detail, ...live };
    const status = this.missing ? 'deleted' : `${job.status ?? '…'}${job.cancel_requested && !FINAL.has(job.status) ? ' (cancel requested)' : this.pending ? ` (${this.pending})` : ''}`;
    const waiting = job.status === 'queued';
    this.fields([
      ['Id', job.id ?? this.id],
      ['Engine', job.engine],
      ['Kind', job.kind],
      ['Status', status],
      ['Attempts', job.attempts === undefined ? undefined : `${job.attempts} of ${job.max_attempts}`],
      ['Queue position', waiting ? (this.detail?.queue_position ?? (this.detail?.waiting_on ? 'waiting' : undefined)) : undefined],
      ['Waiting on', waiting ? this.detail?.waiting_on : undefined],
      ['Priority', job.priority],
      ['Enqueued', dateTime(job.enqueued_at)],
      ['Run at', job.run_at && Math.abs(new Date(job.run_at) - new Date(job.enqueued_at)) >= 1000 ? dateTime(job.run_at) : undefined],
      ['Started', dateTime(job.claimed_at)],
      ['Finished', dateTime(job.finished_at)],
    ]);
    this.progress(job);
    this.history(live.history ?? []);
    this.attemptRows();
    this.$('#job-payload-view').textContent = this.detail ? JSON.stringify(this.detail.payload, null, 2) : '…';
    const failed = job.status === 'dead' || job.status === 'cancelled' || (job.error && job.status !== 'succeeded');
    this.$('#job-outcome-title').textContent = failed ? 'Error' : 'Result';
    const outcome = failed ? job.error : job.result;
    const outcomeView = this.$('#job-outcome');
    outcomeView.textContent = outcome === undefined || outcome === null ? (FINAL.has(job.status) ? '(none)' : '(none yet)') : typeof outcome === 'string' ? outcome : JSON.stringify(outcome, null, 2);
    outcomeView.classList.toggle('error', Boolean(failed && outcome));
    const busy = this.pending !== null;
    this.$('#job-cancel').hidden = !['queued', 'running'].includes(job.status) || Boolean(job.cancel_requested);
    this.$('#job-retry').hidden = !['dead', 'cancelled'].includes(job.status);
    this.$('#job-delete').hidden = !FINAL.has(job.status);
    for (const button of ['#job-cancel', '#job-retry', '#job-delete']) {
      this.$(button).disabled = busy;
      if (this.missing) this.$(button).hidden = true;
    }
  }

  fields(rows) {
    this.$('#job-fields').replaceChildren(
      ...rows
        .filter(([, value]) => value !== undefined && value !== null)
        .flatMap(([term, value]) => {
          const dt = document.createElement('dt');
          dt.textContent = term;
          const dd = document.createElement('dd');
          dd.textContent = String(value);
          if (term === 'Status') dd.id = 'job-view-status';
          return [dt, dd];
        }),
    );
  }

  progress(job) {
    const box = this.$('#job-progress');
    const percent = Number(job.progress?.percent);
    box.hidden = job.status !== 'running' || !job.progress;
    if (box.hidden) return;
    const bar = box.querySelector('progress');
    if (Number.isFinite(percent)) bar.value = Math.max(0, Math.min(100, percent));
    else bar.removeAttribute('value');
    box.querySelector('#job-progress-text').textContent = `${Number.isFinite(percent) ? `${percent} %` : ''} ${job.progress.message ?? ''}`.trim();
  }

  history(steps) {
    this.$('#job-history').replaceChildren(
      ...steps.map((step) => {
        const item = document.createElement('li');
        item.textContent = `${step.status}${step.at ? ` at ${dateTime(step.at)}` : ''}${step.live ? '' : ' (from the job’s times)'}`;
        return item;
      }),
    );
  }

  attemptRows() {
    const body = this.$('#job-attempts tbody');
    const attempts = this.attempts ?? [];
    this.$('#job-attempts-empty').hidden = attempts.length > 0;
    this.$('#job-attempts-empty').textContent = this.attempts === null ? 'Reading attempts…' : 'No attempt yet.';
    body.replaceChildren(
      ...attempts.map((attempt) => {
        const row = document.createElement('tr');
        row.className = `attempt-${attempt.outcome ?? 'running'}`;
        for (const text of [
          String(attempt.number),
          attempt.worker ?? '—',
          dateTime(attempt.started_at),
          attempt.finished_at ? duration(attempt.started_at, attempt.finished_at) : 'running',
          attempt.outcome ?? 'running',
          attempt.error ?? '',
        ]) {
          const cell = document.createElement('td');
          cell.textContent = text;
          row.append(cell);
        }
        return row;
      }),
    );
  }
}
