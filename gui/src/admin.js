// The operator screen, for whoever pastes an admin token (`flowork-gateway admin token`): drain on and off, the
// audit log page by page (oldest first, as the gateway keeps it) and the check of its chain. The token stays in
// this page's memory only, and each tool shows only when its scope is in the token.

import { dateTime } from './format.js';

const AUDIT_PAGE = 50;

/** The claims of an admin token (`fwa_<JWT>.<checksum>`), or null when it is not one. */
export function adminClaims(token) {
  const match = /^fwa_([\w-]+)\.([\w-]+)\.([\w-]+)\.[0-9a-f]+$/.exec(token);
  if (!match) return null;
  try {
    const claims = JSON.parse(atob(match[2].replace(/-/g, '+').replace(/_/g, '/')));
    return { jti: claims.jti, exp: claims.exp, scopes: String(claims.scope ?? '').split(' ').filter(Boolean) };
  } catch {
    return null;
  }
}

export class AdminTools {
  /** `showDrain(draining)` updates the page's drain banner. */
  constructor(root, { api, showDrain }) {
    this.root = root;
    this.api = api;
    this.showDrain = showDrain;
    this.token = null;
    this.claims = null;
    this.cursor = null;
    this.page = 0;
    this.$ = (selector) => root.querySelector(selector);
    this.tokenInput = this.$('#admin-token');
    this.tokenState = this.$('#admin-token-state');
    this.$('#admin-form').addEventListener('submit', (event) => {
      event.preventDefault();
      this.use(this.tokenInput.value.trim());
    });
    this.$('#admin-forget').addEventListener('click', () => this.forget());
    this.$('#drain-start').addEventListener('click', () => this.drain(true));
    this.$('#drain-stop').addEventListener('click', () => this.drain(false));
    this.$('#audit-form').addEventListener('submit', (event) => {
      event.preventDefault();
      this.readAudit(true);
    });
    this.$('#audit-more').addEventListener('click', () => this.readAudit(false));
    this.$('#audit-verify').addEventListener('click', () => this.verify());
  }

  call(method, path) {
    return this.api.call(method, path, { token: this.token });
  }

  has(scope) {
    return Boolean(this.claims?.scopes.includes(scope));
  }

  use(token) {
    const claims = adminClaims(token);
    if (!claims) {
      this.tokenState.textContent = 'That is not an admin token: they start with fwa_ and come from flowork-gateway admin token.';
      this.tokenInput.setAttribute('aria-invalid', 'true');
      return;
    }
    this.tokenInput.removeAttribute('aria-invalid');
    if (claims.exp * 1000 <= Date.now()) {
      this.tokenState.textContent = `This admin token expired ${dateTime(new Date(claims.exp * 1000).toISOString())}; mint a new one.`;
      return;
    }
    this.token = token;
    this.claims = claims;
    this.tokenInput.value = '';
    this.tokenState.textContent = `Using admin token ${claims.jti.slice(0, 8)}… with ${claims.scopes.join(', ')}; it expires ${dateTime(new Date(claims.exp * 1000).toISOString())}.`;
    this.$('#admin-forget').hidden = false;
    this.$('#admin-tools').hidden = false;
    this.$('#drain-title').closest('section').hidden = !this.has('drain');
    this.$('#audit-title').closest('section').hidden = !this.has('audit:read');
    if (this.has('drain')) this.readDrain();
    if (this.has('audit:read')) this.readAudit(true);
  }

  forget() {
    this.token = null;
    this.claims = null;
    this.tokenState.textContent = 'The admin token is forgotten.';
    this.$('#admin-forget').hidden = true;
    this.$('#admin-tools').hidden = true;
    this.$('#audit tbody').replaceChildren();
    this.$('#audit-verdict').textContent = '';
  }

  /** A refusal of the token itself ends its use; others are said where the action was. */
  refused(failure, where) {
    where.textContent = `Refused: ${failure.message}`;
    if (failure.status === 401) {
      this.forget();
      this.tokenState.textContent = `The gateway refused the admin token (${failure.message}). Paste a new one.`;
    }
  }

  async readDrain() {
    try {
      const { data } = await this.api.get('/drain', { auth: false });
      this.drainState(data);
    } catch (failure) {
      this.$('#drain-status').textContent = `Could not read the drain state: ${failure.message}`;
    }
  }

  drainState({ draining, queued, running }) {
    const state = this.$('#drain-state');
    state.dataset.draining = String(draining);
    state.textContent = `${draining ? 'Draining: no new jobs are accepted.' : 'Accepting jobs.'} ${queued} queued and ${running} running on every engine.`;
    this.$('#drain-start').disabled = draining;
    this.$('#drain-stop').disabled = !draining;
    this.showDrain(draining);
  }

  async drain(start) {
    const status = this.$('#drain-status');
    status.textContent = start ? 'Starting to drain…' : 'Stopping the drain…';
    try {
      const { data } = await this.call(start ? 'POST' : 'DELETE', '/admin/drain');
      this.drainState(data);
      status.textContent = start ? 'Draining started.' : 'Draining stopped: the gateway accepts jobs again.';
    } catch (failure) {
      this.refused(failure, status);
    }
  }

  async readAudit(fromStart) {
    if (fromStart) {
      this.cursor = null;
      this.page = 0;
    }
    const since = this.$('#audit-since').value;
    const query = new URLSearchParams({ limit: String(AUDIT_PAGE) });
    if (since) query.set('since', since);
    if (this.cursor) query.set('cursor', this.cursor);
    const info = this.$('#audit-info');
    info.textContent = 'Reading…';
    try {
      const { data } = await this.call('GET', `/admin/audit?${query}`);
      this.page += 1;
      this.cursor = data.next_cursor;
      this.$('#audit tbody').replaceChildren(...data.entries.map(auditRow));
      const first = data.entries[0]?.id;
      const last = data.entries.at(-1)?.id;
      info.textContent = data.entries.length ? `Page ${this.page}: rows ${first}–${last}${this.cursor ? '' : ' (the latest)'}` : 'No entries in this time.';
      this.$('#audit-more').disabled = !this.cursor;
    } catch (failure) {
      this.refused(failure, info);
    }
  }

  async verify() {
    const verdict = this.$('#audit-verdict');
    verdict.textContent = 'Checking the chain…';
    delete verdict.dataset.intact;
    try {
      const { data } = await this.call('GET', '/admin/audit/verify');
      verdict.dataset.intact = String(data.intact);
      verdict.textContent = data.intact
        ? `Intact: ${data.rows} rows checked, ${data.signed} signed${data.head === null ? '' : `, head at row ${data.head}`}.`
        : `Broken at row ${data.broken_at}: ${data.reason} (${data.problems.length} problem${data.problems.length === 1 ? '' : 's'} in ${data.rows} rows).`;
    } catch (failure) {
      this.refused(failure, verdict);
    }
  }
}

function auditRow(entry) {
  const row = document.createElement('tr');
  row.dataset.auditId = String(entry.id);
  row.dataset.action = entry.action;
  for (const text of [entry.id, dateTime(entry.at), entry.actor, entry.action, entry.target ?? '', entry.outcome, entry.ip ?? '', entry.detail ?? '']) {
    const cell = document.createElement('td');
    cell.textContent = String(text);
    row.append(cell);
  }
  if (entry.outcome !== 'ok') row.className = 'refused';
  return row;
}
