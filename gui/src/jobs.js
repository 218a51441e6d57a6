// What the page knows of the user's jobs: a bounded cache of job summaries by id, merged from lists, live events
// and the answers of actions, each with the status history this page saw. Every change reports the status the job
// had before, so the counts can move without re-reading anything.

import { parseCursor } from './cursor.js';

export const FINAL = new Set(['succeeded', 'dead', 'cancelled']);
export const STATUSES = ['queued', 'running', 'succeeded', 'dead', 'cancelled'];

/** Most jobs kept; the oldest-touched are forgotten first (a forgotten job's next event reconciles the counts). */
const LIMIT = 20_000;

export class JobStore {
  constructor(limit = LIMIT) {
    this.limit = limit;
    this.jobs = new Map();
    /** Grows with every change: a list read after `seq` = s is older than a job whose `seq` is above s. */
    this.seq = 0;
  }

  get(id) {
    return this.jobs.get(id);
  }

  /**
   * Applies a `job.created` / `job.updated` event or an action's answer; `guard(known, data)` may refuse it.
   * Returns the change `{job, previous, created}` (`previous` undefined when the job was not known), or null.
   */
  apply(event, data, guard = null) {
    const known = this.jobs.get(data.id);
    if (guard && !guard(known, data)) return null;
    // An event older than the last one applied to this job (found late, after a loss) changes nothing.
    const at = data.cursor ? parseCursor(data.cursor) : null;
    if (at && known?.at && known.at.boot === at.boot && known.at.seq >= at.seq) return null;
    const { cursor: _cursor, ...fields } = data;
    // `job.updated` leaves `cancel_requested` out when it is false (a retried job's earlier request is over).
    if (event === 'job.updated') fields.cancel_requested = Boolean(data.cancel_requested);
    const job = known ? { ...known, ...fields } : { ...fields, history: [] };
    if (!FINAL.has(job.status)) {
      // Back to work (a retry): the previous outcome no longer describes the job.
      delete job.result;
      delete job.error;
    }
    if (job.status !== 'running') delete job.progress;
    // An action's answer has no cursor: whatever it changed is not in counts read before.
    job.at = at;
    if (!known || known.status !== job.status) {
      job.history = [...(known?.history ?? []), { status: job.status, at: eventTime(job), live: true }];
    }
    this.put(job);
    return { job, previous: known?.status, created: event === 'job.created' && !known };
  }

  /** Merges jobs read from `GET /jobs` when the store was at `since`; a job changed after that keeps what it has. */
  remember(jobs, since) {
    const changes = [];
    for (const listed of jobs) {
      const known = this.jobs.get(listed.id);
      if (known && known.seq > since) continue;
      const job = { ...known, ...listed, history: known?.history ?? historyOf(listed) };
      this.put(job);
      if (known && known.status !== job.status) changes.push({ job, previous: known.status, created: false });
    }
    return changes;
  }

  /** Forgets a deleted job; returns its last status (or undefined). */
  forget(id) {
    const known = this.jobs.get(id);
    this.jobs.delete(id);
    return known?.status;
  }

  put(job) {
    job.seq = ++this.seq;
    this.jobs.delete(job.id);
    this.jobs.set(job.id, job);
    if (this.jobs.size > this.limit) this.jobs.delete(this.jobs.keys().next().value);
  }
}

/** A replayed event older than what a list showed must not move a finished job back (a retry comes live). */
export function notStale(known, data) {
  return !(known && FINAL.has(known.status) && !FINAL.has(data.status));
}

/** When the status in `job` began, as far as its fields tell. */
function eventTime(job) {
  if (FINAL.has(job.status)) return job.finished_at ?? new Date().toISOString();
  if (job.status === 'running') return job.claimed_at ?? new Date().toISOString();
  return new Date().toISOString();
}

/** The history a listed job's own times tell (the page saw nothing of it live). */
function historyOf(job) {
  const history = [{ status: 'queued', at: job.enqueued_at, live: false }];
  if (job.claimed_at) history.push({ status: 'running', at: job.claimed_at, live: false });
  if (FINAL.has(job.status)) history.push({ status: job.status, at: job.finished_at, live: false });
  else if (job.status === 'queued' && job.attempts > 0) history.push({ status: 'queued', at: null, live: false });
  return history;
}
