// The Client against the real gateway: idempotent enqueue, batches, typed errors, retries by Retry-After.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { Client, FloworkError, WaitTimeoutError } from "../dist/index.js";
import { startProxy, Workspace } from "./harness.js";

describe("Client", () => {
  let ws;
  let base;
  let client;

  before(async () => {
    ws = new Workspace();
    ws.addEngine("alpha", "alice");
    base = await ws.startGateway();
    client = new Client({ baseUrl: base, token: ws.mint("alice") });
  });
  after(() => ws.close());

  test("an enqueue with the same Idempotency-Key returns the same job; without one, each call is a new job", async () => {
    const first = await client.enqueue("alpha", "echo", { n: 1 }, { idempotencyKey: "order-42" });
    const again = await client.enqueue("alpha", "echo", { n: 1 }, { idempotencyKey: "order-42" });
    assert.equal(again.id, first.id);
    assert.equal(first.status, "queued");
    assert.deepEqual(first.payload, { n: 1 });

    const a = await client.enqueue("alpha", "echo", { n: 2 });
    const b = await client.enqueue("alpha", "echo", { n: 2 });
    assert.notEqual(a.id, b.id, "a key is made for each call");

    await assert.rejects(
      client.enqueue("alpha", "echo", { n: 3 }, { idempotencyKey: "order-42" }),
      (error) => error instanceof FloworkError && error.status === 422 && error.code === "idempotency_key_reused",
    );
  });

  test("failed work is operated: retry, delete, attempts, counts, filters and bulk actions", async () => {
    const later = { runAt: "2999-01-01T00:00:00Z" };
    // Their own kind, so the bulk action by filter leaves the other tests' jobs alone.
    const job = await client.enqueue("alpha", "ops", { n: "ops" }, later);
    await client.cancel(job.id);
    assert.deepEqual(await client.attempts(job.id), [], "it never ran");
    const retried = await client.retry(job.id);
    assert.deepEqual([retried.id, retried.status, retried.attempts], [job.id, "queued", 0]);
    await assert.rejects(client.retry(job.id), (e) => e instanceof FloworkError && e.code === "not_retryable");
    await assert.rejects(client.delete(job.id), (e) => e instanceof FloworkError && e.code === "job_not_final");
    const others = [];
    for (let i = 0; i < 3; i++) others.push((await client.enqueue("alpha", "ops", { i }, later)).id);
    assert.ok((await client.counts("alpha")).queued >= 4);
    const cancelled = await client.bulk("cancel", { status: ["queued"], engine: "alpha", kind: "ops" });
    assert.deepEqual(cancelled, { matched: 4, changed: 4 });
    const listed = await client.list({ status: ["cancelled", "dead"], kind: "ops", before: new Date(), limit: 100 });
    for (const id of [job.id, ...others]) assert.ok(listed.jobs.some((j) => j.id === id), id);
    assert.deepEqual(await client.bulk("delete", { ids: [job.id, ...others] }), { matched: 4, changed: 4 });
    await assert.rejects(client.get(job.id), (e) => e instanceof FloworkError && e.code === "job_not_found");
    await assert.rejects(client.delete(job.id), (e) => e instanceof FloworkError && e.status === 404);
  });

  test("stats count the caller's jobs per minute; a bad window is refused", async () => {
    const before = await client.stats({ engine: "alpha", window: "15m" });
    assert.deepEqual([before.engine, before.window_seconds, before.buckets.length], ["alpha", 900, 15]);
    for (let i = 0; i < 3; i++) await client.enqueue("alpha", "stats", { i }, { runAt: "2999-01-01T00:00:00Z" });
    const after = await client.stats({ engine: "alpha", window: "15m" });
    assert.equal(after.totals.enqueued, before.totals.enqueued + 3);
    assert.equal(after.buckets.reduce((sum, b) => sum + b.enqueued, 0), after.totals.enqueued);
    assert.equal((await client.stats()).window_seconds, 3_600);
    await assert.rejects(
      client.stats({ window: "30s" }),
      (e) => e instanceof FloworkError && e.status === 400 && e.code === "invalid_window",
    );
  });

  test("refusals are FloworkErrors with the gateway's code, status and message", async () => {
    await assert.rejects(client.get("0190b5a4-0000-7000-8000-000000000000"), (error) => {
      assert.ok(error instanceof FloworkError);
      assert.equal(error.code, "job_not_found");
      assert.equal(error.status, 404);
      assert.match(error.message, /no job/);
      return true;
    });
    const stranger = new Client({ baseUrl: base, token: "not-a-token" });
    await assert.rejects(stranger.list(), (error) => error instanceof FloworkError && error.status === 401);
    await assert.rejects(
      client.enqueue("nobody", "echo", {}),
      (error) => error instanceof FloworkError && error.code === "unknown_engine" && error.status === 422,
    );
    const away = new Client({ baseUrl: "http://127.0.0.1:9", token: "t" });
    await assert.rejects(
      away.enqueue("alpha", "echo", {}, { retryWithinMs: 0 }),
      (error) => error instanceof FloworkError && error.code === "unreachable" && error.status === 0,
    );
  });

  test("enqueueBatch, get, list, cancel and wait", async () => {
    const results = await client.enqueueBatch([
      { engine: "alpha", kind: "echo", payload: { i: 0 } },
      { engine: "alpha", kind: "echo", payload: { i: 1 }, idempotencyKey: "batch-1" },
      { engine: "nobody", kind: "echo" },
    ]);
    assert.deepEqual(
      results.map((r) => r.status),
      [201, 201, 422],
    );
    const [first, second] = results;
    assert.equal((await client.get(first.job.id)).payload.i, 0);
    const replay = await client.enqueueBatch([{ engine: "alpha", kind: "echo", payload: { i: 1 }, idempotencyKey: "batch-1" }]);
    assert.equal(replay[0].job.id, second.job.id);

    const page = await client.list({ engine: "alpha", status: "queued", limit: 2 });
    assert.equal(page.jobs.length, 2);
    assert.ok(page.next_cursor);
    const next = await client.list({ engine: "alpha", status: "queued", cursor: page.next_cursor });
    assert.ok(next.jobs.every((job) => !page.jobs.some((seen) => seen.id === job.id)));

    // No worker runs `alpha` here: a queued job does not end until it is cancelled.
    await assert.rejects(client.wait(first.job.id, { timeoutMs: 300 }), WaitTimeoutError);
    const cancelled = await client.cancel(first.job.id);
    assert.equal(cancelled.status, "cancelled");
    assert.equal((await client.wait(first.job.id, { timeoutMs: 10_000 })).status, "cancelled");
    await assert.rejects(
      client.cancel(first.job.id),
      (error) => error instanceof FloworkError && error.status === 409 && error.code === "not_cancellable",
    );
  });

  test("a 503 or 429 with Retry-After is retried with the same Idempotency-Key within the deadline", async () => {
    let refusals = 0;
    const proxy = await startProxy(base, (request) => {
      if (request.method === "POST" && request.url === "/jobs" && refusals < 2) {
        refusals += 1;
        const status = refusals === 1 ? 503 : 429;
        return { status, headers: { "retry-after": "1" }, body: { error: "draining", message: "busy" } };
      }
      return undefined;
    });
    try {
      const viaProxy = new Client({ baseUrl: proxy.base, token: ws.mint("alice") });
      const job = await viaProxy.enqueue("alpha", "echo", { retried: true });
      assert.equal(job.status, "queued");
      const posts = proxy.exchanges.filter((e) => e.request.url === "/jobs");
      assert.deepEqual(
        posts.map((e) => e.status),
        [503, 429, 201],
      );
      const keys = new Set(posts.map((e) => e.request.headers["idempotency-key"]));
      assert.equal(keys.size, 1, "every try carries the same Idempotency-Key");

      // Past the deadline the refusal is the caller's, with the gateway's Retry-After.
      refusals = 0;
      await assert.rejects(viaProxy.enqueue("alpha", "echo", {}, { retryWithinMs: 500 }), (error) => {
        assert.ok(error instanceof FloworkError);
        assert.equal(error.status, 503);
        assert.equal(error.retryAfterMs, 1_000);
        return true;
      });
    } finally {
      await proxy.close();
    }
  });
});
