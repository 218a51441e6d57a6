// Browser helpers shared by the GUI tests: Debian's Chromium through playwright-core, a page that records CSP
// violations and page errors, sign-in with a development key, and screenshots into test-artifacts/.

import assert from 'node:assert/strict';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { artifactsDir } from './harness.js';

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
export async function openPage(browser, base, { viewport = { width: 1280, height: 900 }, colorScheme = 'light', prepare = async () => {} } = {}) {
  const context = await browser.newContext({ viewport, colorScheme });
  const page = await context.newPage();
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
