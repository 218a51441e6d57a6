// The jobs dashboard in a real Chromium against the real gateway and engine: a dead job retried from its view
// with every attempt shown, cancel and delete with immediate feedback, filters and paging reaching an old job,
// bulk cancel by filter and bulk delete of 1,000 selected jobs with their confirmation, and a burst of thousands
// of jobs with the page open (long tasks measured in the browser; every job reached, final, in the counts).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { browserSuite, shot } from './browser.js';
import { createJobs, eventually } from './harness.js';

const { dashboard } = browserSuite();

const tabCount = (page, status) => page.getAttribute(`#status-tabs [data-status="${status}"]`, 'data-count').then(Number);
const rowStatus = (page, id) => page.getAttribute(`#jobs tr[data-job-id="${id}"] .status`, 'data-status').catch(() => null);

async function waitTab(page, status, n, timeout = 60_000) {
  try {
    await page.waitForSelector(`#status-tabs [data-status="${status}"][data-count="${n}"]`, { timeout });
  } catch (error) {
    const state = await page.evaluate(() => `${document.querySelector('#status-tabs').textContent}; ${document.querySelector('#live-state').textContent}; ${document.querySelector('#notice').textContent}`);
    throw new Error(`the ${status} tab never read ${n} (${state}): ${error.message}`);
  }
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
  // The sleep handler reports progress; it shows as a bar.
  await page.waitForSelector('#job-progress:not([hidden])', { timeout: 60_000 });
  const percent = await page.$eval('#job-progress progress', (bar) => bar.value);
  assert.ok(percent > 0 && percent < 100, `progress ${percent}`);
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
  // The job is gone: off the table and out of the counts, and the view says so.
  await page.waitForSelector(`#jobs tr[data-job-id="${job.id}"]`, { state: 'detached' });
  await waitTab(page, 'dead', 0);
  assert.equal(await page.textContent('#job-view-status'), 'deleted');
  assert.equal(await page.isVisible('#job-retry'), false);
  await shot(page, '12-refused');
  assert.deepEqual(page.problems, []);
});

test('filters and paging reach an old job: older/newer pages, kind, enqueue time and id prefix', async () => {
  const { page, api, token, gateway } = await dashboard();
  // No engine runs: every job stays queued. One old job, then (in a later second) 120 newer ones.
  const { body: old } = await api('POST', '/jobs', { engine: 'local', kind: 'sleep', payload: { ms: 1 } });
  const oldAt = new Date(old.enqueued_at).getTime();
  await new Promise((resolve) => setTimeout(resolve, 1_000 - (Date.now() % 1_000) + 50 + Math.max(0, oldAt + 1_000 - Date.now())));
  await createJobs(gateway.base, token, 120, { engine: 'local', kind: 'echo', payload: {} }, 'newer');
  await waitTab(page, 'queued', 121);
  await page.selectOption('#page-size', '25');
  await page.waitForFunction(() => document.querySelectorAll('#jobs tbody tr').length === 25);
  // The old job is on the fifth page of 25, the last one.
  for (let n = 2; n <= 5; n += 1) {
    await page.click('#page-older');
    await page.waitForFunction((text) => document.querySelector('#page-info').textContent.startsWith(text), `Page ${n}`);
  }
  await page.waitForSelector(`#jobs tr[data-job-id="${old.id}"]`);
  assert.equal(await page.$$eval('#jobs tbody tr', (rows) => rows.length), 21);
  // The oldest queued job is next in line.
  await page.click(`#jobs tr[data-job-id="${old.id}"] button.link`);
  await eventually('its queue position', async () => /Queue position\s*0/.test(await page.textContent('#job-fields')));
  await page.click('#job-close');
  assert.equal(await page.isDisabled('#page-older'), true, 'nothing older');
  await shot(page, '13-last-page');
  await page.click('#page-newer');
  await page.waitForFunction(() => document.querySelector('#page-info').textContent.startsWith('Page 4'));
  await page.waitForSelector(`#jobs tr[data-job-id="${old.id}"]`, { state: 'detached' });

  const onlyRows = async (ids) =>
    eventually(`exactly ${ids}`, async () => {
      const shown = await page.$$eval('#jobs tbody tr', (rows) => rows.map((row) => row.dataset.jobId));
      return JSON.stringify(shown) === JSON.stringify(ids);
    });
  // By kind.
  await page.fill('#filter-kind', 'sleep');
  await page.click('#filter-apply');
  await onlyRows([old.id]);
  assert.match(await page.textContent('#page-info'), /^Page 1/);
  // By enqueue time: before the second the newer jobs began.
  await page.click('#filter-reset');
  const before = await page.evaluate((ms) => {
    const date = new Date(Math.floor(ms / 1000) * 1000 + 1000);
    const pad = (n) => String(n).padStart(2, '0');
    return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
  }, oldAt);
  await page.fill('#filter-before', before);
  await page.click('#filter-apply');
  await onlyRows([old.id]);
  await page.click('#filter-reset');
  await page.fill('#filter-after', before);
  await page.click('#filter-apply');
  await eventually('only newer jobs', async () => {
    const shown = await page.$$eval('#jobs tbody tr', (rows) => rows.map((row) => row.dataset.jobId));
    return shown.length === 25 && !shown.includes(old.id);
  });
  // By id prefix, typed in capitals.
  await page.click('#filter-reset');
  await page.fill('#filter-id', old.id.slice(0, 30).toUpperCase());
  await page.click('#filter-apply');
  await onlyRows([old.id]);
  await page.fill('#filter-id', 'xyz');
  await page.click('#filter-apply');
  assert.match(await page.textContent('#filter-error'), /hex digits/);
  await shot(page, '14-filtered');
  // The queued tab lists them; the dead tab none.
  await page.click('#filter-reset');
  await page.click('#status-tabs [data-status="dead"]');
  await onlyRows([]);
  assert.equal(await page.isVisible('#jobs-empty'), true);
  await page.click('#status-tabs [data-status="queued"]');
  await eventually('a page of queued jobs', async () => (await page.$$('#jobs tbody tr')).length === 25);
  assert.deepEqual(page.problems, []);
});

test('bulk: cancel every job matching the filter, then delete 1,000 selected jobs, each after a confirmation', async () => {
  const { page, gateway, token, api } = await dashboard();
  await createJobs(gateway.base, token, 1000, { engine: 'local', kind: 'echo', payload: {} }, 'bulk');
  await waitTab(page, 'queued', 1000);
  // Cancel by filter: every queued job of kind echo.
  await page.click('#status-tabs [data-status="queued"]');
  await page.fill('#filter-kind', 'echo');
  await page.click('#filter-apply');
  await page.selectOption('#bulk-scope', 'filter');
  await page.click('#bulk button[data-action="cancel"]');
  await page.waitForSelector('#confirm[open]');
  assert.match(await page.textContent('#confirm-text'), /^Cancel 1,000 jobs matching: status queued, kind echo\?/);
  await shot(page, '15-confirm-cancel-by-filter', { fullPage: false });
  await page.click('#confirm-ok');
  await waitTab(page, 'cancelled', 1000, 120_000);
  await waitTab(page, 'queued', 0);
  assert.match(await page.textContent('#bulk-status'), /1,000 of 1,000 matched jobs changed/);

  // Delete by selection: two pages of 500 on the cancelled tab, each selected whole.
  await page.click('#filter-reset');
  await page.selectOption('#bulk-scope', 'selected');
  await page.selectOption('#page-size', '500');
  await page.click('#status-tabs [data-status="cancelled"]');
  await page.waitForFunction(() => document.querySelectorAll('#jobs tbody tr.row-cancelled').length === 500, null, { timeout: 60_000 });
  await page.check('#pick-page');
  await page.click('#page-older');
  await page.waitForFunction(() => document.querySelector('#page-info').textContent.startsWith('Page 2'));
  await page.waitForFunction(() => document.querySelectorAll('#jobs tbody tr').length === 500, null, { timeout: 60_000 });
  await page.check('#pick-page');
  assert.equal(await page.textContent('#bulk-summary'), '1,000 selected');
  await page.click('#bulk button[data-action="delete"]');
  await page.waitForSelector('#confirm[open]');
  assert.match(await page.textContent('#confirm-text'), /^Delete 1,000 selected jobs\? Deleted jobs and their history are gone for good\./);
  await shot(page, '16-confirm-delete', { fullPage: false });
  // "Go back" deletes nothing.
  await page.click('#confirm-cancel');
  assert.equal(await tabCount(page, 'cancelled'), 1000);
  await page.click('#bulk button[data-action="delete"]');
  await page.click('#confirm-ok');
  await waitTab(page, 'cancelled', 0, 120_000);
  await page.waitForFunction(() => document.querySelectorAll('#jobs tbody tr').length === 0);
  assert.match(await page.textContent('#bulk-status'), /1,000 of 1,000 matched jobs changed/);
  assert.deepEqual((await api('GET', '/jobs/counts')).body, { queued: 0, running: 0, succeeded: 0, dead: 0, cancelled: 0 });
  await shot(page, '17-after-bulk-delete', { fullPage: false });
  assert.deepEqual(page.problems, []);
});

test('a burst of 5,000 jobs with the page open: no long stalls, a bounded table, every job reached in its final state', async () => {
  const { page, gateway, token, api } = await dashboard({ workers: 4 });
  const total = Number(process.env.FLOWORK_GUI_BURST ?? 5_000);
  // Long tasks (the main thread busy for more than 50 ms at a stretch) and the most rows the table ever held.
  await page.evaluate(() => {
    window.longTasks = [];
    new PerformanceObserver((list) => {
      for (const entry of list.getEntries()) window.longTasks.push(entry.duration);
    }).observe({ type: 'longtask', buffered: false });
    window.mostRows = 0;
    const body = document.querySelector('#jobs tbody');
    new MutationObserver(() => {
      window.mostRows = Math.max(window.mostRows, body.rows.length);
    }).observe(body, { childList: true });
  });
  const started = Date.now();
  await Promise.all(
    Array.from({ length: total / 1000 }, (_, i) => createJobs(gateway.base, token, 1000, { engine: 'local', kind: 'echo', payload: { i } }, `burst-${i}`)),
  );
  // What the engine has not run yet is cancelled in bulk: thousands more events, and every job ends final soon.
  const cancel = await api('POST', '/jobs/bulk', { action: 'cancel', filter: { status: 'queued' } });
  assert.equal(cancel.status, 200);
  const truth = await eventually(
    'every job final on the gateway',
    async () => {
      const { body } = await api('GET', '/jobs/counts');
      return body.queued === 0 && body.running === 0 && body;
    },
    180_000,
  );
  assert.equal(truth.succeeded + truth.cancelled + truth.dead, total);
  try {
    for (const status of ['succeeded', 'cancelled', 'dead', 'queued', 'running']) await waitTab(page, status, truth[status], 60_000);
  } catch (error) {
    console.log(gateway.log.split('\n').filter((line) => /WARN|ERROR/.test(line)).slice(0, 5).join('\n'));
    throw error;
  }
  await waitTab(page, '', total);
  const burstMs = Date.now() - started;
  await page.evaluate(() => document.querySelector('#status-tabs').scrollIntoView());
  await shot(page, '18-after-burst', { fullPage: false });
  const { longTasks, mostRows } = await page.evaluate(() => ({ longTasks: window.longTasks, mostRows: window.mostRows }));
  const longest = Math.max(0, ...longTasks);
  const busy = longTasks.reduce((sum, ms) => sum + ms, 0);
  console.log(
    `burst of ${total}: ${truth.succeeded} succeeded, ${truth.cancelled} cancelled, shown in ${burstMs} ms; ` +
      `${longTasks.length} long tasks, longest ${longest.toFixed(0)} ms, ${busy.toFixed(0)} ms in all; at most ${mostRows} rows`,
  );
  assert.ok(mostRows <= 50, `the table held ${mostRows} rows (page size 50)`);
  // The machine runs a debug gateway and engine beside the browser: a task can be stretched by them; the page's own
  // work per frame is a few ms, so no single stall of more than a quarter second and little stalling in all.
  assert.ok(longest < 250, `a long task of ${longest} ms`);
  assert.ok(busy < 2_000, `${busy} ms of long tasks`);

  // Every job is reachable, in its final state: page through them all, 500 at a time.
  await page.selectOption('#page-size', '500');
  await page.waitForFunction(() => document.querySelectorAll('#jobs tbody tr').length === 500, null, { timeout: 60_000 });
  const seen = new Map();
  for (let n = 1; ; n += 1) {
    await page.waitForFunction((text) => document.querySelector('#page-info').textContent.startsWith(text), `Page ${n}`);
    await page.waitForFunction(() => document.querySelectorAll('#jobs tbody tr').length > 0);
    for (const [id, status] of await page.$$eval('#jobs tbody tr', (rows) => rows.map((row) => [row.dataset.jobId, row.querySelector('.status').dataset.status]))) {
      seen.set(id, status);
    }
    if (await page.isDisabled('#page-older')) break;
    await page.click('#page-older');
  }
  assert.equal(seen.size, total, 'every job was reached');
  const shown = { succeeded: 0, cancelled: 0, dead: 0 };
  for (const status of seen.values()) shown[status] += 1;
  assert.deepEqual(shown, { succeeded: truth.succeeded, cancelled: truth.cancelled, dead: truth.dead });
  assert.deepEqual(page.problems, []);
});

test('the jobs screen at 390 px and in dark mode: nothing wider than the phone, dead and cancelled told apart', async () => {
  const { page, api } = await dashboard({ workers: 1, viewport: { width: 390, height: 844 }, colorScheme: 'dark' });
  const { body: dead } = await api('POST', '/jobs', { engine: 'local', kind: 'no-such-kind', payload: {}, max_attempts: 1 });
  const { body: slow } = await api('POST', '/jobs', { engine: 'local', kind: 'sleep', payload: { ms: 60_000 } });
  await api('POST', '/jobs', { engine: 'local', kind: 'echo', payload: { ok: true } });
  await eventually('the dead job', async () => (await rowStatus(page, dead.id)) === 'dead', 60_000);
  assert.equal((await api('POST', `/jobs/${slow.id}/cancel`)).status < 300, true);
  await eventually('the cancelled job', async () => (await rowStatus(page, slow.id)) === 'cancelled', 60_000);
  const look = (id) =>
    page.$eval(`#jobs tr[data-job-id="${id}"] .status`, (badge) => {
      const style = getComputedStyle(badge);
      return `${style.backgroundColor} ${style.color} ${style.borderStyle} ${badge.textContent}`;
    });
  assert.notEqual(await look(dead.id), await look(slow.id), 'dead and cancelled look different');
  assert.equal(await page.evaluate(() => matchMedia('(prefers-color-scheme: dark)').matches), true);
  const background = await page.evaluate(() => getComputedStyle(document.documentElement).backgroundColor);
  assert.equal(background, 'rgb(13, 17, 23)', 'the dark palette follows the system');
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  assert.ok(overflow <= 0, `the page is ${overflow}px wider than a phone`);
  assert.equal(await page.getAttribute('link[rel="icon"]', 'href'), './favicon.svg');
  assert.equal((await page.request.get(new URL('favicon.svg', page.url()).href)).status(), 200);
  await page.evaluate(() => document.querySelector('#status-tabs').scrollIntoView());
  await shot(page, '19-phone-dark-jobs', { fullPage: false });
  await page.click(`#jobs tr[data-job-id="${dead.id}"] button.link`);
  await page.waitForSelector('#job-attempts tbody tr');
  await page.locator('#job-view').scrollIntoViewIfNeeded();
  await shot(page, '20-phone-dark-job', { fullPage: false });
  assert.deepEqual(page.problems, []);
});

test('the drain banner clears when a restarted gateway comes back, and the page goes live again by itself', async () => {
  const { ws, gateway, page } = await dashboard();
  const admin = ws.cli('admin', 'token', '--scope', 'drain', '--ttl', '5m');
  const drained = await fetch(`${gateway.base}/admin/drain`, { method: 'POST', headers: { Authorization: `Bearer ${admin}` } });
  assert.equal(drained.status, 200);
  await page.waitForSelector('#drain-banner:not([hidden])');
  // The gateway dies without a word (no "not draining" event) and a new process starts on the same address.
  gateway.child.kill('SIGKILL');
  await page.waitForFunction(() => /paused|unavailable/.test(document.querySelector('#live-state').textContent), null, { timeout: 30_000 });
  await shot(page, '21-gateway-away', { fullPage: false });
  await ws.startGateway([], new URL(gateway.base).host);
  await page.waitForFunction(() => document.querySelector('#live-state').textContent.endsWith('live'), null, { timeout: 60_000 });
  await page.waitForSelector('#drain-banner', { state: 'hidden', timeout: 30_000 });
  await shot(page, '22-gateway-back', { fullPage: false });
  assert.equal(page.loads, 1, 'no reload');
  assert.deepEqual(page.problems, []);
});
