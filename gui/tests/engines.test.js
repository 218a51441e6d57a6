// The engines screen in a real Chromium against the real gateway and engines: a card per engine the user may use
// with the busy figures the gateway reports, pause and resume by the owner, the whitelist, weights and
// concurrency limits edited and read back through the API, refusals shown in the gateway's words; an engine that
// refused the user leaves the cards, one that sends them its live status joins them. Light, dark and phone width.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { browserSuite, overflow, shot } from './browser.js';
import { eventually } from './harness.js';

const { dashboard } = browserSuite();

const card = (id) => `#engines [data-engine-id="${id}"]`;

/** The figures of a card by their terms. */
const figures = (page, id) =>
  page.$eval(card(id), (item) => Object.fromEntries([...item.querySelectorAll('dt')].map((dt) => [dt.textContent, dt.nextElementSibling.textContent])));

test('the engines screen: live figures, pause/resume, whitelist, weights and limits by the owner', async () => {
  const { ws, gateway, page, user, api } = await dashboard({ workers: 1, owns: true, hash: '#/engines' });
  // Two more engines: one that does not let the user in, one that does (whose live status will tell the page).
  ws.addEngine('closed', 'operator');
  const sharedToken = ws.addEngine('shared', 'operator');
  ws.allow('shared', user);
  await page.reload();
  await page.waitForSelector('#app:not([hidden])');
  await page.waitForSelector(`${card('local')}[data-access="owner"]`);
  assert.equal(await page.isVisible(card('local')), true, 'the engines screen shows after a reload (the hash names it)');
  assert.equal(await page.getAttribute('#screens a[data-screen="engines"]', 'aria-current'), 'page');
  assert.match(await page.textContent(`${card('local')} .role`), /yours/);
  await page.waitForSelector(`${card('local')}[data-health="online"]`, { timeout: 60_000 });

  // Busy figures as the gateway reports them: one long job on the one worker.
  const { body: slow } = await api('POST', '/jobs', { engine: 'local', kind: 'sleep', payload: { ms: 60_000 } });
  await eventually('the card to show the running job and a busy worker', async () => {
    const shown = await figures(page, 'local');
    return shown.Running === '1' && /^[1-9]\d* %/.test(shown['Busy now']) && /^[1-9]\d* busy of \d+/.test(shown.Workers);
  }, 60_000);
  const { body: status } = await api('GET', '/status');
  const reported = status.engines.find((e) => e.id === 'local');
  const shown = await figures(page, 'local');
  assert.match(shown.Workers, new RegExp(`scales ${reported.workers.min}–${reported.workers.max}`));
  await shot(page, '30-engines');

  // Pause: said at once by the button, then by the card and the gateway.
  await page.click(`${card('local')} button.pause`);
  await page.waitForSelector(`${card('local')}[data-health="paused"]`);
  assert.match(await page.textContent(`${card('local')} .said`), /^Paused: /);
  assert.equal(await page.textContent(`${card('local')} button.pause`), 'Resume queue');
  assert.equal((await api('GET', '/status')).body.engines.find((e) => e.id === 'local').paused, true);
  await page.click(`${card('local')} button.pause`);
  await page.waitForSelector(`${card('local')}[data-health="online"]`);
  assert.match(await page.textContent(`${card('local')} .said`), /^Resumed: /);
  assert.equal((await api('GET', '/status')).body.engines.find((e) => e.id === 'local').paused, false);
  assert.equal((await api('POST', `/jobs/${slow.id}/cancel`)).status < 300, true);

  // The whitelist: the owner listed, a user allowed and removed, each read back from the gateway.
  const settings = `${card('local')} details.settings`;
  await page.click(`${settings} > summary`);
  await page.waitForSelector(`${settings} .users li[data-user="${user}"]`);
  assert.match(await page.textContent(`${settings} .users li[data-user="${user}"]`), /\(owner\)/);
  const said = `${settings} [data-role="settings-said"]`;
  await page.fill(`${settings} form[data-role="allow"] input`, 'not a user!');
  await page.click(`${settings} form[data-role="allow"] button`);
  assert.match(await page.textContent(said), /A user id is/);
  await page.fill(`${settings} form[data-role="allow"] input`, 'bob');
  await page.click(`${settings} form[data-role="allow"] button`);
  await page.waitForSelector(`${settings} .users li[data-user="bob"]`);
  assert.match(await page.textContent(said), /bob may now submit jobs to local/);
  const whitelist = async () => (await api('GET', '/engines/local/users')).body.users.map((u) => u.user).sort();
  assert.deepEqual(await whitelist(), [user, 'bob'].sort());
  await page.click(`${settings} .users li[data-user="bob"] button`);
  await page.waitForSelector(`${settings} .users li[data-user="bob"]`, { state: 'detached' });
  assert.deepEqual(await whitelist(), [user]);

  // Weights: one set and read back; one out of range refused in the gateway's words.
  const weight = `${settings} form[data-role="weight"]`;
  await page.fill(`${weight} input[name="user"]`, 'bob');
  await page.fill(`${weight} input[name="weight"]`, '3');
  await page.click(`${weight} button`);
  await page.waitForSelector(`${settings} li[data-user="bob"][data-weight="3"]`);
  assert.equal((await api('GET', '/engines/local/scheduling')).body.weights.bob, 3);
  await page.fill(`${weight} input[name="weight"]`, '5000');
  await page.click(`${weight} button`);
  await page.waitForSelector(`${said}[data-outcome="refused"]`);
  assert.equal(await page.textContent(said), 'Not done: weight must be between 1 and 1000');

  // Concurrency limits: the default, and one key's, set, read back and removed.
  await page.fill(`${settings} form[data-role="default-limit"] input`, '2');
  await page.click(`${settings} form[data-role="default-limit"] button`);
  await page.waitForSelector(`${said}[data-outcome="ok"]`);
  assert.equal((await api('GET', '/engines/local/scheduling')).body.default_key_limit, 2);
  await page.fill(`${settings} form[data-role="key-limit"] input[name="key"]`, 'repo:acme/api');
  await page.fill(`${settings} form[data-role="key-limit"] input[name="limit"]`, '1');
  await page.click(`${settings} form[data-role="key-limit"] button`);
  await page.waitForSelector(`${settings} li[data-key="repo:acme/api"][data-limit="1"]`);
  assert.deepEqual((await api('GET', '/engines/local/scheduling')).body.key_limits.map((k) => [k.key, k.limit]), [['repo:acme/api', 1]]);
  await page.click(`${settings} li[data-key="repo:acme/api"] button`);
  await page.waitForSelector(`${settings} li[data-key="repo:acme/api"]`, { state: 'detached' });
  assert.deepEqual((await api('GET', '/engines/local/scheduling')).body.key_limits, []);
  await page.fill(`${settings} form[data-role="default-limit"] input`, '');
  await page.click(`${settings} form[data-role="default-limit"] button`);
  await eventually('unlimited again', async () => (await api('GET', '/engines/local/scheduling')).body.default_key_limit === null);
  await shot(page, '31-engine-settings');

  // An engine that refuses the user leaves the cards (and the picker's first choices); one whose live status the
  // gateway sends them (it sends it only to users on the whitelist) is open to them.
  await page.click('#screens a[data-screen="jobs"]');
  await page.selectOption('#job-engine', 'closed');
  await page.click('#submit');
  await page.waitForSelector('#notice[data-status="403"]:not([hidden])');
  await page.click('#screens a[data-screen="engines"]');
  await page.waitForSelector(card('closed'), { state: 'detached' });
  assert.match(await page.textContent('#engines-elsewhere'), /Not open to you: closed\./);
  assert.deepEqual(await page.$$eval('#job-engine optgroup option', (options) => options.map((o) => o.value)), ['closed']);
  ws.startEngine(gateway.base, 'shared', sharedToken, 1);
  await page.waitForSelector(`${card('shared')}[data-access="allowed"][data-health="online"]`, { timeout: 60_000 });
  assert.equal(await page.isVisible(`${card('shared')} details.settings`), false, 'no settings on an engine the user does not own');
  assert.equal(await page.isVisible(`${card('shared')} button.pause`), false);
  assert.deepEqual(await page.$$eval('#engines > li', (items) => items.map((i) => i.dataset.engineId)), ['local', 'shared'], 'owned first');
  assert.deepEqual(page.problems, []);
});

test('the engines screen at 390 px in dark mode', async () => {
  const { page } = await dashboard({ workers: 1, owns: true, viewport: { width: 390, height: 844 }, colorScheme: 'dark', hash: '#/engines' });
  await page.waitForSelector(`${card('local')}[data-health="online"]`, { timeout: 60_000 });
  await page.click(`${card('local')} details.settings > summary`);
  await page.waitForSelector(`${card('local')} .users li`);
  assert.ok((await overflow(page)) <= 0, 'nothing wider than the phone');
  await shot(page, '32-engines-phone-dark');
  await page.setViewportSize({ width: 1280, height: 900 });
  await shot(page, '33-engines-dark');
  assert.deepEqual(page.problems, []);
});
