// The job form and the batch upload in a real Chromium against the real gateway: every field of POST /jobs,
// checked in the browser with clear messages and read back from the created job; a JSON-lines file of a few
// hundred jobs sent in batches, its invalid lines (refused in the browser and by the gateway) listed by number.

import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { browserSuite, overflow, shot } from './browser.js';
import { eventually } from './harness.js';

const { dashboard } = browserSuite();

/** A datetime-local value for `date` in the browser's zone (the test's, as Chromium runs on this machine). */
function localInput(date) {
  const pad = (n) => String(n).padStart(2, '0');
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

test('the job form: every field checked in the browser, then sent and read back', async () => {
  const { page, api } = await dashboard();
  assert.equal(await page.inputValue('#job-engine'), 'local', 'the picker defaults to the engine the user may use');
  await page.click('#job-options > summary');
  // Every problem at once, each by its field.
  await page.fill('#job-kind', 'Not A Kind');
  await page.fill('#job-payload', '{"a": ');
  await page.fill('#job-priority', '1.5');
  await page.fill('#job-max-attempts', '0');
  await page.fill('#job-timeout', '90000000');
  await page.fill('#job-concurrency-key', 'has space');
  await page.click('#submit');
  const problems = await page.$$eval('#payload-error li', (items) => items.map((li) => li.textContent));
  assert.equal(problems.length, 6, problems.join('\n'));
  for (const [field, text] of [
    ['Kind', /lowercase letters/],
    ['Payload', /not valid JSON/],
    ['Priority', /whole number/],
    ['Max attempts', /from 1 to 100/],
    ['Timeout', /from 1 to 86,400,000/],
    ['Concurrency key', /visible ASCII/],
  ]) {
    assert.ok(problems.some((p) => p.startsWith(`${field}: `) && text.test(p)), `${field}: ${problems}`);
  }
  const invalid = await page.$$eval('[aria-invalid="true"]', (controls) => controls.map((c) => c.id).sort());
  assert.deepEqual(invalid, ['job-concurrency-key', 'job-kind', 'job-max-attempts', 'job-payload', 'job-priority', 'job-timeout']);
  assert.equal(await page.evaluate(() => document.activeElement.id), 'job-kind', 'the first invalid field has the focus');
  await shot(page, '60-submit-invalid');
  assert.equal((await api('GET', '/jobs/counts')).body.queued, 0, 'nothing was sent');

  // Fixed, field by field: the problems go as they are fixed.
  const runAt = new Date(Math.ceil(Date.now() / 1000) * 1000 + 3_600_000);
  await page.fill('#job-kind', 'echo');
  await page.fill('#job-payload', '{"n": 7, "tags": ["a", "b"]}');
  await page.fill('#job-priority', '-3');
  await page.fill('#job-run-at', localInput(runAt));
  await page.fill('#job-max-attempts', '7');
  await page.fill('#job-timeout', '4500');
  await page.fill('#job-concurrency-key', 'repo:acme/api');
  assert.equal(await page.$$eval('#payload-error li', (items) => items.length), 0);
  await page.click('#submit');
  await page.waitForFunction(() => /^Created: job /.test(document.querySelector('#submit-status').textContent));
  const id = (await page.textContent('#submit-status')).replace('Created: job ', '');
  const { body: job } = await api('GET', `/jobs/${id}`);
  assert.deepEqual(
    [job.engine, job.kind, job.payload, job.priority, Date.parse(job.run_at), job.max_attempts, job.timeout_ms, job.concurrency_key, job.status],
    ['local', 'echo', { n: 7, tags: ['a', 'b'] }, -3, runAt.getTime(), 7, 4500, 'repo:acme/api', 'queued'],
  );
  await page.waitForSelector(`#jobs tr[data-job-id="${id}"]`);
  await shot(page, '61-submit-all-fields');
  assert.deepEqual(page.problems, []);
});

test('a JSON-lines upload of a few hundred jobs, with its invalid lines listed', async () => {
  const { ws, page, api } = await dashboard();
  // 1,200 lines: a blank one, one that is not JSON, one with a bad field, one for an engine that does not exist
  // (refused by the gateway, not the browser), and 1,196 good ones: two batches.
  const lines = [];
  for (let i = 1; i <= 1_200; i += 1) lines.push(JSON.stringify({ engine: 'local', kind: 'echo', payload: { i }, priority: i % 3 }));
  lines[99] = '';
  lines[199] = '{"engine": "local", "kind": "echo", ';
  lines[299] = JSON.stringify({ engine: 'local', kind: 'echo', max_attempts: 1000 });
  lines[1_099] = JSON.stringify({ engine: 'nowhere', kind: 'echo' });
  const file = path.join(ws.dir, 'jobs.jsonl');
  writeFileSync(file, `${lines.join('\n')}\n`);
  await page.setInputFiles('#batch-file', file);
  await page.click('#batch-upload');
  await page.waitForSelector('#batch-status[data-state="done"]', { timeout: 120_000 });
  assert.equal(await page.getAttribute('#batch-status', 'data-created'), '1196');
  assert.equal(await page.getAttribute('#batch-status', 'data-failed'), '3');
  const failures = await page.$$eval('#batch-failures li', (items) => items.map((li) => [Number(li.dataset.line), li.textContent]));
  assert.deepEqual(failures.map(([line]) => line), [200, 300, 1_100]);
  assert.match(failures[0][1], /^Line 200: not valid JSON/);
  assert.match(failures[1][1], /^Line 300: max attempts is a whole number from 1 to 100/);
  assert.match(failures[2][1], /^Line 1100: unknown_engine: no engine named "nowhere"/);
  await eventually('the jobs on the gateway', async () => (await api('GET', '/jobs/counts')).body.queued === 1_196);
  await shot(page, '62-batch-upload');

  // The same file again creates nothing twice: every line's key is the same.
  await page.click('#batch-upload');
  await page.waitForFunction(() => /already there from an earlier upload/.test(document.querySelector('#batch-status').textContent), null, { timeout: 120_000 });
  assert.equal(await page.getAttribute('#batch-status', 'data-created'), '0');
  assert.equal((await api('GET', '/jobs/counts')).body.queued, 1_196);
  assert.deepEqual(page.problems, []);
});

test('the jobs screen with its forms at 390 px, light', async () => {
  const { page } = await dashboard({ viewport: { width: 390, height: 844 } });
  await page.click('#job-options > summary');
  assert.ok((await overflow(page)) <= 0, 'nothing wider than the phone');
  await shot(page, '63-submit-phone');
  assert.deepEqual(page.problems, []);
});
