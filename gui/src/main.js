// Flowork's GUI: reads the runtime config, signs the user in, and wires the job form, the jobs screen (tabs,
// filters, table, bulk actions), the job view and the live feed; live changes are applied once per frame.

import { Api } from './api.js';
import { BulkActions } from './bulk.js';
import { StatusTabs } from './counts.js';
import { EngineCards } from './engines.js';
import { readFilter } from './filters.js';
import { FrameBatch } from './frame.js';
import { JobPage } from './job-list.js';
import { JobView } from './job-view.js';
import { JobStore, notStale } from './jobs.js';
import { Live } from './live.js';
import { Notice } from './notices.js';
import { Session, browserWalletSigner, developmentSigner } from './session.js';
import { SubmitForm } from './submit.js';

const $ = (selector) => document.querySelector(selector);

/** The runtime config (`config.json` beside the page): the gateway URL ('' = this origin) and the chain id. */
async function loadConfig() {
  const response = await fetch('./config.json', { cache: 'no-cache' });
  if (!response.ok) throw new Error(`config.json: ${response.status}`);
  const config = await response.json();
  return { gateway: String(config.gateway ?? ''), chainId: Number(config.chainId ?? 1) };
}

async function start() {
  const notice = new Notice($('#notice'));
  let config;
  try {
    config = await loadConfig();
  } catch (error) {
    notice.message(`The GUI's config.json could not be read (${error.message}).`);
    return;
  }
  const session = new Session({ chainId: config.chainId });
  const api = new Api(config.gateway, session);
  session.api = api;

  const store = new JobStore();
  const engines = new EngineCards($('#engines'), $('#job-engine'), $('#filter-engine'));
  const filterForm = $('#filter-form');
  const dialog = $('#confirm');
  let view = null;
  const page = new JobPage($('#jobs'), {
    api,
    store,
    notice,
    onOpen: (id) => view.open(id),
    info: $('#page-info'),
    older: $('#page-older'),
    newer: $('#page-newer'),
    empty: $('#jobs-empty'),
  });
  const currentFilter = () => readFilter(filterForm, tabs.status);
  const showJobs = async () => {
    const { filter, error } = currentFilter();
    $('#filter-error').textContent = error ?? '';
    if (error) return;
    const size = Number($('#page-size').value);
    await Promise.all([tabs.load(filter.engine ?? ''), page.show(filter, size)]);
  };
  let live = null;
  const tabs = new StatusTabs($('#status-tabs'), { api, notice, onPick: showJobs, cursorNow: () => live?.cursorNow() ?? null });
  view = new JobView($('#job-view'), {
    api,
    store,
    notice,
    dialog,
    removed: (id, status) => {
      page.removeRows([id]);
      tabs.removed(status);
    },
    applyAnswer: (data, guard) => batch.push({ event: 'answer', data, guard, counts: true }),
  });
  new BulkActions($('#bulk'), dialog, {
    api,
    notice,
    page,
    tabs,
    store,
    currentFilter,
    done: () => Promise.all([tabs.load(), page.load()]),
  });
  filterForm.addEventListener('submit', (event) => {
    event.preventDefault();
    showJobs();
  });
  filterForm.addEventListener('reset', () => setTimeout(showJobs));
  $('#page-size').addEventListener('change', showJobs);

  // Every change (live event or an action's answer) goes through one batch, applied once per animation frame.
  const batch = new FrameBatch((items) => {
    const changes = [];
    const counted = [];
    const deleted = [];
    for (const { event, data, guard, counts } of items) {
      if (event === 'job.deleted') {
        deleted.push(data);
        continue;
      }
      const change = store.apply(event, data, guard);
      if (!change) continue;
      changes.push(change);
      if (counts) counted.push(change);
    }
    tabs.apply(counted);
    page.apply(changes);
    view.apply(changes);
    if (deleted.length > 0) removeDeleted(deleted);
  });
  // A deletion this page did not make (another tab, a script): off the page, out of the counts.
  const removeDeleted = (jobs) => {
    for (const { id } of jobs) {
      const status = store.forget(id);
      if (status) tabs.removed(status);
      else tabs.reconcileSoon();
    }
    page.removeRows(jobs.map((job) => job.id));
  };
  new SubmitForm($('#submit-form'), {
    api,
    notice,
    session,
    // The job shows at once from the answer, whether or not its live `job.created` has arrived (or ever will, if
    // the live feed is down); a job the feed has already shown, perhaps further along, is left as it is.
    created: (data) => batch.push({ event: 'job.created', data, guard: (known) => !known, counts: true }),
  });
  const drainBanner = $('#drain-banner');
  const showDrain = (draining) => {
    drainBanner.hidden = !draining;
  };
  const readDrain = async () => {
    const { data } = await api.get('/drain', { auth: false });
    showDrain(data.draining);
  };

  const enter = async () => {
    $('#sign-in').hidden = true;
    $('#app').hidden = false;
    $('#sign-out').hidden = false;
    $('#who').textContent = `Signed in as ${session.user}`;
    try {
      const [{ data: status }] = await Promise.all([api.get('/status', { auth: false }), readDrain()]);
      engines.load(status.engines);
    } catch (failure) {
      notice.failure(failure);
    }
    live = new Live(config.gateway, session, {
      // Live events and lost ones found again come with cursors that order them per job; a replay over a fresh
      // list must not move a job the list shows finished back.
      job: (event, data, mode) =>
        batch.push({ event, data, guard: mode === 'live' || mode === 'missed' ? null : notStale, counts: mode !== 'reloaded' }),
      // Events were lost on the way and found again: counts read once things are quiet are exact again.
      lost: () => tabs.reconcileSoon(),
      engine: (data) => engines.update(data),
      drain: showDrain,
      reload: async () => {
        await showJobs();
        // Events replayed over these counts may be in them already: read them again once things settle.
        tabs.reconcileSoon();
      },
      connected: async () => {
        // A gateway that restarted says nothing about draining: ask, and drop a notice of it being unreachable.
        if ($('#notice').dataset.status === '0') notice.clear();
        try {
          await readDrain();
        } catch {
          // the live state line says enough
        }
      },
      state: (text) => {
        $('#live-state').textContent = `Live updates: ${text}`;
      },
    });
  };
  const leave = () => {
    if (session.ended) {
      notice.message(`Your session has ended (${session.ended.code}: ${session.ended.message}). Sign in again.`);
    }
    live?.close();
    live = null;
    tabs.stop();
    page.render([]);
    $('#sign-in').hidden = false;
    $('#app').hidden = true;
    $('#sign-out').hidden = true;
    $('#who').textContent = '';
  };
  session.onChange((user) => (user ? enter() : leave()));

  const signInWith = async (getSigner) => {
    notice.clear();
    try {
      await session.signIn(await getSigner(), (message) => {
        $('#signed-message').textContent = message;
        $('#message-details').hidden = false;
      });
    } catch (error) {
      if (error.status !== undefined) notice.failure(error);
      else notice.message(`Sign-in failed: ${error.shortMessage ?? error.message}`);
    }
  };
  $('#sign-in-dev').addEventListener('click', () => signInWith(async () => developmentSigner()));
  $('#sign-in-wallet').addEventListener('click', () => signInWith(browserWalletSigner));
  $('#sign-out').addEventListener('click', () => session.signOut());
  if (!window.ethereum) $('#sign-in-wallet').title = 'No browser wallet found on this page';

  await session.resume();
}

start();
