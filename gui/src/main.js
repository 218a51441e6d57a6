// Flowork's GUI: reads the runtime config, signs the user in, and wires the screens (jobs: form, batch upload,
// tabs, filters, table, bulk actions, job view; engines; schedules; operator), the live feed and the gateway's
// reachability; live changes are applied once per frame.

import { AdminTools } from './admin.js';
import { Api } from './api.js';
import { BatchUpload } from './batch-upload.js';
import { BulkActions } from './bulk.js';
import { StatusTabs } from './counts.js';
import { EngineDirectory } from './engines.js';
import { readFilter } from './filters.js';
import { FrameBatch } from './frame.js';
import { JobPage } from './job-list.js';
import { JobView } from './job-view.js';
import { JobStore, notStale } from './jobs.js';
import { Live } from './live.js';
import { Notice } from './notices.js';
import { Reachability } from './reach.js';
import { Schedules } from './schedules.js';
import { Screens } from './screens.js';
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
  const reach = new Reachability($('#reach'), { base: config.gateway, onBack: () => back() });
  api.reach = reach;

  const store = new JobStore();
  const engines = new EngineDirectory($('#engines'), {
    api,
    notice,
    session,
    pickers: [$('#job-engine'), $('#schedule-engine')],
    filter: $('#filter-engine'),
    elsewhere: $('#engines-elsewhere'),
  });
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
  // The job shows at once from the answer, whether or not its live `job.created` has arrived (or ever will, if the
  // live feed is down); a job the feed has already shown, perhaps further along, is left as it is.
  const created = (data) => batch.push({ event: 'job.created', data, guard: (known) => !known, counts: true });
  new SubmitForm($('#submit-form'), { api, notice, session, engines, created });
  new BatchUpload($('#batch-form'), { api, engines, created });
  const schedules = new Schedules({ form: $('#schedule-form'), table: $('#schedules'), empty: $('#schedules-empty'), api, notice, dialog });
  const drainBanner = $('#drain-banner');
  const showDrain = (draining) => {
    drainBanner.hidden = !draining;
  };
  const readDrain = async () => {
    const { data } = await api.get('/drain', { auth: false });
    showDrain(data.draining);
  };
  new AdminTools($('#app > [data-screen="admin"]'), { api, showDrain });
  const screens = new Screens($('#screens'), $('#app'), (name) => {
    if (name === 'schedules' && session.user) schedules.load();
  });

  /** Reads what the gateway says of itself and its engines (again, after it was away). */
  const loadGateway = async () => {
    try {
      const { data: status } = await api.get('/status', { auth: false });
      showDrain(status.draining);
      await engines.load(status.engines);
    } catch (failure) {
      notice.failure(failure);
    }
  };
  /** The gateway answers again: what it said while away is stale; read it afresh and reconnect. */
  const back = () => {
    notice.clear();
    session.revokeDiscarded();
    if (!session.user) return;
    loadGateway();
    live?.resume();
    if (screens.current === 'schedules') schedules.load();
  };

  const enter = async () => {
    $('#sign-in').hidden = true;
    $('#app').hidden = false;
    $('#sign-out').hidden = false;
    $('#screens').hidden = false;
    $('#who').textContent = `Signed in as ${session.user}`;
    screens.follow();
    if (live) return;
    loadGateway();
    if (screens.current === 'schedules') schedules.load();
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
        // A gateway that restarted says nothing about draining: ask. Connected at all means it is back.
        reach.reached();
        try {
          await readDrain();
        } catch {
          // the live state line says enough
        }
      },
      state: (text) => {
        // While the gateway is away the banner says why; the feed's own error would only say it again.
        $('#live-state').textContent = `Live updates: ${reach.down && text !== 'live' ? 'paused until the gateway is back' : text}`;
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
    $('#screens').hidden = true;
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
  // A click before this point would have gone nowhere.
  $('#sign-in-wallet').disabled = false;
  $('#sign-in-dev').disabled = false;

  // Signed in from before (this tab), or else a first call shows at once whether the gateway can be reached.
  if (!(await session.resume().catch(() => false))) api.get('/healthz', { auth: false }).catch(() => {});
}

start();
