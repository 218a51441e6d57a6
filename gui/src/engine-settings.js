// An engine owner's settings, in its card: the whitelist (who may submit jobs), each user's weight (their share
// of the engine against others) and the concurrency limits (the default per key, and per key). Every change says
// at once that it is on its way, then what the gateway answered, its refusals in their own words.

import { isUserId } from './job-fields.js';

function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

/** A labelled input for a small inline form. */
function field(label, props) {
  const input = el('input', { autocomplete: 'off', spellcheck: false, ...props });
  return { input, label: el('label', {}, el('span', { textContent: label }), input) };
}

export class EngineSettings {
  constructor(engine, { api, session }) {
    this.engine = engine;
    this.api = api;
    this.session = session;
    this.path = `/engines/${encodeURIComponent(engine)}`;
    this.said = el('p', { className: 'hint said' });
    this.said.setAttribute('aria-live', 'polite');
    this.said.dataset.role = 'settings-said';

    this.users = el('ul', { className: 'plain users' });
    const allow = field('User id or 0x address', { name: 'user', placeholder: '0x…' });
    this.allowInput = allow.input;
    const allowForm = el('form', { className: 'inline', noValidate: true }, allow.label, el('button', { type: 'submit', textContent: 'Allow' }));
    allowForm.dataset.role = 'allow';
    allowForm.addEventListener('submit', (event) => {
      event.preventDefault();
      this.allow(allow.input.value.trim());
    });

    this.weights = el('ul', { className: 'plain' });
    const weightUser = field('User', { name: 'user', placeholder: '0x…' });
    const weightValue = field('Weight (1–1000)', { name: 'weight', type: 'number', min: 1, max: 1000, step: 1, value: 1 });
    const weightForm = el('form', { className: 'inline', noValidate: true }, weightUser.label, weightValue.label, el('button', { type: 'submit', textContent: 'Set weight' }));
    weightForm.dataset.role = 'weight';
    weightForm.addEventListener('submit', (event) => {
      event.preventDefault();
      this.setWeight(weightUser.input.value.trim(), weightValue.input.value.trim());
    });

    const defaultLimit = field('Default limit per key (empty: unlimited)', { name: 'default', type: 'number', min: 0, max: 1_000_000, step: 1 });
    this.defaultInput = defaultLimit.input;
    const defaultForm = el('form', { className: 'inline', noValidate: true }, defaultLimit.label, el('button', { type: 'submit', textContent: 'Save default' }));
    defaultForm.dataset.role = 'default-limit';
    defaultForm.addEventListener('submit', (event) => {
      event.preventDefault();
      this.setDefaultLimit(defaultLimit.input.value.trim());
    });
    this.keys = el('ul', { className: 'plain' });
    const keyName = field('Concurrency key', { name: 'key', placeholder: 'repo:acme/api' });
    const keyLimit = field('Limit', { name: 'limit', type: 'number', min: 0, max: 1_000_000, step: 1 });
    const keyForm = el('form', { className: 'inline', noValidate: true }, keyName.label, keyLimit.label, el('button', { type: 'submit', textContent: 'Set limit' }));
    keyForm.dataset.role = 'key-limit';
    keyForm.addEventListener('submit', (event) => {
      event.preventDefault();
      this.setKeyLimit(keyName.input.value.trim(), keyLimit.input.value.trim());
    });

    const part = (...children) => el('div', { className: 'settings-part' }, ...children);
    this.root = el(
      'details',
      { className: 'settings' },
      el('summary', { textContent: 'Manage: who may use it, shares, limits' }),
      el(
        'div',
        { className: 'settings-body' },
        part(el('h4', { textContent: 'Who may submit jobs' }), this.users, allowForm),
      part(
        el('h4', { textContent: 'Shares (weights)' }),
        el('p', { className: 'hint', textContent: 'Each user has weight 1 unless set: a user with weight 3 gets three times the share of one with 1 when both have jobs waiting.' }),
        this.weights,
        weightForm,
      ),
      part(
        el('h4', { textContent: 'Concurrency limits' }),
        el('p', { className: 'hint', textContent: 'At most this many jobs with the same concurrency key run at once.' }),
        defaultForm,
        this.keys,
          keyForm,
        ),
      ),
      this.said,
    );
    this.loaded = false;
    this.root.addEventListener('toggle', () => {
      if (this.root.open && !this.loaded) this.load();
    });
  }

  async load() {
    this.loaded = true;
    await this.act('Loading…', async () => {
      const [{ data: users }, { data: scheduling }] = await Promise.all([this.api.get(`${this.path}/users`), this.api.get(`${this.path}/scheduling`)]);
      this.showWhitelist(users);
      this.showScheduling(scheduling);
      return '';
    });
  }

  /** Runs one change: "working" at once, then what came of it (or the gateway's refusal). */
  async act(working, change) {
    this.said.textContent = working;
    delete this.said.dataset.outcome;
    for (const button of this.root.querySelectorAll('button')) button.disabled = true;
    try {
      this.said.textContent = await change();
      this.said.dataset.outcome = 'ok';
    } catch (failure) {
      this.said.textContent = `Not done: ${failure.message}`;
      this.said.dataset.outcome = 'refused';
    } finally {
      for (const button of this.root.querySelectorAll('button')) button.disabled = false;
    }
  }

  /** Shows the whitelist (`GET /engines/{id}/users`'s answer). */
  showWhitelist({ users }) {
    this.users.replaceChildren(
      ...users.map(({ user, owner }) => {
        const item = el('li', {}, el('code', { textContent: user }));
        item.dataset.user = user;
        if (owner) {
          item.append(' ', el('span', { className: 'hint', textContent: '(owner)' }));
        } else {
          const remove = el('button', { type: 'button', className: 'secondary small', textContent: 'Remove' });
          remove.setAttribute('aria-label', `Remove ${user}`);
          remove.addEventListener('click', () => this.disallow(user));
          item.append(' ', remove);
        }
        return item;
      }),
    );
  }

  /** Shows weights and limits (`GET /engines/{id}/scheduling`'s answer, also every change's). */
  showScheduling(settings) {
    const weights = Object.entries(settings.weights ?? {});
    this.weights.replaceChildren(
      ...(weights.length
        ? weights.map(([user, weight]) => {
            const item = el('li', {}, el('code', { textContent: user }), ` weight ${weight}`);
            item.dataset.user = user;
            item.dataset.weight = String(weight);
            return item;
          })
        : [el('li', { className: 'hint', textContent: `Everyone has the default weight (${settings.default_weight}).` })]),
    );
    this.defaultInput.value = settings.default_key_limit ?? '';
    this.defaultInput.dataset.saved = settings.default_key_limit === null ? 'unlimited' : String(settings.default_key_limit);
    this.keys.replaceChildren(
      ...settings.key_limits.map(({ key, limit, running }) => {
        const remove = el('button', { type: 'button', className: 'secondary small', textContent: 'Remove' });
        remove.setAttribute('aria-label', `Remove the limit of ${key}`);
        remove.addEventListener('click', () => this.removeKeyLimit(key));
        const item = el('li', {}, el('code', { textContent: key }), ` at most ${limit} at once (${running} running) `, remove);
        item.dataset.key = key;
        item.dataset.limit = String(limit);
        return item;
      }),
    );
  }

  allow(user) {
    if (!isUserId(user)) {
      this.said.textContent = 'A user id is a 0x address or a name of letters, digits, “.”, “_”, “@” and “-”.';
      return;
    }
    return this.act(`Allowing ${user}…`, async () => {
      const { data } = await this.api.put(`${this.path}/users/${encodeURIComponent(user)}`);
      this.showWhitelist(data);
      this.allowInput.value = '';
      return `${user} may now submit jobs to ${this.engine}.`;
    });
  }

  disallow(user) {
    return this.act(`Removing ${user}…`, async () => {
      const { data } = await this.api.delete(`${this.path}/users/${encodeURIComponent(user)}`);
      this.showWhitelist(data);
      return `${user} may no longer submit jobs to ${this.engine}; jobs already queued stay.`;
    });
  }

  setWeight(user, text) {
    if (!isUserId(user) || !/^\d+$/.test(text)) {
      this.said.textContent = 'Give a user id and a whole weight from 1 to 1000.';
      return;
    }
    return this.act(`Setting the weight of ${user}…`, async () => {
      const { data } = await this.api.put(`${this.path}/weights/${encodeURIComponent(user)}`, { weight: Number(text) });
      this.showScheduling(data);
      return `${user} now has weight ${text}.`;
    });
  }

  setDefaultLimit(text) {
    if (text !== '' && !/^\d+$/.test(text)) {
      this.said.textContent = 'The default limit is a whole number, or empty for unlimited.';
      return;
    }
    return this.act('Saving the default limit…', async () => {
      const { data } = await this.api.put(`${this.path}/concurrency`, { default_limit: text === '' ? null : Number(text) });
      this.showScheduling(data);
      return text === '' ? 'Keys without their own limit are now unlimited.' : `Keys without their own limit now run at most ${text} at once.`;
    });
  }

  setKeyLimit(key, text) {
    if (!key || !/^\d+$/.test(text)) {
      this.said.textContent = 'Give a concurrency key and a whole limit (0 stops the key\'s jobs).';
      return;
    }
    return this.act(`Setting the limit of ${key}…`, async () => {
      const { data } = await this.api.put(`${this.path}/concurrency/${encodeURIComponent(key)}`, { limit: Number(text) });
      this.showScheduling(data);
      return `Jobs with key ${key} now run at most ${text} at once.`;
    });
  }

  removeKeyLimit(key) {
    return this.act(`Removing the limit of ${key}…`, async () => {
      const { data } = await this.api.delete(`${this.path}/concurrency/${encodeURIComponent(key)}`);
      this.showScheduling(data);
      return `Key ${key} follows the default limit again.`;
    });
  }
}
