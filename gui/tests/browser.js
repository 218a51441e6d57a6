// Browser helpers shared by the GUI tests: Debian's Chromium through playwright-core, a page that records CSP
// violations and page errors, sign-in with a development key, a signed-in dashboard on a fresh gateway, and
// screenshots into test-artifacts/.

import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before } from 'node:test';
import { Wallet } from 'ethers';
import { chromium } from 'playwright-core';
import { Workspace, artifactsDir, assertBuilt, callApi } from './harness.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

export function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--headless', '--disable-background-networking', '--disable-dev-shm-usage', '--disable-gpu', '--disable-component-update', '--disable-sync'],
  });
}

/**
 * A page that records CSP violations and page errors, and whose reloads are counted; `prepare(page)` runs before
 * the first load (to inject a wallet, say); `colorScheme` 'dark' emulates a system in dark mode.
 */
export async function openPage(
  browser,
  base,
  { viewport = { width: 1280, height: 900 }, colorScheme = 'light', prepare = async () => {}, devKey = null, ignoreHTTPSErrors = false } = {},
) {
  const context = await browser.newContext({ viewport, colorScheme, ignoreHTTPSErrors });
  const page = await context.newPage();
  // A development key chosen by the test, so it knows the user's address before signing in.
  if (devKey) await page.addInitScript((key) => localStorage.setItem('flowork.devKey', key), devKey);
  await prepare(page);
  page.problems = [];
  page.on('pageerror', (error) => page.problems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error' && /Content Security Policy/i.test(message.text())) page.problems.push(message.text());
  });
  page.loads = 0;
  page.on('load', () => {
    page.loads += 1;
  });
  const response = await page.goto(base);
  assert.equal(response.status(), 200);
  assert.match(response.headers()['content-security-policy'] ?? '', /script-src 'self'/, 'the _headers CSP is applied');
  return page;
}

/** Signs in with the page's development key (by keyboard); returns the user's address. */
export async function signIn(page) {
  await page.waitForSelector('#sign-in-dev:not([disabled])');
  await page.focus('#sign-in-dev');
  await page.keyboard.press('Enter');
  try {
    await page.waitForSelector('#app:not([hidden])', { timeout: 60_000 });
  } catch (error) {
    throw new Error(`sign-in did not finish (notice: ${await page.textContent('#notice')}; problems: ${page.problems}): ${error.message}`);
  }
  const who = await page.textContent('#who');
  const address = who.replace('Signed in as ', '');
  assert.match(address, /^0x[0-9a-f]{40}$/, 'signed in as a wallet address');
  const message = await page.textContent('#signed-message');
  assert.match(message, /wants you to sign in with your Ethereum account:/, 'the EIP-4361 message is shown');
  assert.match(message, /\nNonce: [0-9a-f]{32}\n/);
  return address;
}

/** Saves a screenshot (the whole page, or with `fullPage: false` what the viewport shows). */
export async function shot(page, name, { fullPage = true } = {}) {
  await page.screenshot({ path: path.join(artifactsDir, `${name}.png`), fullPage });
}

/** A development key and its user id (the lowercase address), made in the test. */
export function devUser() {
  const wallet = Wallet.createRandom();
  return { devKey: wallet.privateKey, user: wallet.address.toLowerCase() };
}

/**
 * Registers a test file's browser (launched before its tests, closed after) and workspaces (removed after); returns
 * `workspace()`, `open(base, options)` and `dashboard(options)`.
 */
export function browserSuite() {
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
  const workspace = () => {
    const ws = new Workspace();
    workspaces.push(ws);
    return ws;
  };
  const open = (base, options) => openPage(browser, base, options);
  /**
   * A gateway with an engine `local` (started when `workers` > 0) and a signed-in page allowed on it; with `owns`,
   * the signed-in user owns the engine (else `operator` does). Waits for the live feed.
   */
  const dashboard = async ({ workers = 0, viewport, colorScheme, owns = false, gatewayArgs = [], hash = '' } = {}) => {
    const ws = workspace();
    const { devKey, user } = devUser();
    const tokenFile = ws.addEngine('local', owns ? user : 'operator');
    const gateway = await ws.startGateway(gatewayArgs);
    if (!owns) ws.allow('local', user);
    if (workers > 0) ws.startEngine(gateway.base, 'local', tokenFile, workers);
    const page = await open(`${gateway.base}/${hash}`, { viewport, colorScheme, devKey });
    assert.equal(await signIn(page), user);
    const token = ws.mintToken(user, '30m');
    await page.waitForSelector('#job-engine option[value="local"]', { state: 'attached' });
    try {
      await page.waitForFunction(() => document.querySelector('#live-state').textContent.endsWith('live'), null, { timeout: 60_000 });
    } catch (error) {
      const state = await page.evaluate(() => `${document.querySelector('#live-state').textContent}; ${document.querySelector('#notice')?.textContent}`);
      throw new Error(`the page never went live (${state}): ${error.message}`);
    }
    return { ws, gateway, page, user, token, tokenFile, api: (method, route, body) => callApi(gateway.base, token, method, route, body) };
  };
  return { workspace, open, dashboard };
}

/** Whether anything on the page is wider than its viewport (a phone must never scroll sideways). */
export async function overflow(page) {
  return page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
}
