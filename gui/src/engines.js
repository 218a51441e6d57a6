// Engine cards: health, workers, busy ratio, queue depth and the capacity hint, from /status and live events.

export class EngineCards {
  /** `select`: the submit form's engine picker; `filter`: the jobs filter's (every engine, '' = any). */
  constructor(list, select, filter) {
    this.list = list;
    this.select = select;
    this.filter = filter;
    this.engines = new Map();
  }

  /** Replaces every card with `/status`'s engines. */
  load(engines) {
    this.engines = new Map(engines.map((engine) => [engine.id, engine]));
    this.render();
  }

  /** Applies one `engine.status` event. */
  update(engine) {
    this.engines.set(engine.id, { ...this.engines.get(engine.id), ...engine });
    this.render();
  }

  render() {
    const chosen = this.select.value;
    const cards = [];
    const options = [];
    for (const engine of this.engines.values()) {
      cards.push(card(engine));
      if (engine.active !== false && !engine.quarantined) {
        const option = document.createElement('option');
        option.value = engine.id;
        option.textContent = engine.id;
        options.push(option);
      }
    }
    this.list.replaceChildren(...cards);
    this.select.replaceChildren(...options);
    if (chosen && this.engines.has(chosen)) this.select.value = chosen;
    const filtered = this.filter.value;
    const any = document.createElement('option');
    any.value = '';
    any.textContent = 'any engine';
    this.filter.replaceChildren(
      any,
      ...[...this.engines.keys()].map((id) => Object.assign(document.createElement('option'), { value: id, textContent: id })),
    );
    this.filter.value = this.engines.has(filtered) ? filtered : '';
  }
}

function health(engine) {
  if (engine.quarantined) return ['quarantined', 'bad'];
  if (engine.active === false) return ['revoked', 'bad'];
  if (engine.paused) return ['paused', 'warn'];
  return engine.online ? ['online', 'good'] : ['offline', 'warn'];
}

function card(engine) {
  const item = document.createElement('li');
  item.className = 'engine';
  item.dataset.engineId = engine.id;
  const title = document.createElement('h3');
  title.textContent = engine.id;
  const [state, tone] = health(engine);
  const badge = document.createElement('span');
  badge.className = `health health-${tone}`;
  badge.textContent = state;
  title.append(' ', badge);
  const facts = document.createElement('dl');
  const busy = engine.busy_ratio === null || engine.busy_ratio === undefined ? '—' : `${Math.round(engine.busy_ratio * 100)} %`;
  const workers = engine.workers ? `${engine.workers.busy}/${engine.workers.current} busy (max ${engine.workers.max})` : '—';
  const rate = engine.capacity?.sustainable_rate_per_s;
  const hint = rate ? `drains ~${rate.toFixed(1)} jobs/s; queue clears in ~${engine.capacity.retry_after_s} s` : 'no drain rate measured yet';
  for (const [term, value] of [
    ['Workers', workers],
    ['Busy', busy],
    ['Queued', engine.queued ?? '—'],
    ['Running', engine.running ?? '—'],
    ['Capacity', hint],
  ]) {
    const dt = document.createElement('dt');
    dt.textContent = term;
    const dd = document.createElement('dd');
    dd.textContent = String(value);
    facts.append(dt, dd);
  }
  item.append(title, facts);
  return item;
}
