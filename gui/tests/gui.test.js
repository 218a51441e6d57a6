// The GUI in a real headless Chromium (Debian's, driven by playwright-core), served by a real gateway: sign in
// with a development key (a real EIP-4361 signature), submit a job and watch it go queued → running →
// succeeded without a reload, the 429 notice with its countdown, the drain banner. Screenshots go to
// test-artifacts/.

import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { Wallet, getBytes } from 'ethers';
import { browserSuite, shot, signIn } from './browser.js';
import { eventually } from './harness.js';

const { workspace, open: openPage } = browserSuite();

async function submit(page, { kind, payload }) {
  await page.fill('#job-kind', kind);
  await page.fill('#job-payload', JSON.stringify(payload));
  await page.click('#submit');
}

test('sign in, submit a job and watch it go queued → running → succeeded live', async () => {
  const ws = workspace();
  ws.addEngine('local', 'operator');
  const tokenFile = path.join(ws.dir, 'local.token');
  const gateway = await ws.startGateway();
  const page = await openPage(gateway.base);
  await shot(page, '01-sign-in');
  const address = await signIn(page);
  // Not on the engine's whitelist yet: the gateway's 403 is shown as such.
  await page.waitForSelector('#job-engine option[value="local"]', { state: 'attached' });
  await submit(page, { kind: 'sleep', payload: { ms: 1500 } });
  await page.waitForSelector('#notice[data-status="403"]:not([hidden])');
  assert.match(await page.textContent('#notice'), new RegExp(`engine allow local ${address}`), 'the 403 says how to get in');
  ws.allow('local', address);

  // Invalid JSON never leaves the page.
  await page.fill('#job-payload', '{"ms": ');
  await page.click('#submit');
  assert.equal(await page.getAttribute('#job-payload', 'aria-invalid'), 'true');
  assert.match(await page.textContent('#payload-error'), /not valid JSON/);

  const seen = [];
  await page.exposeFunction('reportStatus', (status) => seen.push(status));
  await page.evaluate(() => {
    // Each state a job's row shows, once: the table redraws rows, so the last status is kept per job, not per badge.
    const shown = new Map();
    const observer = new MutationObserver(() => {
      for (const badge of document.querySelectorAll('#jobs .status')) {
        const id = badge.closest('tr').dataset.jobId;
        if (shown.get(id) !== badge.dataset.status) {
          shown.set(id, badge.dataset.status);
          window.reportStatus(badge.dataset.status);
        }
      }
    });
    observer.observe(document.querySelector('#jobs tbody'), { childList: true, subtree: true, attributes: true });
  });
  await submit(page, { kind: 'sleep', payload: { ms: 1500 } });
  await page.waitForSelector('#jobs .status[data-status="queued"]');
  await shot(page, '02-queued');
  // The engine starts only now, so the job is seen waiting first.
  ws.startEngine(gateway.base, 'local', tokenFile, 2);
  await page.waitForSelector('#jobs .status[data-status="running"]', { timeout: 90_000 });
  await page.click('#jobs button.link');
  await page.waitForSelector('#job-view:not([hidden])');
  await shot(page, '03-running');
  await page.waitForSelector('#jobs .status[data-status="succeeded"]', { timeout: 30_000 });
  await eventually('the job view to show the outcome', async () => (await page.textContent('#job-view-status')) === 'succeeded');
  await shot(page, '04-succeeded');
  assert.deepEqual(seen, ['queued', 'running', 'succeeded'], 'every state was shown, in order');
  assert.equal(page.loads, 1, 'no reload');
  const history = await page.$$eval('#job-history li', (items) => items.map((li) => li.textContent));
  assert.equal(history.length, 3, `history: ${history}`);
  assert.match(await page.textContent('#job-outcome'), /null|\{|\(none yet\)/);

  // The engine card shows it online with its workers.
  await eventually('the engine card online', async () => (await page.textContent('[data-engine-id="local"]')).includes('online'));

  // Every form control has a label (or, for a row's checkbox, an aria-label), for screen readers.
  const unlabelled = await page.$$eval('input, select, textarea', (controls) =>
    controls.filter((c) => (!c.labels || c.labels.length === 0) && !c.getAttribute('aria-label')).map((c) => c.id || c.outerHTML),
  );
  assert.deepEqual(unlabelled, []);

  // At phone width nothing overflows sideways.
  await page.setViewportSize({ width: 390, height: 844 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  assert.ok(overflow <= 0, `the page is ${overflow}px wider than a phone`);
  await shot(page, '05-phone');
  assert.deepEqual(page.problems, []);
});

test('the 429 message counts down Retry-After, and the drain banner comes and goes live', async () => {
  const ws = workspace();
  ws.addEngine('capped', 'operator');
  // No engine runs and one queued job fills the engine's queue.
  const gateway = await ws.startGateway(['--max-queue-depth', '1']);
  const page = await openPage(gateway.base);
  const address = await signIn(page);
  ws.allow('capped', address);
  await page.waitForSelector('#job-engine option[value="capped"]', { state: 'attached' });
  await submit(page, { kind: 'echo', payload: { n: 1 } });
  await page.waitForSelector('#jobs .status[data-status="queued"]');
  await submit(page, { kind: 'echo', payload: { n: 2 } });
  await page.waitForSelector('#notice[data-status="429"]:not([hidden])');
  const first = await page.textContent('#retry-countdown');
  assert.match(first, /^Retry in \d+ s\.$/);
  assert.equal(await page.isVisible('#retry-submit'), true, 'a retry with the same key is offered');
  await shot(page, '06-429');
  const start = Number(first.match(/\d+/)[0]);
  if (start > 1) {
    await eventually('the countdown to move', async () => (await page.textContent('#retry-countdown')) !== first, 5_000);
  }

  const admin = ws.cli('admin', 'token', '--scope', 'drain', '--ttl', '5m');
  const drain = (method) => fetch(`${gateway.base}/admin/drain`, { method, headers: { Authorization: `Bearer ${admin}` } });
  assert.equal((await drain('POST')).status, 200);
  await page.waitForSelector('#drain-banner:not([hidden])');
  await shot(page, '07-draining');
  // While draining, a submission gets 503 and its Retry-After.
  await page.fill('#job-payload', '{"n": 3}');
  await page.click('#submit');
  await page.waitForSelector('#notice[data-status="503"]:not([hidden])');
  assert.match(await page.textContent('#notice'), /draining/);
  assert.equal((await drain('DELETE')).status, 200);
  await page.waitForSelector('#drain-banner', { state: 'hidden' });
  assert.equal(page.loads, 1, 'no reload');
  assert.deepEqual(page.problems, []);
});

test('an injected wallet signs in; an expired access token is refreshed unseen; 422 and 401 are explained', async () => {
  const ws = workspace();
  ws.addEngine('local', 'operator');
  ws.addEngine('retired', 'operator');
  const gateway = await ws.startGateway(['--access-ttl', '2s']);
  const wallet = Wallet.createRandom();
  // An EIP-1193 provider, as a wallet extension injects it; the key stays in the test (Node), like in a wallet.
  const injectWallet = async (page) => {
    await page.exposeFunction('walletSign', (hexMessage) => wallet.signMessage(getBytes(hexMessage)));
    await page.addInitScript((address) => {
      window.ethereum = {
        async request({ method, params }) {
          if (method === 'eth_requestAccounts' || method === 'eth_accounts') return [address];
          if (method === 'eth_chainId') return '0x1';
          if (method === 'net_version') return '1';
          if (method === 'personal_sign') return window.walletSign(params[0]);
          throw Object.assign(new Error(`unsupported method ${method}`), { code: 4200 });
        },
        on() {},
        removeListener() {},
      };
    }, wallet.address);
  };
  const page = await openPage(gateway.base, { prepare: injectWallet });
  await page.click('#sign-in-wallet');
  await page.waitForSelector('#app:not([hidden])');
  assert.equal(await page.textContent('#who'), `Signed in as ${wallet.address.toLowerCase()}`);
  ws.allow('local', wallet.address.toLowerCase());
  await page.waitForSelector('#job-engine option[value="local"]', { state: 'attached' });

  // A kind the gateway would refuse is refused in the browser, by its field, before anything is sent.
  await page.fill('#job-kind', 'not a kind!');
  await page.click('#submit');
  assert.match(await page.textContent('#payload-error'), /^Kind: the kind is 1-64 lowercase letters/);
  assert.equal(await page.getAttribute('#job-kind', 'aria-invalid'), 'true');
  assert.equal(await page.isVisible('#notice'), false);
  // 422 from the gateway (an engine revoked after the page listed it): its reason is shown.
  ws.cli('engine', 'revoke', 'retired');
  await page.fill('#job-kind', 'echo');
  await page.selectOption('#job-engine', 'retired');
  // The gateway remembers engine records for a second: submit until the revocation is seen.
  await eventually('the 422 of a revoked engine', async () => {
    await page.click('#submit');
    await page.waitForSelector('#notice[data-status]:not([hidden])');
    return (await page.getAttribute('#notice', 'data-status')) === '422';
  });
  assert.match(await page.textContent('#notice'), /engine_revoked/);
  await page.selectOption('#job-engine', 'local');

  // The 2 s access token expires; the next call refreshes it without the user noticing.
  await new Promise((resolve) => setTimeout(resolve, 3_000));
  await submit(page, { kind: 'echo', payload: { after: 'refresh' } });
  await page.waitForSelector('#jobs .status[data-status="queued"]');
  assert.match(await page.textContent('#submit-status'), /^Created: job /);

  // The session is revoked elsewhere (logout of its refresh token): once the access token lapses (the live
  // connection ends with it and the refresh is refused), the user is told and sees the sign-in again.
  const refreshToken = await page.evaluate(() => sessionStorage.getItem('flowork.refresh'));
  const logout = await fetch(`${gateway.base}/auth/logout`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ refresh_token: refreshToken }),
  });
  assert.equal(logout.status, 200);
  await page.waitForSelector('#sign-in:not([hidden])', { timeout: 30_000 });
  assert.match(await page.textContent('#notice'), /session has ended/);
  assert.equal(await page.isVisible('#app'), false);
  await shot(page, '08-signed-out');
  assert.deepEqual(page.problems, []);
});
