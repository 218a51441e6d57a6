// Flowork's GUI: reads the runtime config, signs the user in, and wires the job form, table, view and live feed.

import { Api } from './api.js';
import { EngineCards } from './engines.js';
import { JobView } from './job-view.js';
import { JobTable } from './jobs.js';
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

  const engines = new EngineCards($('#engines'), $('#job-engine'));
  let view = null;
  const table = new JobTable($('#jobs'), $('#jobs-empty'), (id) => view.open(id));
  view = new JobView($('#job-view'), { api, table, notice });
  new SubmitForm($('#submit-form'), { api, notice, session, table });
  const drainBanner = $('#drain-banner');
  const showDrain = (draining) => {
    drainBanner.hidden = !draining;
  };

  let live = null;
  const reloadJobs = async () => {
    const { data } = await api.get('/jobs?limit=100');
    table.load(data.jobs);
  };
  const enter = async () => {
    $('#sign-in').hidden = true;
    $('#app').hidden = false;
    $('#sign-out').hidden = false;
    $('#who').textContent = `Signed in as ${session.user}`;
    try {
      const [{ data: status }, { data: drain }] = await Promise.all([api.get('/status', { auth: false }), api.get('/drain', { auth: false })]);
      engines.load(status.engines);
      showDrain(drain.draining);
    } catch (failure) {
      notice.failure(failure);
    }
    live = new Live(config.gateway, session, {
      job: (event, data) => table.apply(event, data),
      engine: (data) => engines.update(data),
      drain: showDrain,
      reload: reloadJobs,
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
    table.load([]);
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
