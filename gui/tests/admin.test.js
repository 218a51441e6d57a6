// The operator screen in a real Chromium against the real gateway: nothing but the token field until an admin
// token is pasted; then drain on and off (the banner comes and goes), the audit log page by page, and the check
// of its chain; tools only for the token's scopes, and a refused token forgotten.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { browserSuite, overflow, shot } from './browser.js';

const { dashboard } = browserSuite();

test('an admin token opens drain on/off, the audit log and its check', async () => {
  const { ws, page, api } = await dashboard({ hash: '#/admin' });
  await page.waitForSelector('#admin-form');
  assert.equal(await page.isVisible('#admin-tools'), false, 'no tools without a token');
  await page.fill('#admin-token', 'not-a-token');
  await page.click('#admin-use');
  assert.match(await page.textContent('#admin-token-state'), /not an admin token/);
  assert.equal(await page.isVisible('#admin-tools'), false);

  // Enough audit rows for more than one page of 50.
  for (let i = 0; i < 60; i += 1) ws.allow('local', `user-${i}`);
  const admin = ws.cli('admin', 'token', '--scope', 'drain,audit:read', '--ttl', '15m');
  await page.fill('#admin-token', admin);
  await page.click('#admin-use');
  await page.waitForSelector('#admin-tools:not([hidden])');
  assert.match(await page.textContent('#admin-token-state'), /with drain, audit:read; it expires/);
  assert.equal(await page.inputValue('#admin-token'), '', 'the token leaves the field');

  // Drain: the banner shows, and a submission is refused; stopped: the banner clears.
  await page.waitForSelector('#drain-state[data-draining="false"]');
  await page.click('#drain-start');
  await page.waitForSelector('#drain-state[data-draining="true"]');
  await page.waitForSelector('#drain-banner:not([hidden])');
  assert.equal((await api('POST', '/jobs', { engine: 'local', kind: 'echo' })).status, 503);
  assert.equal(await page.isDisabled('#drain-start'), true);
  await shot(page, '50-admin-draining');
  await page.click('#drain-stop');
  await page.waitForSelector('#drain-state[data-draining="false"]');
  await page.waitForSelector('#drain-banner', { state: 'hidden' });
  assert.equal((await api('POST', '/jobs', { engine: 'local', kind: 'echo' })).status, 201);

  // The audit log, oldest first, page by page, over "the beginning".
  await page.selectOption('#audit-since', '');
  await page.click('#audit-load');
  await page.waitForFunction(() => document.querySelector('#audit-info').textContent.startsWith('Page 1: rows 1–50')).catch(async (e) => { throw new Error(`${await page.textContent('#audit-info')} ${e.message}`); });
  const firstPage = await page.$$eval('#audit tbody tr', (rows) => rows.map((r) => Number(r.dataset.auditId)));
  assert.deepEqual(firstPage, Array.from({ length: 50 }, (_, i) => i + 1));
  assert.equal(await page.isDisabled('#audit-more'), false);
  await page.click('#audit-more');
  await page.waitForFunction(() => document.querySelector('#audit-info').textContent.startsWith('Page 2: rows 51–'));
  const actions = await page.$$eval('#audit tbody tr', (rows) => rows.map((r) => r.dataset.action));
  assert.ok(actions.includes('gateway.drain') && actions.includes('gateway.resume'), `the drain is in the log: ${actions}`);
  await page.click('#audit-verify');
  await page.waitForSelector('#audit-verdict[data-intact="true"]');
  assert.match(await page.textContent('#audit-verdict'), /^Intact: \d+ rows checked/);
  await shot(page, '51-admin-audit');

  // A token with only the drain scope shows only the drain.
  await page.click('#admin-forget');
  await page.waitForSelector('#admin-tools', { state: 'hidden' });
  await page.fill('#admin-token', ws.cli('admin', 'token', '--scope', 'drain', '--ttl', '15m'));
  await page.click('#admin-use');
  await page.waitForSelector('#admin-tools:not([hidden])');
  assert.equal(await page.isVisible('#drain-title'), true);
  assert.equal(await page.isVisible('#audit-title'), false);
  // A token the gateway refuses (signed by a key it never had) is forgotten, with the gateway's reason.
  await page.click('#admin-forget');
  const [head, , signature] = admin.slice(4).split('.');
  const claims = Buffer.from(JSON.stringify({ sub: 'admin', exp: Math.floor(Date.now() / 1000) + 600, jti: 'f'.repeat(32), scope: 'drain' })).toString('base64url');
  await page.fill('#admin-token', `fwa_${head}.${claims}.${signature}.00000000`);
  await page.click('#admin-use');
  await page.click('#drain-start');
  await page.waitForSelector('#admin-tools', { state: 'hidden' });
  assert.match(await page.textContent('#admin-token-state'), /The gateway refused the admin token \(.+\)\. Paste a new one\./);
  assert.equal(await page.isVisible('#drain-banner'), false);
  assert.deepEqual(page.problems, []);
});

test('the operator screen at 390 px in dark mode', async () => {
  const { ws, page } = await dashboard({ hash: '#/admin', viewport: { width: 390, height: 844 }, colorScheme: 'dark' });
  await page.fill('#admin-token', ws.cli('admin', 'token', '--scope', 'drain,audit:read', '--ttl', '15m'));
  await page.click('#admin-use');
  await page.waitForSelector('#audit tbody tr');
  assert.ok((await overflow(page)) <= 0, 'nothing wider than the phone');
  await shot(page, '52-admin-phone-dark');
  await page.setViewportSize({ width: 1280, height: 900 });
  await shot(page, '53-admin-dark');
  assert.deepEqual(page.problems, []);
});
