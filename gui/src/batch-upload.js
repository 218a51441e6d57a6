// Batch upload: a JSON-lines file, one POST /jobs body per line, checked line by line in the browser and sent
// through POST /jobs/batch 1,000 at a time; each line that was not taken is listed with its reason. Each line's
// idempotency key comes from the file's content and the line number, so uploading the same file again (after a
// failure half-way, say) creates nothing twice.

import { count } from './format.js';
import { jobProblems } from './job-fields.js';

const PER_BATCH = 1_000;
const SHOWN_FAILURES = 100;

export class BatchUpload {
  constructor(form, { api, engines, created }) {
    this.form = form;
    this.api = api;
    this.engines = engines;
    this.created = created;
    this.file = form.querySelector('#batch-file');
    this.status = form.querySelector('#batch-status');
    this.failures = form.querySelector('#batch-failures');
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.upload();
    });
  }

  async upload() {
    const file = this.file.files[0];
    this.failures.replaceChildren();
    if (!file) {
      this.status.textContent = 'Choose a JSON-lines file first.';
      return;
    }
    const text = await file.text();
    const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(text)));
    const fileId = [...digest.slice(0, 8)].map((b) => b.toString(16).padStart(2, '0')).join('');
    const { items, failures } = parseLines(text, fileId);
    let created = 0;
    let replayed = 0;
    let sent = 0;
    const button = this.form.querySelector('#batch-upload');
    button.disabled = true;
    try {
      for (let start = 0; start < items.length; start += PER_BATCH) {
        const chunk = items.slice(start, start + PER_BATCH);
        this.status.textContent = `Sending lines ${count(sent + 1)}–${count(sent + chunk.length)} of ${count(items.length)}…`;
        let answer;
        try {
          ({ data: answer } = await this.api.post('/jobs/batch', { jobs: chunk.map((item) => item.body) }));
        } catch (failure) {
          this.status.textContent = `Stopped after ${count(sent)} of ${count(items.length)} lines: ${failure.message} Upload the same file again to send the rest; lines already taken are not created twice.`;
          this.status.dataset.state = 'stopped';
          this.show(failures);
          return;
        }
        answer.results.forEach((result, i) => {
          const { line, body } = chunk[i];
          if (result.job) {
            if (result.status === 201) created += 1;
            else replayed += 1;
            this.engines.usable(body.engine);
            this.created(result.job);
          } else {
            if (result.error === 'not_whitelisted') this.engines.refused(body.engine);
            failures.push({ line, reason: `${result.error}: ${result.message}` });
          }
        });
        sent += chunk.length;
      }
    } finally {
      button.disabled = false;
    }
    failures.sort((a, b) => a.line - b.line);
    const taken = `${count(created)} job${created === 1 ? '' : 's'} created${replayed ? `, ${count(replayed)} already there from an earlier upload` : ''}`;
    this.status.textContent = `${taken}; ${failures.length ? `${count(failures.length)} line${failures.length === 1 ? '' : 's'} not taken:` : 'every line taken.'}`;
    this.status.dataset.state = 'done';
    this.status.dataset.created = String(created);
    this.status.dataset.failed = String(failures.length);
    this.show(failures);
  }

  show(failures) {
    const shown = failures.slice(0, SHOWN_FAILURES).map(({ line, reason }) => {
      const item = document.createElement('li');
      item.dataset.line = String(line);
      item.textContent = `Line ${line}: ${reason}`;
      return item;
    });
    if (failures.length > SHOWN_FAILURES) {
      shown.push(Object.assign(document.createElement('li'), { textContent: `…and ${count(failures.length - SHOWN_FAILURES)} more.` }));
    }
    this.failures.replaceChildren(...shown);
  }
}

/** The file's lines as batch items (blank lines skipped) and the lines refused before sending, with reasons. */
export function parseLines(text, fileId) {
  const items = [];
  const failures = [];
  text.split(/\r?\n/).forEach((raw, index) => {
    const line = index + 1;
    if (!raw.trim()) return;
    let body;
    try {
      body = JSON.parse(raw);
    } catch (error) {
      failures.push({ line, reason: `not valid JSON: ${error.message}` });
      return;
    }
    const problems = jobProblems(body, ['idempotency_key']);
    if (problems.length > 0) {
      failures.push({ line, reason: problems.map(([, message]) => message).join('; ') });
      return;
    }
    items.push({ line, body: { idempotency_key: `upload-${fileId}-${line}`, ...body } });
  });
  return { items, failures };
}
