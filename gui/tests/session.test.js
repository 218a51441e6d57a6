// The session and the gateway's reachability in a real Chromium: a reload while the gateway process is stopped
// keeps the user signed in and says the gateway is unreachable; after a restart everything works without signing
// in again; a sign-out while it is away is revoked once it is back. Cross-origin: the GUI served from its own
// port (with the shipped _headers) signs in to an HTTPS gateway that allows its origin and sees a job change
// live; a plain-http gateway blocked by the CSP and an origin the gateway does not allow are each told apart,
// with what to change, once.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { browserSuite, devUser, shot, signIn } from './browser.js';
import { eventually, insecureCall, serveGui } from './harness.js';

const { workspace, open } = browserSuite();

const refreshToken = (page) => page.evaluate(() => sessionStorage.getItem('flowork.refresh'));

test('the session survives the gateway being stopped and restarted; a sign-out while it is away is revoked later', async () => {
  // The GUI served apart from the gateway (as from Cloudflare Pages), so the page reloads while the gateway is away.
  const ws = workspace();
  const { devKey, user } = devUser();
  ws.addEngine('local', 'operator');
  ws.allow('local', user);
  const site = await serveGui('');
  const tls = ws.tlsFlags();
  const serve = [...tls, '--allowed-origin', site.base];
  const gateway = await ws.startGateway(serve);
  site.gateway = gateway.base;
  const page = await open(site.base, { devKey, ignoreHTTPSErrors: true });
  assert.equal(await signIn(page), user);
  await page.waitForSelector('#job-engine option[value="local"]', { state: 'attached' });
  const address = new URL(gateway.base).host;
  gateway.child.kill('SIGKILL');
  await eventually('the gateway to stop', () => gateway.exited);
  // A reload while it is away: still signed in, told it is unreachable (once), the refresh token kept.
  await page.reload();
  await page.waitForSelector('#reach[data-reason="down"]:not([hidden])', { timeout: 30_000 });
  assert.equal(await page.isVisible('#app'), true, 'still signed in');
  assert.equal(await page.isVisible('#sign-in'), false);
  assert.equal(await page.textContent('#who'), `Signed in as ${user}`);
  assert.match(await page.textContent('#reach'), /Gateway unreachable, retrying; you stay signed in\./);
  assert.equal(await page.isVisible('#notice'), false, 'said once, by the banner only');
  assert.ok(await refreshToken(page), 'the refresh token is kept');
  await shot(page, '70-gateway-away-reloaded', { fullPage: false });

  // Back: the banner clears, the live feed and the API work without signing in again.
  await ws.startGateway(serve, address);
  await page.waitForSelector('#reach', { state: 'hidden', timeout: 60_000 });
  await page.waitForFunction(() => document.querySelector('#live-state').textContent.endsWith('live'), null, { timeout: 60_000 });
  await page.fill('#job-payload', '{"after": "restart"}');
  await page.click('#submit');
  await page.waitForFunction(() => /^Created: job /.test(document.querySelector('#submit-status').textContent), null, { timeout: 30_000 });
  await page.waitForSelector('#jobs .status[data-status="queued"]');
  assert.equal(await page.isVisible('#sign-in'), false);
  await shot(page, '71-gateway-back', { fullPage: false });

  // Signed out while the gateway is away: the refresh token is revoked once it is back.
  const restarted = ws.processes.at(-1);
  restarted.child.kill('SIGKILL');
  await eventually('the gateway to stop again', () => restarted.exited);
  const token = await refreshToken(page);
  await page.click('#sign-out');
  await page.waitForSelector('#sign-in:not([hidden])');
  assert.deepEqual(await page.evaluate(() => JSON.parse(sessionStorage.getItem('flowork.discarded'))), [token], 'kept to revoke');
  const again = await ws.startGateway(serve, address);
  await eventually('the revocation to reach the gateway', async () => (await page.evaluate(() => sessionStorage.getItem('flowork.discarded'))) === '[]', 60_000);
  const refused = await insecureCall(again.base, null, 'POST', '/auth/refresh', { refresh_token: token });
  assert.equal(refused.status, 401, 'the discarded refresh token no longer works');
  assert.deepEqual(page.problems, []);
  await site.close();
});

test('cross-origin: an allowed origin works against an HTTPS gateway; a CSP-blocked gateway and a refused origin are told apart', async () => {
  const ws = workspace();
  const { devKey, user } = devUser();
  ws.addEngine('local', 'operator');
  ws.allow('local', user);
  // The GUI on an origin of its own, which the HTTPS gateway allows; its config.json names the gateway.
  const site = await serveGui('');
  const gateway = await ws.startGateway([...ws.tlsFlags(), '--allowed-origin', site.base]);
  assert.match(gateway.base, /^https:/);
  site.gateway = gateway.base;
  try {
    const page = await open(site.base, { devKey, ignoreHTTPSErrors: true });
    assert.equal(await signIn(page), user);
    await page.waitForFunction(() => document.querySelector('#live-state').textContent.endsWith('live'), null, { timeout: 30_000 });
    await page.waitForSelector('#job-engine option[value="local"]', { state: 'attached' });
    await page.fill('#job-payload', '{"cross": "origin"}');
    await page.click('#submit');
    await page.waitForFunction(() => /^Created: job /.test(document.querySelector('#submit-status').textContent), null, { timeout: 30_000 });
    const id = (await page.textContent('#submit-status')).replace('Created: job ', '');
    await page.waitForSelector(`#jobs tr[data-job-id="${id}"] .status[data-status="queued"]`);
    // A change made elsewhere (no engine runs; the job is cancelled through the API) arrives live over wss.
    const token = ws.mintToken(user);
    assert.equal((await insecureCall(gateway.base, token, 'POST', `/jobs/${id}/cancel`)).status, 200);
    await page.waitForSelector(`#jobs tr[data-job-id="${id}"] .status[data-status="cancelled"]`, { timeout: 30_000 });
    assert.equal(page.loads, 1);
    assert.equal(await page.isVisible('#reach'), false);
    await shot(page, '72-cross-origin-live', { fullPage: false });
    assert.deepEqual(page.problems, []);

    // The same GUI pointed at a plain-http gateway: the shipped CSP blocks it, and the page says so, once.
    const blocked = await serveGui(gateway.base.replace('https:', 'http:'));
    const cspPage = await open(blocked.base);
    await cspPage.waitForSelector('#reach[data-reason="csp"]:not([hidden])', { timeout: 30_000 });
    const cspText = await cspPage.textContent('#reach');
    assert.match(cspText, /Content-Security-Policy \(connect-src\) does not allow connections to the gateway at http:\/\/127\.0\.0\.1:\d+/);
    assert.match(cspText, /--tls-cert/);
    await cspPage.click('#sign-in-dev');
    await cspPage.waitForSelector('#reach[data-reason="csp"]:not([hidden])');
    assert.equal(await cspPage.isVisible('#notice'), false, 'said once');
    await shot(cspPage, '73-csp-blocked', { fullPage: false });
    await blocked.close();

    // An origin the gateway does not allow: CORS, with the flag to add it.
    const refusedSite = await serveGui(gateway.base);
    const corsPage = await open(refusedSite.base, { ignoreHTTPSErrors: true });
    await corsPage.waitForSelector('#reach[data-reason="cors"]:not([hidden])', { timeout: 30_000 });
    assert.match(await corsPage.textContent('#reach'), new RegExp(`does not allow this page's origin \\(${refusedSite.base.replace(/[.]/g, '\\.')}\\).*--allowed-origin ${refusedSite.base.replace(/[.]/g, '\\.')}`));
    await corsPage.click('#sign-in-dev');
    await corsPage.waitForSelector('#reach[data-reason="cors"]:not([hidden])');
    assert.equal(await corsPage.isVisible('#notice'), false, 'said once');
    await shot(corsPage, '74-cors-refused', { fullPage: false });
    await refusedSite.close();
  } finally {
    await site.close();
  }
});
