// The job form: every field of POST /jobs, checked in the browser with the gateway's rules; every submission gets
// one idempotency key, reused when the user retries after a network error or a 429/503, so a retry never creates
// a second job.

import { jobProblems, wholeNumber } from './job-fields.js';

/** Each body field and the form control that holds it. */
const CONTROLS = {
  engine: '#job-engine',
  kind: '#job-kind',
  payload: '#job-payload',
  priority: '#job-priority',
  run_at: '#job-run-at',
  max_attempts: '#job-max-attempts',
  timeout_ms: '#job-timeout',
  concurrency_key: '#job-concurrency-key',
};
const LABELS = {
  engine: 'Engine',
  kind: 'Kind',
  payload: 'Payload',
  priority: 'Priority',
  run_at: 'Not before',
  max_attempts: 'Max attempts',
  timeout_ms: 'Timeout',
  concurrency_key: 'Concurrency key',
};

export class SubmitForm {
  constructor(form, { api, notice, session, engines, created }) {
    this.form = form;
    this.api = api;
    this.created = created;
    this.session = session;
    this.engines = engines;
    this.notice = notice;
    this.pending = null;
    this.controls = Object.fromEntries(Object.entries(CONTROLS).map(([field, selector]) => [field, form.querySelector(selector)]));
    this.errors = form.querySelector('#payload-error');
    this.status = form.querySelector('#submit-status');
    this.retry = form.querySelector('#retry-submit');
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.submitNew();
    });
    this.retry.addEventListener('click', () => this.send());
    // Editing the form makes the next submission a new job; problems already shown are re-checked as the user types.
    form.addEventListener('input', () => {
      this.pending = null;
      this.retry.hidden = true;
      if (this.errors.childElementCount > 0) this.validate();
    });
  }

  /** The form as a request body and its problems (`[field, message]` pairs). */
  read() {
    const value = (field) => this.controls[field].value.trim();
    const problems = [];
    const body = { engine: value('engine'), kind: value('kind') };
    if (!body.engine) problems.push(['engine', 'choose an engine']);
    const payloadText = this.controls.payload.value;
    if (payloadText.trim() !== '') {
      try {
        body.payload = JSON.parse(payloadText);
      } catch (error) {
        problems.push(['payload', `the payload is not valid JSON: ${error.message}`]);
      }
    }
    for (const field of ['priority', 'max_attempts', 'timeout_ms']) {
      const number = wholeNumber(value(field));
      if (number !== undefined) body[field] = number;
    }
    if (value('run_at')) {
      // datetime-local is the browser's local time without a zone.
      const at = new Date(value('run_at'));
      if (Number.isNaN(at.getTime())) problems.push(['run_at', 'the start time is not a time']);
      else body.run_at = at.toISOString();
    }
    if (value('concurrency_key')) body.concurrency_key = value('concurrency_key');
    const known = new Set(problems.map(([field]) => field));
    for (const problem of jobProblems(body)) if (!known.has(problem[0])) problems.push(problem);
    return { body, problems };
  }

  /** The request body, or null (with every reason shown by its field) if the form is not valid. */
  validate() {
    const { body, problems } = this.read();
    for (const [field, control] of Object.entries(this.controls)) {
      if (problems.some(([f]) => f === field)) control.setAttribute('aria-invalid', 'true');
      else control.removeAttribute('aria-invalid');
    }
    this.errors.replaceChildren(
      ...problems.map(([field, message]) => Object.assign(document.createElement('li'), { textContent: `${LABELS[field] ?? field}: ${message}` })),
    );
    if (problems.some(([field]) => field !== 'engine' && field !== 'kind' && field !== 'payload')) {
      this.form.querySelector('#job-options').open = true;
    }
    return problems.length === 0 ? body : null;
  }

  submitNew() {
    const body = this.validate();
    if (!body) {
      const first = Object.values(this.controls).find((control) => control.getAttribute('aria-invalid') === 'true');
      first?.focus();
      return;
    }
    this.pending = { body, key: crypto.randomUUID() };
    this.send();
  }

  async send() {
    if (!this.pending) return;
    const { body, key } = this.pending;
    this.notice.clear();
    this.status.textContent = 'Submitting…';
    try {
      const { status, data } = await this.api.post('/jobs', body, { headers: { 'Idempotency-Key': key } });
      this.pending = null;
      this.retry.hidden = true;
      this.status.textContent = `${status === 201 ? 'Created' : 'Already submitted'}: job ${data.id}`;
      this.engines.usable(body.engine);
      // The job shows at once from the answer, whether or not its live `job.created` has arrived (or ever will, if
      // the live feed is down); a job the feed has already shown, perhaps further along, is left as it is.
      this.created?.(data);
    } catch (failure) {
      // Worth retrying with the same key: the job may or may not exist; the key makes sure there is one.
      const retryable = failure.network || failure.status === 429 || failure.status >= 500;
      this.retry.hidden = !retryable;
      if (!retryable) this.pending = null;
      this.status.textContent = retryable ? 'Not submitted yet; retry keeps the same idempotency key.' : `Not submitted: ${failure.message}`;
      if (failure.code === 'not_whitelisted') {
        failure.hint = `The engine's owner can let you in with: flowork-gateway engine allow ${body.engine} ${this.session.user}`;
        this.engines.refused(body.engine);
      }
      this.notice.failure(failure);
    }
  }
}
