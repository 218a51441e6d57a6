// The engines screen and the engine pickers: a card per engine the user may use (health, workers, busy share,
// queue, latency, capacity, breakers; live from engine.status), pause/resume and settings on the engines they own.
// The gateway has no "engines I may use" call: an engine counts as open to the user when they own it, the gateway
// sends them its live status (it does so only to users on its whitelist), or it took their job; one that refused a
// job with not_whitelisted is set aside.

import { EngineSettings } from './engine-settings.js';
import { dateTime } from './format.js';

/** What the user may do with an engine, best first. */
const ACCESS_ORDER = { owner: 0, allowed: 1, unknown: 2, refused: 3 };

export class EngineDirectory {
  /** `pickers`: the selects that choose an engine to submit to; `filter`: the jobs filter's (every engine). */
  constructor(list, { api, notice, session, pickers, filter, elsewhere, charts = null }) {
    this.list = list;
    this.api = api;
    this.notice = notice;
    this.session = session;
    this.pickers = pickers;
    this.filter = filter;
    this.elsewhere = elsewhere;
    this.charts = charts;
    this.engines = new Map();
    this.access = new Map();
    this.cards = new Map();
    this.listeners = new Set();
  }

  /** Replaces every engine with `/status`'s, and finds out which ones the user owns. */
  async load(engines) {
    this.engines = new Map(engines.map((engine) => [engine.id, engine]));
    for (const id of this.cards.keys()) if (!this.engines.has(id)) this.drop(id);
    this.render();
    await Promise.all(
      engines.filter((engine) => engine.active !== false && !engine.quarantined).map(async ({ id }) => {
        try {
          // Only the owner may read the whitelist: a 200 says the user owns the engine.
          const { data } = await this.api.get(`/engines/${encodeURIComponent(id)}/users`);
          this.grant(id, 'owner');
          this.cards.get(id)?.settings?.showWhitelist(data);
        } catch (failure) {
          if (failure.code !== 'not_owner' && !failure.network) this.notice.failure(failure);
          if (this.access.get(id) === 'owner') this.grant(id, 'unknown', true);
        }
      }),
    );
  }

  /** Applies one `engine.status` event: the gateway sends it only to users the engine is open to. */
  update(engine) {
    this.engines.set(engine.id, { ...this.engines.get(engine.id), ...engine });
    if (this.accessOf(engine.id) !== 'owner') this.access.set(engine.id, 'allowed');
    this.render();
  }

  /** The engine took a job of the user's. */
  usable(id) {
    if (this.accessOf(id) !== 'owner') this.grant(id, 'allowed');
  }

  /** The engine refused the user (not on its whitelist). */
  refused(id) {
    if (this.accessOf(id) !== 'owner') this.grant(id, 'refused', true);
  }

  accessOf(id) {
    return this.access.get(id) ?? 'unknown';
  }

  grant(id, access, force = false) {
    if (access === this.accessOf(id) || (!force && ACCESS_ORDER[access] > ACCESS_ORDER[this.accessOf(id)])) return;
    this.access.set(id, access);
    this.render();
  }

  /** Engines the user may submit to, best first (owned, open, not known yet), and those that refused them. */
  ranked() {
    const usable = [...this.engines.values()].filter((e) => e.active !== false && !e.quarantined);
    usable.sort((a, b) => ACCESS_ORDER[this.accessOf(a.id)] - ACCESS_ORDER[this.accessOf(b.id)] || a.id.localeCompare(b.id));
    return {
      open: usable.filter((e) => this.accessOf(e.id) !== 'refused'),
      refused: usable.filter((e) => this.accessOf(e.id) === 'refused'),
    };
  }

  /** Runs `listener()` after every render (the schedules form keeps its picker in step). */
  onChange(listener) {
    this.listeners.add(listener);
  }

  render() {
    const { open, refused } = this.ranked();
    for (const picker of this.pickers) fillPicker(picker, open, refused);
    const shown = [...this.engines.values()].filter((e) => e.active !== false && this.accessOf(e.id) !== 'refused');
    shown.sort((a, b) => ACCESS_ORDER[this.accessOf(a.id)] - ACCESS_ORDER[this.accessOf(b.id)] || a.id.localeCompare(b.id));
    for (const id of [...this.cards.keys()]) if (!shown.some((e) => e.id === id)) this.drop(id);
    const items = shown.map((engine) => this.card(engine));
    // Moving a card that is in place already would reset its focus and open panels: only move those out of order.
    items.forEach((item, index) => {
      if (this.list.children[index] !== item) this.list.insertBefore(item, this.list.children[index] ?? null);
    });
    this.elsewhere.hidden = refused.length === 0;
    this.elsewhere.textContent = refused.length
      ? `Not open to you: ${refused.map((e) => e.id).join(', ')}. Their owner can let you in with flowork-gateway engine allow ENGINE ${this.session.user}.`
      : '';
    const filtered = this.filter.value;
    const any = Object.assign(document.createElement('option'), { value: '', textContent: 'any engine' });
    this.filter.replaceChildren(any, ...[...this.engines.keys()].sort().map((id) => Object.assign(document.createElement('option'), { value: id, textContent: id })));
    this.filter.value = this.engines.has(filtered) ? filtered : '';
    for (const listener of this.listeners) listener();
  }

  drop(id) {
    const card = this.cards.get(id);
    if (!card) return;
    card.item.remove();
    this.charts?.forget(id);
    this.cards.delete(id);
  }

  /** The card of `engine`, made once and updated in place. */
  card(engine) {
    let card = this.cards.get(engine.id);
    if (!card) {
      card = makeCard(engine.id);
      this.cards.set(engine.id, card);
      card.pause.addEventListener('click', () => this.togglePause(engine.id));
    }
    const access = this.accessOf(engine.id);
    const [state, tone] = health(engine);
    card.health.className = `health health-${tone}`;
    card.health.textContent = state;
    card.item.dataset.health = state;
    card.role.textContent = access === 'owner' ? 'yours' : access === 'allowed' ? 'open to you' : '';
    card.role.hidden = !card.role.textContent;
    card.item.dataset.access = access;
    card.facts.replaceChildren(...facts(engine).flatMap(([term, value]) => [el('dt', term), el('dd', value)]));
    const owner = access === 'owner';
    card.pause.hidden = !owner || Boolean(engine.quarantined);
    if (!card.pause.disabled) card.pause.textContent = engine.paused ? 'Resume queue' : 'Pause queue';
    if (owner && !card.settings) {
      card.settings = new EngineSettings(engine.id, { api: this.api, session: this.session });
      card.item.append(card.settings.root);
    }
    if (!owner && card.settings) {
      card.settings.root.remove();
      card.settings = null;
    }
    if (this.charts && !card.chart) {
      card.chart = this.charts.attach(engine.id, card.item);
    }
    return card.item;
  }

  async togglePause(id) {
    const card = this.cards.get(id);
    const pausing = !this.engines.get(id)?.paused;
    card.pause.disabled = true;
    card.pause.textContent = pausing ? 'Pausing…' : 'Resuming…';
    card.said.textContent = '';
    try {
      const { data } = await this.api.post(`/engines/${encodeURIComponent(id)}/${pausing ? 'pause' : 'resume'}`);
      this.engines.set(id, { ...this.engines.get(id), paused: data.paused });
      card.said.textContent = data.paused
        ? 'Paused: the engine is handed no jobs until you resume it; new jobs are still accepted.'
        : 'Resumed: the engine takes jobs again.';
    } catch (failure) {
      card.said.textContent = `Not ${pausing ? 'paused' : 'resumed'}: ${failure.message}`;
    } finally {
      card.pause.disabled = false;
      this.render();
    }
  }
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  node.textContent = text;
  if (className) node.className = className;
  return node;
}

function makeCard(id) {
  const item = el('li', '', 'engine');
  item.dataset.engineId = id;
  const title = el('h3', id);
  const health = el('span', '');
  const role = el('span', '', 'role');
  title.append(' ', health, ' ', role);
  const facts = document.createElement('dl');
  const pause = el('button', 'Pause queue', 'secondary pause');
  pause.type = 'button';
  pause.hidden = true;
  const said = el('p', '', 'hint said');
  said.setAttribute('aria-live', 'polite');
  item.append(title, facts, pause, said);
  return { item, health, role, facts, pause, said, settings: null, chart: null };
}

function fillPicker(select, open, refused) {
  const chosen = select.value;
  const option = (engine) => Object.assign(document.createElement('option'), { value: engine.id, textContent: engine.id });
  const children = open.map(option);
  if (refused.length > 0) {
    const group = Object.assign(document.createElement('optgroup'), { label: 'Refused you before' });
    group.append(...refused.map(option));
    children.push(group);
  }
  select.replaceChildren(...children);
  // Keep the user's choice; else the best engine (owned or open to them).
  if (chosen && [...open, ...refused].some((e) => e.id === chosen)) select.value = chosen;
  else if (open.length > 0) select.value = open[0].id;
}

function health(engine) {
  if (engine.quarantined) return ['quarantined', 'bad'];
  if (engine.active === false) return ['revoked', 'bad'];
  if (engine.paused) return ['paused', 'warn'];
  return engine.online ? ['online', 'good'] : ['offline', 'warn'];
}

const percent = (ratio) => (ratio === null || ratio === undefined ? '—' : `${Math.round(ratio * 100)} %`);
const ms = (value) => (value === null || value === undefined ? '—' : value < 1000 ? `${value} ms` : `${(value / 1000).toFixed(1)} s`);

/** The figures of an engine's card, as the gateway reports them. */
function facts(engine) {
  if (engine.quarantined) return [['State', 'its data was set aside as damaged; ask the operator']];
  const w = engine.workers;
  const stale = engine.online ? '' : ' (last report)';
  const workers = w ? `${w.busy} busy of ${w.current} (scales ${w.min}–${w.max})${stale}` : 'no report yet';
  const rate = engine.capacity?.sustainable_rate_per_s;
  const capacity = rate ? `finishes ~${rate.toFixed(1)} jobs/s` : 'no finishing rate measured yet';
  const latency = engine.queue_latency_ms ?? {};
  const open = (engine.breakers ?? []).map((b) => `${b.kind} ${b.state.replace('_', '-')}${b.scope === 'user' ? ' (one user)' : ''}`);
  return [
    ['Workers', workers],
    ['Busy now', `${percent(engine.busy_ratio)}${w ? stale : ''}`],
    ['Utilization', percent(engine.utilization)],
    ['Queued', String(engine.queued ?? '—')],
    ['Running', String(engine.running ?? '—')],
    ['Queue wait', latency.p50 === null || latency.p50 === undefined ? '—' : `p50 ${ms(latency.p50)}, p95 ${ms(latency.p95)}`],
    ['Capacity', capacity],
    ['Last contact', engine.last_contact ? dateTime(engine.last_contact) : 'never (since this gateway started)'],
    ['Breakers', open.length ? open.join(', ') : 'none open'],
  ];
}
