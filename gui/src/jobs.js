// The live job table: jobs by id, merged from the list and from live events, with the status history seen.

const FINAL = new Set(['succeeded', 'dead', 'cancelled']);

/** Formats an RFC 3339 time for the table (local time, seconds). */
export function shortTime(text) {
  if (!text) return '—';
  const date = new Date(text);
  return Number.isNaN(date.getTime()) ? text : date.toLocaleTimeString();
}

export class JobTable {
  /** `onOpen(id)` is called when the user opens a job. */
  constructor(table, empty, onOpen) {
    this.body = table.querySelector('tbody');
    this.empty = empty;
    this.onOpen = onOpen;
    this.jobs = new Map();
    this.listeners = new Set();
  }

  /** Called with a job whenever it changes. */
  onChange(listener) {
    this.listeners.add(listener);
  }

  /** Replaces everything with a fresh list (newest first), keeping the history already seen. */
  load(jobs) {
    const previous = this.jobs;
    this.jobs = new Map();
    for (const job of jobs) {
      const known = previous.get(job.id);
      this.jobs.set(job.id, { ...job, history: known?.history ?? historyOf(job) });
    }
    this.render();
  }

  /** Applies `job.created` or `job.updated`; a final status is never replaced by an earlier one. */
  apply(event, data) {
    const known = this.jobs.get(data.id);
    if (known && FINAL.has(known.status) && !FINAL.has(data.status)) return;
    const { cursor: _cursor, ...fields } = data;
    const job = known ? { ...known, ...fields } : { ...fields, history: [] };
    if (!known || known.status !== job.status) {
      job.history = [...(known?.history ?? []), { status: job.status, at: eventTime(job), live: true }];
    }
    if (!known) {
      this.jobs = new Map([[job.id, job], ...this.jobs]);
    } else {
      this.jobs.set(job.id, job);
    }
    this.render();
    for (const listener of this.listeners) listener(job);
  }

  get(id) {
    return this.jobs.get(id);
  }

  render() {
    const rows = [];
    for (const job of this.jobs.values()) {
      const row = document.createElement('tr');
      row.dataset.jobId = job.id;
      const idCell = document.createElement('td');
      const open = document.createElement('button');
      open.type = 'button';
      open.className = 'link';
      open.textContent = job.id.slice(-12);
      open.setAttribute('aria-label', `Open job ${job.id}`);
      open.addEventListener('click', () => this.onOpen(job.id));
      idCell.append(open);
      const status = document.createElement('td');
      const badge = document.createElement('span');
      badge.className = `status status-${job.status}`;
      badge.dataset.status = job.status;
      badge.textContent = job.status;
      status.append(badge);
      row.append(idCell, cell(job.engine), cell(job.kind), status, cell(`${job.attempts}/${job.max_attempts}`), cell(shortTime(job.enqueued_at)));
      rows.push(row);
    }
    this.body.replaceChildren(...rows);
    this.empty.hidden = rows.length > 0;
  }
}

function cell(text) {
  const td = document.createElement('td');
  td.textContent = text ?? '—';
  return td;
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
