// One row of the jobs table: built once, then updated in place (only the cells whose text changed).

import { dateTime } from './format.js';

const MARK = { dead: '✖ ', cancelled: '⊘ ', succeeded: '✓ ', running: '▶ ', queued: '' };

/** A new row for `job`; `onOpen(id)` opens it, `onSelect(id, on)` follows its checkbox. */
export function createRow(job, { selected, onOpen, onSelect }) {
  const row = document.createElement('tr');
  row.dataset.jobId = job.id;
  const pick = document.createElement('td');
  const box = document.createElement('input');
  box.type = 'checkbox';
  box.className = 'pick';
  box.checked = selected;
  box.setAttribute('aria-label', `Select job ${job.id}`);
  box.addEventListener('change', () => onSelect(job.id, box.checked));
  pick.append(box);
  const idCell = document.createElement('td');
  const open = document.createElement('button');
  open.type = 'button';
  open.className = 'link';
  open.textContent = job.id.slice(-12);
  open.title = job.id;
  open.setAttribute('aria-label', `Open job ${job.id}`);
  open.addEventListener('click', () => onOpen(job.id));
  idCell.append(open);
  const status = document.createElement('td');
  const badge = document.createElement('span');
  status.append(badge);
  row.append(pick, idCell, document.createElement('td'), document.createElement('td'), status, document.createElement('td'), document.createElement('td'));
  row.parts = { box, badge, engine: row.children[2], kind: row.children[3], attempts: row.children[5], enqueued: row.children[6] };
  updateRow(row, job);
  return row;
}

/** Brings `row` up to date with `job`, touching only what changed. */
export function updateRow(row, job) {
  const { badge, engine, kind, attempts, enqueued } = row.parts;
  if (badge.dataset.status !== job.status || row.dataset.cancelRequested !== String(Boolean(job.cancel_requested))) {
    badge.className = `status status-${job.status}`;
    badge.dataset.status = job.status;
    const asked = job.cancel_requested && job.status === 'running';
    badge.textContent = `${MARK[job.status] ?? ''}${job.status}${asked ? ' (cancel requested)' : ''}`;
    row.className = `row-${job.status}`;
    row.dataset.cancelRequested = String(Boolean(job.cancel_requested));
  }
  setText(engine, job.engine);
  setText(kind, job.kind);
  setText(attempts, job.attempts === undefined ? '—' : `${job.attempts}/${job.max_attempts}`);
  setText(enqueued, dateTime(job.enqueued_at));
}

function setText(cell, text) {
  const value = text ?? '—';
  if (cell.textContent !== value) cell.textContent = value;
}
