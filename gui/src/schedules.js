// The schedules screen: the user's cron schedules (list, create, delete) and, while an expression is typed, its
// next five runs computed in the browser with croner, the JavaScript original of the Rust crate the gateway
// parses with, held to the same dialect (5 fields, 6 with seconds first, or a nickname).

import { Cron } from 'croner';
import { confirmAction } from './confirm.js';
import { dateTime } from './format.js';
import { jobProblems } from './job-fields.js';

const PREVIEW_RUNS = 5;
const ZONES = typeof Intl.supportedValuesOf === 'function' ? Intl.supportedValuesOf('timeZone') : [];

/** The next `n` runs of `expression` in `timezone`, or `{error}` saying why there are none. */
export function nextRuns(expression, timezone, n = PREVIEW_RUNS, from = new Date()) {
  const text = expression.trim();
  const fields = text.split(/\s+/).filter(Boolean).length;
  if (!text.startsWith('@') && (fields < 5 || fields > 6)) {
    return { error: `it has ${fields} field${fields === 1 ? '' : 's'}; use 5 (minute hour day-of-month month day-of-week), 6 with seconds first, or @hourly, @daily, @weekly, @monthly, @yearly` };
  }
  if (text.startsWith('@') && !/^@(hourly|daily|weekly|monthly|yearly|annually)$/.test(text)) {
    return { error: `${text} is not one of @hourly, @daily, @weekly, @monthly, @yearly, @annually` };
  }
  try {
    const cron = new Cron(text, { timezone: timezone || 'UTC', paused: true });
    const runs = cron.nextRuns(n, from);
    if (runs.length === 0) return { error: 'it never fires' };
    return { runs };
  } catch (error) {
    const message = String(error.message).replace(/^Cron(Pattern|Date): /, '');
    if (/timezone/i.test(message)) return { error: `unknown time zone “${timezone}”: use an IANA name such as UTC or Europe/Berlin`, field: 'timezone' };
    return { error: message };
  }
}

function markInvalid(control, invalid) {
  if (invalid) control.setAttribute('aria-invalid', 'true');
  else control.removeAttribute('aria-invalid');
}

export class Schedules {
  constructor({ form, table, empty, api, notice, dialog }) {
    this.form = form;
    this.body = table.querySelector('tbody');
    this.empty = empty;
    this.api = api;
    this.notice = notice;
    this.dialog = dialog;
    this.preview = form.querySelector('#cron-preview');
    this.errors = form.querySelector('#schedule-error');
    this.status = form.querySelector('#schedule-status');
    this.cron = form.elements.cron;
    this.zone = form.elements.timezone;
    this.zone.value = Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
    form.querySelector('#timezones').append(...ZONES.map((zone) => Object.assign(document.createElement('option'), { value: zone })));
    form.addEventListener('input', () => this.showPreview());
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.create();
    });
    this.showPreview();
  }

  /** The form as a `POST /schedules` body and its problems. */
  read() {
    const value = (name) => this.form.elements[name].value.trim();
    const problems = [];
    const body = { engine: value('engine'), kind: value('kind'), cron: value('cron'), timezone: value('timezone') || 'UTC', missed: value('missed') };
    if (!body.engine) problems.push('Engine: choose an engine');
    if (value('payload')) {
      try {
        body.payload = JSON.parse(value('payload'));
      } catch (error) {
        problems.push(`Payload: not valid JSON: ${error.message}`);
      }
    }
    for (const [field, message] of jobProblems({ engine: body.engine || 'x', kind: body.kind })) problems.push(`${field === 'kind' ? 'Kind' : 'Engine'}: ${message}`);
    const preview = nextRuns(body.cron, body.timezone);
    if (preview.error) problems.push(`${preview.field === 'timezone' ? 'Time zone' : 'Cron'}: ${preview.error}`);
    return { body, problems, preview };
  }

  showPreview() {
    const { preview } = this.read();
    markInvalid(this.cron, Boolean(preview.error) && preview.field !== 'timezone');
    markInvalid(this.zone, preview.field === 'timezone');
    if (preview.error) {
      this.preview.replaceChildren(Object.assign(document.createElement('li'), { className: 'field-error', textContent: `No runs: ${preview.error}` }));
      this.preview.dataset.state = 'invalid';
      return;
    }
    const zone = this.zone.value.trim() || 'UTC';
    const local = Intl.DateTimeFormat().resolvedOptions().timeZone;
    const inZone = new Intl.DateTimeFormat(undefined, { timeZone: zone, weekday: 'short', day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit', second: '2-digit' });
    this.preview.replaceChildren(
      ...preview.runs.map((run) => {
        const item = document.createElement('li');
        item.dataset.at = run.toISOString();
        item.textContent = zone === local ? inZone.format(run) : `${inZone.format(run)} ${zone} (${dateTime(run.toISOString())} your time)`;
        return item;
      }),
    );
    this.preview.dataset.state = 'ok';
  }

  async load() {
    try {
      const { data } = await this.api.get('/schedules');
      this.render(data.schedules);
    } catch (failure) {
      this.notice.failure(failure);
    }
  }

  render(schedules) {
    this.empty.hidden = schedules.length > 0;
    this.body.replaceChildren(...schedules.map((schedule) => this.row(schedule)));
  }

  row(schedule) {
    const row = document.createElement('tr');
    row.dataset.scheduleId = schedule.id;
    const cell = (text, title) => {
      const td = document.createElement('td');
      td.textContent = text;
      if (title) td.title = title;
      return td;
    };
    const cron = cell('');
    cron.append(Object.assign(document.createElement('code'), { textContent: schedule.cron }), ` ${schedule.timezone}`);
    const last = schedule.last_error ? `failed: ${schedule.last_error}` : schedule.last_run_at ? dateTime(schedule.last_run_at) : 'not yet';
    const remove = Object.assign(document.createElement('button'), { type: 'button', className: 'danger small', textContent: 'Delete' });
    remove.setAttribute('aria-label', `Delete the schedule ${schedule.cron} of ${schedule.kind} on ${schedule.engine}`);
    remove.addEventListener('click', () => this.remove(schedule));
    const actions = cell('');
    actions.append(remove);
    row.append(cron, cell(schedule.engine), cell(schedule.kind), cell(schedule.next_run_at ? dateTime(schedule.next_run_at) : 'never'), cell(last), actions);
    return row;
  }

  async create() {
    const { body, problems } = this.read();
    this.errors.replaceChildren(...problems.map((text) => Object.assign(document.createElement('li'), { textContent: text })));
    if (problems.length > 0) return;
    this.status.textContent = 'Creating…';
    try {
      const { data } = await this.api.post('/schedules', body);
      this.status.textContent = `Created: the first run is ${dateTime(data.next_run_at)}.`;
      await this.load();
    } catch (failure) {
      // The gateway's own refusal (its cron dialect, the zone, the whitelist), in its words.
      this.status.textContent = '';
      this.errors.replaceChildren(Object.assign(document.createElement('li'), { textContent: `Not created: ${failure.message}` }));
    }
  }

  async remove(schedule) {
    const ok = await confirmAction(this.dialog, `Delete the schedule “${schedule.cron}” (${schedule.kind} on ${schedule.engine})? Jobs it already submitted stay.`, 'Delete schedule');
    if (!ok) return;
    try {
      await this.api.delete(`/schedules/${encodeURIComponent(schedule.id)}`);
      this.status.textContent = `Deleted the schedule “${schedule.cron}”.`;
    } catch (failure) {
      this.notice.failure(failure);
    }
    await this.load();
  }
}
