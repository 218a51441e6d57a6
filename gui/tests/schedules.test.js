// The schedules screen in a real Chromium against the real gateway: the next five runs previewed in the browser
// as the expression is typed (the same dialect as the gateway's), a schedule created, listed and deleted, and the
// gateway's own refusal shown in its words.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { browserSuite, overflow, shot } from './browser.js';
import { eventually } from './harness.js';

const { dashboard } = browserSuite();

const previewTimes = (page) => page.$$eval('#cron-preview li', (items) => items.map((li) => li.dataset.at ?? null));

test('a schedule is previewed, created, listed and deleted', async () => {
  const { page, api } = await dashboard({ hash: '#/schedules' });
  await page.waitForSelector('#schedule-form');
  assert.equal(await page.inputValue('#schedule-engine'), 'local', 'the picker defaults to the engine the user may use');
  await page.fill('#schedule-timezone', 'UTC');
  await page.fill('#schedule-cron', '*/15 * * * *');
  // The preview: five runs, on quarter hours, each after the last, in the future.
  const runs = await eventually('five runs previewed', async () => {
    const times = await previewTimes(page);
    return times.length === 5 && times.every(Boolean) && times;
  });
  const ms = runs.map((t) => Date.parse(t));
  for (let i = 0; i < ms.length; i += 1) {
    const at = new Date(ms[i]);
    assert.equal(at.getUTCMinutes() % 15, 0, runs[i]);
    assert.equal(at.getUTCSeconds(), 0, runs[i]);
    if (i > 0) assert.equal(ms[i] - ms[i - 1], 15 * 60_000);
  }
  assert.ok(ms[0] > Date.now() - 1_000 && ms[0] <= Date.now() + 15 * 60_000);
  // A time zone moves the runs: 09:00 in Tokyo is 00:00 UTC.
  await page.fill('#schedule-cron', '0 9 * * *');
  await page.fill('#schedule-timezone', 'Asia/Tokyo');
  await eventually('runs at midnight UTC', async () => (await previewTimes(page)).every((t) => t && t.endsWith('T00:00:00.000Z')));
  assert.match(await page.textContent('#cron-preview li'), /Asia\/Tokyo/);
  // What the gateway refuses, the preview refuses too, with its reason.
  await page.fill('#schedule-cron', '0 0 0 1 1 * 2030');
  await page.waitForSelector('#cron-preview[data-state="invalid"]');
  assert.match(await page.textContent('#cron-preview'), /it has 7 fields; use 5/);
  assert.equal(await page.getAttribute('#schedule-cron', 'aria-invalid'), 'true');
  await page.click('#schedule-create');
  assert.match(await page.textContent('#schedule-error'), /Cron: it has 7 fields/);
  assert.deepEqual((await api('GET', '/schedules')).body.schedules, [], 'nothing was sent');
  await page.fill('#schedule-timezone', 'Mars/Olympus');
  await page.fill('#schedule-cron', '@hourly');
  await page.waitForSelector('#schedule-timezone[aria-invalid="true"]');
  assert.match(await page.textContent('#cron-preview'), /unknown time zone “Mars\/Olympus”/);

  // Created: listed with its next run; the gateway agrees.
  await page.fill('#schedule-timezone', 'UTC');
  await page.fill('#schedule-cron', '*/5 * * * *');
  await page.fill('#schedule-kind', 'echo');
  await page.fill('#schedule-payload', '{"from": "schedule"}');
  await page.click('#schedule-create');
  await page.waitForSelector('#schedules tbody tr');
  assert.match(await page.textContent('#schedule-status'), /^Created: the first run is /);
  const { body } = await api('GET', '/schedules');
  assert.equal(body.schedules.length, 1);
  const [schedule] = body.schedules;
  assert.deepEqual([schedule.cron, schedule.timezone, schedule.engine, schedule.kind, schedule.payload], ['*/5 * * * *', 'UTC', 'local', 'echo', { from: 'schedule' }]);
  const row = `#schedules tr[data-schedule-id="${schedule.id}"]`;
  assert.match(await page.textContent(row), /\*\/5 \* \* \* \* UTC/);
  // The gateway's first tick is one the preview showed (the first, or the second if a tick passed meanwhile).
  const shown = (await previewTimes(page)).map((t) => Date.parse(t));
  assert.ok(shown.slice(0, 2).includes(Date.parse(schedule.next_run_at)), `${schedule.next_run_at} not in ${shown}`);
  await shot(page, '40-schedules');

  // Delete asks first; "Go back" keeps it.
  await page.click(`${row} button`);
  await page.waitForSelector('#confirm[open]');
  await page.click('#confirm-cancel');
  assert.equal((await api('GET', '/schedules')).body.schedules.length, 1);
  await page.click(`${row} button`);
  await page.click('#confirm-ok');
  await page.waitForSelector(row, { state: 'detached' });
  assert.equal(await page.isVisible('#schedules-empty'), true);
  assert.deepEqual((await api('GET', '/schedules')).body.schedules, []);
  assert.deepEqual(page.problems, []);
});

test('the schedules screen at 390 px in dark mode', async () => {
  const { page, api } = await dashboard({ hash: '#/schedules', viewport: { width: 390, height: 844 }, colorScheme: 'dark' });
  assert.equal((await api('POST', '/schedules', { engine: 'local', kind: 'echo', cron: '0 */2 * * *', timezone: 'Europe/Berlin' })).status, 201);
  await page.reload();
  await page.waitForSelector('#schedules tbody tr');
  await page.waitForSelector('#cron-preview[data-state="ok"]');
  await shot(page, '41-schedules-phone-dark');
  assert.ok((await overflow(page)) <= 0, 'nothing wider than the phone');
  assert.deepEqual(page.problems, []);
});
