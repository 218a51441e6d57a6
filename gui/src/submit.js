// The job form: validates the JSON payload, and gives every submission one idempotency key, reused when the user
// retries after a network error or a 429/503, so a retry never creates a second job.

export class SubmitForm {
  constructor(form, { api, notice, session, created }) {
    this.form = form;
    this.api = api;
    this.created = created;
    this.session = session;
    this.notice = notice;
    this.pending = null;
    this.payload = form.querySelector('#job-payload');
    this.error = form.querySelector('#payload-error');
    this.status = form.querySelector('#submit-status');
    this.retry = form.querySelector('#retry-submit');
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.submitNew();
    });
    this.retry.addEventListener('click', () => this.send());
    // Editing the form makes the next submission a new job.
    form.addEventListener('input', () => {
      this.pending = null;
      this.retry.hidden = true;
      this.validate();
    });
  }

  /** The request body, or null (with the reason shown) if the form is not valid. */
  validate() {
    let payload;
    try {
      payload = JSON.parse(this.payload.value);
    } catch (error) {
      this.payload.setAttribute('aria-invalid', 'true');
      this.error.textContent = `The payload is not valid JSON: ${error.message}`;
      return null;
    }
    this.payload.removeAttribute('aria-invalid');
    this.error.textContent = '';
    const engine = this.form.querySelector('#job-engine').value;
    const kind = this.form.querySelector('#job-kind').value.trim();
    if (!engine || !kind) {
      this.error.textContent = 'Choose an engine and a kind.';
      return null;
    }
    const priority = Number.parseInt(this.form.querySelector('#job-priority').value || '0', 10);
    return { engine, kind, payload, priority: Number.isFinite(priority) ? priority : 0 };
  }

  submitNew() {
    const body = this.validate();
    if (!body) {
      this.payload.focus();
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
      // The job shows at once from the answer, whether or not its live `job.created` has arrived (or ever will, if
      // the live feed is down); a job the feed has already shown, perhaps further along, is left as it is.
      this.created?.(data);
    } catch (failure) {
      // Worth retrying with the same key: the job may or may not exist; the key makes sure there is one.
      const retryable = failure.network || failure.status === 429 || failure.status === 503 || failure.status >= 500;
      this.retry.hidden = !retryable;
      if (!retryable) this.pending = null;
      this.status.textContent = retryable ? 'Not submitted yet; retry keeps the same idempotency key.' : 'Not submitted.';
      if (failure.code === 'not_whitelisted') {
        failure.hint = `The engine's owner can let you in with: flowork-gateway engine allow ${body.engine} ${this.session.user}`;
      }
      this.notice.failure(failure);
    }
  }
}
