// The Worker against the real gateway: results, progress, cancel, permanent and retryable failures, fencing,
// a gateway that is away, and worker processes that are SIGKILLed or SIGTERMed mid-job.

import assert from "node:assert/strict";
import { after, afterEach, before, describe, test } from "node:test";

import { Client, PermanentError, PROTOCOL_VERSION, Worker } from "../dist/index.js";
import { eventually, startProxy, Workspace } from "./harness.js";

/** A worker in this process, with its log lines kept. */
function inProcessWorker(gateway, engineId, token, options = {}) {
  const lines = [];
  const worker = new Worker({
    gateway,
    engineId,
    token,
    concurrency: 4,
    leaseMs: 900,
    waitMs: 500,
    handleSignals: false,
    log: (level, message, fields) => lines.push({ level, message, ...fields }),
    ...options,
  });
  return { worker, lines };
}

/** A promise and its resolver, for handlers that wait on the test. */
function gate() {
  let open;
  const promise = new Promise((resolve) => (open = resolve));
  return { promise, open };
}

describe("Worker", () => {
  let ws;
  let base;
  let client;
  const tokens = {};
  const workers = [];

  before(async () => {
    ws = new Workspace();
    for (const name of ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "kappa", "omega"]) tokens[name] = ws.addEngine(name, "alice");
    // Retries come back after tens of milliseconds instead of seconds.
    base = await ws.startGateway(["--retry-base-ms", "20", "--retry-cap-ms", "100"]);
    client = new Client({ baseUrl: base, token: ws.mint("alice") });
  });
  afterEach(async () => {
    await Promise.all(workers.splice(0).map((w) => w.stop()));
  });
  after(() => ws.close());

  function start(engineId, options) {
    const made = inProcessWorker(base, engineId, tokens[engineId], options);
    workers.push(made.worker);
    made.running = made.worker.run();
    return made;
  }

  test("an enqueued job runs in the worker and wait() sees its result", async () => {
    const { worker } = start("alpha");
    const seen = [];
    worker.handle("upper", async (payload, ctx) => {
      seen.push({ jobId: ctx.jobId, attempt: ctx.attempt, kind: ctx.kind, aborted: ctx.signal.aborted });
      return { text: payload.text.toUpperCase() };
    });
    const job = await client.enqueue("alpha", "upper", { text: "hi" });
    const done = await client.wait(job.id, { timeoutMs: 30_000 });
    assert.equal(done.status, "succeeded");
    assert.deepEqual(done.result, { text: "HI" });
    assert.deepEqual(seen, [{ jobId: job.id, attempt: 1, kind: "upper", aborted: false }]);

    // Many at once: outcomes that finish together go back in one batch call, and all arrive.
    const many = await Promise.all(Array.from({ length: 12 }, (_, i) => client.enqueue("alpha", "upper", { text: `n${i}` })));
    const finished = await Promise.all(many.map((j) => client.wait(j.id, { timeoutMs: 30_000 })));
    assert.deepEqual(
      finished.map((j) => j.result.text),
      many.map((_, i) => `N${i}`),
    );
  });

  test("progress reported by the handler reaches GET /jobs/{id} without waiting for the lease renewal", async () => {
    // A 120 s lease is renewed every 40 s, after the 30 s each wait below allows: the progress must go out on its own.
    const { worker } = start("beta", { leaseMs: 120_000 });
    const next = gate();
    const release = gate();
    worker.handle("long", async (_payload, ctx) => {
      ctx.progress(40, "reading input");
      await next.promise;
      ctx.progress(80, "writing output");
      await release.promise;
      return "ok";
    });
    const job = await client.enqueue("beta", "long", {});
    const running = await eventually("progress on GET /jobs/{id}", async () => {
      const now = await client.get(job.id);
      return now.progress ? now : undefined;
    });
    assert.equal(running.status, "running");
    assert.deepEqual(running.progress, { percent: 40, message: "reading input" });
    // A second report within the second after the first still goes out (a little later), not with the renewal.
    next.open();
    const later = await eventually("the second progress", async () => {
      const now = await client.get(job.id);
      return now.progress?.percent === 80 ? now : undefined;
    });
    assert.deepEqual(later.progress, { percent: 80, message: "writing output" });
    release.open();
    assert.equal((await client.wait(job.id, { timeoutMs: 30_000 })).status, "succeeded");
  });

  test("a cancel reaches the handler: its signal aborts and the job ends cancelled", async () => {
    const { worker } = start("gamma");
    const started = gate();
    const aborted = gate();
    worker.handle("stoppable", async (_payload, ctx) => {
      started.open();
      await new Promise((resolve) => ctx.signal.addEventListener("abort", resolve, { once: true }));
      aborted.open(ctx.signal.reason);
      throw ctx.signal.reason;
    });
    const job = await client.enqueue("gamma", "stoppable", {});
    await started.promise;
    const asked = await client.cancel(job.id);
    assert.equal(asked.cancel_requested, true);
    const reason = await aborted.promise;
    assert.equal(reason.code, "cancelled");
    const done = await client.wait(job.id, { timeoutMs: 30_000 });
    assert.equal(done.status, "cancelled");
    assert.equal(done.attempts, 1);
  });

  test("a PermanentError ends the job dead without retries; another error is retried", async () => {
    const { worker } = start("delta");
    let permanentCalls = 0;
    worker.handle("refuse", async () => {
      permanentCalls += 1;
      throw new PermanentError("the input can never work");
    });
    worker.handle("flaky", async (_payload, ctx) => {
      if (ctx.attempt < 3) throw new Error(`flaked on attempt ${ctx.attempt}`);
      return { attempt: ctx.attempt };
    });
    const refused = await client.enqueue("delta", "refuse", {}, { maxAttempts: 5 });
    const flaky = await client.enqueue("delta", "flaky", {}, { maxAttempts: 5 });
    const dead = await client.wait(refused.id, { timeoutMs: 30_000 });
    assert.equal(dead.status, "dead");
    assert.equal(dead.attempts, 1);
    assert.equal(dead.error, "the input can never work");
    assert.equal(permanentCalls, 1);
    const recovered = await client.wait(flaky.id, { timeoutMs: 30_000 });
    assert.equal(recovered.status, "succeeded");
    assert.deepEqual(recovered.result, { attempt: 3 });

    const unknown = await client.enqueue("delta", "no-such-kind", {}, { maxAttempts: 5 });
    const noHandler = await client.wait(unknown.id, { timeoutMs: 30_000 });
    assert.equal(noHandler.status, "dead");
    assert.equal(noHandler.attempts, 1);
    assert.match(noHandler.error, /no handler/);
  });

  test("a job past its timeout_ms fails retryably with its signal aborted; a result too large fails for good", async () => {
    const { worker } = start("epsilon");
    const reasons = [];
    worker.handle("stuck", async (_payload, ctx) => {
      await new Promise((resolve) => ctx.signal.addEventListener("abort", resolve, { once: true }));
      reasons.push(ctx.signal.reason.code);
    });
    worker.handle("huge", async () => "x".repeat(1_500_000));
    const stuck = await client.enqueue("epsilon", "stuck", {}, { timeoutMs: 200, maxAttempts: 2 });
    const huge = await client.enqueue("epsilon", "huge", {}, { maxAttempts: 3 });
    const timedOut = await client.wait(stuck.id, { timeoutMs: 30_000 });
    assert.equal(timedOut.status, "dead");
    assert.equal(timedOut.attempts, 2, "a timeout is retried");
    assert.equal(timedOut.error, "timed out after 200 ms");
    assert.deepEqual(reasons, ["timeout", "timeout"]);
    const tooLarge = await client.wait(huge.id, { timeoutMs: 30_000 });
    assert.equal(tooLarge.status, "dead");
    assert.equal(tooLarge.attempts, 1, "a result too large is not retried");
    assert.match(tooLarge.error, /too large/);
  });

  test("every engine call names the protocol version; a gateway that does not speak it stops the worker", async () => {
    let speaks = true;
    const proxy = await startProxy(base, (request) =>
      speaks
        ? undefined
        : { status: 400, body: { error: "unsupported_protocol", message: "this gateway speaks engine protocol major 2" } },
    );
    try {
      const made = inProcessWorker(proxy.base, "zeta", tokens.zeta);
      const running = made.worker.run();
      made.worker.handle("echo", (payload) => payload);
      const job = await client.enqueue("zeta", "echo", { v: 1 });
      await client.wait(job.id, { timeoutMs: 30_000 });
      const internal = proxy.exchanges.filter((e) => e.request.url.startsWith("/internal/"));
      assert.ok(internal.length >= 3, "whoami, claim and finish went through the proxy");
      assert.ok(internal.every((e) => e.request.headers["flowork-protocol"] === PROTOCOL_VERSION));
      speaks = false;
      await assert.rejects(running, (error) => error.code === "unsupported_protocol" && error.status === 400);
    } finally {
      await proxy.close();
    }
  });

  test("a worker whose finish is refused (409: its lease lapsed and another took the job) drops it and goes on", async () => {
    // Worker A reaches the gateway through a proxy that loses its heartbeats, so its lease lapses.
    let loseHeartbeats = true;
    const proxy = await startProxy(base, (request) =>
      loseHeartbeats && request.url.endsWith("/heartbeat") ? { status: 503 } : undefined,
    );
    try {
      // One slot, busy with the job: A does not claim the job back itself when its lease lapses.
      const a = inProcessWorker(proxy.base, "kappa", tokens.kappa, { concurrency: 1 });
      workers.push(a.worker);
      const aRun = a.worker.run();
      const release = gate();
      const aStarted = gate();
      a.worker.handle("race", async () => {
        aStarted.open();
        await release.promise;
        return { by: "a" };
      });
      const job = await client.enqueue("kappa", "race", {});
      await aStarted.promise;
      // B takes the job once A's lease has lapsed, and finishes it.
      const { worker: b } = start("kappa");
      b.handle("race", async () => ({ by: "b" }));
      const done = await client.wait(job.id, { timeoutMs: 30_000 });
      assert.deepEqual(done.result, { by: "b" });
      assert.equal(done.attempts, 2);
      // A's late finish carries its old lease token: the gateway refuses it and A drops the job.
      release.open();
      await eventually("A's refused finish", () =>
        proxy.exchanges.find((e) => e.request.url.includes("finish") && e.status === 409),
      );
      await eventually("A's log line", () => a.lines.find((l) => l.message.includes("lease was lost") && l.job_id === job.id));
      assert.deepEqual((await client.get(job.id)).result, { by: "b" }, "the refused report changed nothing");
      // A goes on working.
      await b.stop();
      loseHeartbeats = false;
      a.worker.handle("race", async () => ({ by: "a" }));
      const next = await client.enqueue("kappa", "race", {});
      assert.deepEqual((await client.wait(next.id, { timeoutMs: 30_000 })).result, { by: "a" });
      await a.worker.stop();
      await aRun;
    } finally {
      await proxy.close();
    }
  });

  test("a gateway that is away is waited out with backoff", async () => {
    let away = true;
    const proxy = await startProxy(base, (request) =>
      away && request.url === "/internal/claim"
        ? { status: 503, headers: { "retry-after": "0" }, body: { error: "unavailable", message: "away" } }
        : undefined,
    );
    try {
      const made = inProcessWorker(proxy.base, "omega", tokens.omega);
      workers.push(made.worker);
      const running = made.worker.run();
      made.worker.handle("echo", (payload) => payload);
      const job = await client.enqueue("omega", "echo", { back: true });
      await eventually("three refused claims", () => proxy.exchanges.filter((e) => e.refused).length >= 3);
      assert.equal((await client.get(job.id)).status, "queued");
      assert.ok(made.lines.some((l) => l.message === "claim failed" && l.level === "warn"));
      away = false;
      assert.deepEqual((await client.wait(job.id, { timeoutMs: 30_000 })).result, { back: true });
      await made.worker.stop();
      await running;
    } finally {
      await proxy.close();
    }
  });

  test("a token of another engine is refused at start", async () => {
    const made = inProcessWorker(base, "alpha", tokens.beta);
    await assert.rejects(made.worker.run(), (error) => error.code === "wrong_engine");
    const bad = inProcessWorker(base, "alpha", "fwe_not-a-token");
    await assert.rejects(bad.worker.run(), (error) => error.status === 401);
  });
});

describe("Worker processes", () => {
  let ws;
  let base;
  let client;
  let token;

  before(async () => {
    ws = new Workspace();
    token = ws.addEngine("proc", "alice");
    base = await ws.startGateway();
    client = new Client({ baseUrl: base, token: ws.mint("alice") });
  });
  after(() => ws.close());

  test("a worker SIGKILLed mid-job: the job is leased again after the lease lapses; the old lease's finish is refused", async () => {
    // The killed worker talks through a proxy, so the test knows the lease token it held.
    const proxy = await startProxy(base);
    try {
      const doomed = ws.startWorker(proxy.base, "proc", token, { LEASE_MS: "1000" });
      const job = await client.enqueue("proc", "slow", { ms: 60_000 });
      await eventually("the job to start", () => doomed.stdout.includes(`started ${job.id}`));
      const claim = proxy.exchanges.find((e) => e.request.url === "/internal/claim" && e.body?.includes(job.id));
      const oldLease = JSON.parse(claim.body).leases.find((l) => l.job.id === job.id).lease_token;
      doomed.kill("SIGKILL");
      await doomed.exit;

      // The rescuer's lease is long, so on a busy machine it cannot lapse too and make a third attempt.
      const rescuer = ws.startWorker(base, "proc", token, { LEASE_MS: "10000" });
      await eventually("the job to start again", () => rescuer.stdout.includes(`started ${job.id}`));
      const late = await fetch(`${base}/internal/jobs/${job.id}/finish`, {
        method: "POST",
        headers: { "x-engine-token": token, "content-type": "application/json" },
        body: JSON.stringify({ lease_token: oldLease, outcome: "succeeded", result: { stale: true } }),
      });
      assert.equal(late.status, 409);
      assert.equal((await late.json()).error, "lease_lost");
      const now = await client.get(job.id);
      assert.equal(now.status, "running");
      // 2, or 3 when the killed worker's own long poll (still open at the gateway for up to its wait) was handed
      // the job as its lease lapsed: that lease lapses too, and the rescuer's attempt is the third.
      assert.ok(now.attempts >= 2 && now.attempts <= 3, `attempts ${now.attempts}`);
      rescuer.kill("SIGKILL");
    } finally {
      await proxy.close();
    }
  });

  test("a worker SIGTERMed mid-job stops claiming, finishes the job, then exits", async () => {
    // An engine of its own: the job the test before left behind (its worker killed) must not come first.
    const ownToken = ws.addEngine("proc2", "alice");
    const worker = ws.startWorker(base, "proc2", ownToken, { LEASE_MS: "1000" });
    const job = await client.enqueue("proc2", "slow", { ms: 1_500 });
    await eventually("the job to start", () => worker.stdout.includes(`started ${job.id}`));
    worker.kill("SIGTERM");
    // Enqueued once the worker has taken the signal (on a busy machine that can be later than kill() returns; a
    // claim answered before it is the worker's to run): a draining worker must not take it.
    await eventually("the worker to stop claiming", () => worker.stderr.includes("stop requested"));
    const later = await client.enqueue("proc2", "slow", { ms: 10 });
    const exit = await worker.exit;
    assert.deepEqual(exit, { code: 0, signal: null }, worker.stderr);
    assert.ok(worker.stdout.trim().endsWith("drained"), worker.stdout);
    const done = await client.get(job.id);
    assert.equal(done.status, "succeeded");
    assert.deepEqual(done.result, { slept: 1_500, attempt: 1 });
    // The draining worker never ran it; had its abandoned long poll been handed the job, the lease lapses (1 s)
    // and the job is queued again for another worker.
    assert.ok(!worker.stdout.includes(`started ${later.id}`), worker.stdout);
    await eventually("the later job queued", async () => (await client.get(later.id)).status === "queued", 15_000);
  });
});
