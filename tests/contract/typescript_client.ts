// Every public route of a running gateway through TypeScript types that openapi-typescript generated from its
// /openapi.json, called with openapi-fetch: this file must type-check with `tsc --strict` against them, and each
// answer must come with a documented status and carry the expected values. tests/tests/openapi_clients.rs
// generates `schema.ts` beside a copy of this file, compiles both and runs the result with the gateway's URL, a
// user token (the owner of the engine), an admin token and the engine's token in the environment.

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { Wallet } from "ethers";
import createClient from "openapi-fetch";
import type { components, paths } from "./schema.js";

type Schemas = components["schemas"];

function env(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

const BASE = env("FLOWORK_URL");
const ENGINE = env("FLOWORK_ENGINE");
const bearer = (token: string) => createClient<paths>({ baseUrl: BASE, headers: { Authorization: `Bearer ${token}` } });
const owner = bearer(env("FLOWORK_USER_TOKEN"));
const admin = bearer(env("FLOWORK_ADMIN_TOKEN"));
const engine = createClient<paths>({ baseUrl: BASE, headers: { "X-Engine-Token": env("FLOWORK_ENGINE_TOKEN") } });
const anonymous = createClient<paths>({ baseUrl: BASE });
const routes = new Set<string>();

/** The body of a successful answer, after checking its status. */
function ok<T>(route: string, status: number, result: { data?: T; error?: unknown; response: Response }): T {
  routes.add(route);
  assert.equal(result.response.status, status, `${route}: ${JSON.stringify(result.error)}`);
  assert.ok(result.data !== undefined, `${route}: no body`);
  return result.data;
}

/** The error body of a refused request, after checking its status and code. */
function refused(
  route: string,
  status: number,
  code: string,
  result: { error?: Schemas["ErrorBody"]; response: Response },
): Schemas["ErrorBody"] {
  routes.add(route);
  assert.equal(result.response.status, status, `${route}: ${JSON.stringify(result.error)}`);
  const error = result.error;
  assert.ok(error !== undefined && typeof error.message === "string", `${route}: no error body`);
  assert.equal(error.error, code, `${route}: ${error.message}`);
  return error;
}

function rfc3339(at: Date): string {
  return at.toISOString();
}

/** A job's place in the queue, which a queued job carries. */
function position(job: Schemas["Job"]): number {
  assert.equal(job.status, "queued");
  assert.equal(typeof job.queue_position, "number", `no queue_position: ${JSON.stringify(job)}`);
  return job.queue_position as number;
}

/** `GET /auth/nonce`, a wallet's EIP-4361 message and `POST /auth/verify`. */
async function signIn(): Promise<{ user: string; tokens: Schemas["Tokens"] }> {
  const nonce = ok("GET /auth/nonce", 200, await anonymous.GET("/auth/nonce"));
  assert.match(nonce.nonce, /^[0-9a-f]{32}$/);
  assert.ok(Date.parse(nonce.expires_at) > Date.now());
  const wallet = Wallet.createRandom();
  const now = new Date();
  const domain = BASE.split("://")[1];
  const message =
    `${domain} wants you to sign in with your Ethereum account:\n${wallet.address}\n\nSign in to Flowork.\n\n` +
    `URI: ${BASE}\nVersion: 1\nChain ID: 1\nNonce: ${nonce.nonce}\nIssued At: ${rfc3339(now)}\n` +
    `Expiration Time: ${rfc3339(new Date(now.getTime() + 300_000))}`;
  const body: Schemas["VerifyRequest"] = { message, signature: await wallet.signMessage(message) };
  const params = { header: { Origin: BASE } };
  const tokens = ok("POST /auth/verify", 200, await anonymous.POST("/auth/verify", { params, body }));
  assert.equal(tokens.token_type, "Bearer");
  assert.equal(tokens.user, wallet.address.toLowerCase());
  assert.ok(tokens.expires_in > 0);
  refused("POST /auth/verify", 401, "nonce_reused", await anonymous.POST("/auth/verify", { params, body }));
  return { user: tokens.user, tokens };
}

async function main(): Promise<void> {
  // The probes, the status and this document.
  assert.equal(ok("GET /healthz", 200, await anonymous.GET("/healthz")).status, "ok");
  assert.equal(ok("GET /readyz", 200, await anonymous.GET("/readyz")).status, "ready");
  const status = ok("GET /status", 200, await anonymous.GET("/status"));
  const mine = status.engines.find((e) => e.id === ENGINE);
  assert.ok(mine && "paused" in mine && mine.active && !mine.paused && status.schema.control > 0);
  assert.equal(ok("GET /drain", 200, await anonymous.GET("/drain")).draining, false);
  const metrics = ok("GET /metrics", 200, await anonymous.GET("/metrics", { parseAs: "text" }));
  assert.ok(metrics.includes("flowork_"));
  const document = ok("GET /openapi.json", 200, await anonymous.GET("/openapi.json"));
  assert.ok(typeof document === "object" && document !== null);

  // Sign-in with a wallet; the owner lets the new user submit to the engine.
  const { user, tokens } = await signIn();
  const wallet = bearer(tokens.access_token);
  const empty = ok("GET /jobs", 200, await wallet.GET("/jobs"));
  assert.deepEqual([empty.jobs, empty.next_cursor], [[], null]);
  const walletPost = { params: { header: { "Idempotency-Key": "w1" } }, body: { engine: ENGINE, kind: "echo" } };
  refused("POST /jobs", 403, "not_whitelisted", await wallet.POST("/jobs", walletPost));
  const users = { params: { path: { id: ENGINE, user } } };
  const whitelist = ok("PUT /engines/{id}/users/{user}", 200, await owner.PUT("/engines/{id}/users/{user}", users));
  assert.ok(whitelist.users.some((u) => u.user === user && !u.owner));
  const owners = whitelist.users.filter((u) => u.owner).map((u) => u.user);
  const walletJob = ok("POST /jobs", 201, await wallet.POST("/jobs", walletPost));
  assert.equal(walletJob.user, user);
  const refreshBody = { body: { refresh_token: tokens.refresh_token } };
  const refreshed = ok("POST /auth/refresh", 200, await anonymous.POST("/auth/refresh", refreshBody));
  assert.notEqual(refreshed.refresh_token, tokens.refresh_token);
  const logout = { body: { refresh_token: refreshed.refresh_token } };
  assert.equal(ok("POST /auth/logout", 200, await anonymous.POST("/auth/logout", logout)).revoked, true);
  const again = await anonymous.POST("/auth/refresh", logout);
  assert.equal(again.response.status, 401);
  assert.ok(again.error?.error.startsWith("refresh_"), JSON.stringify(again.error));

  // API keys: made, listed, used within their scope, deleted.
  const keyBody: Schemas["CreateKeyRequest"] = { name: "contract test", scopes: ["jobs:read"], ttl: "1h" };
  const key = ok("POST /auth/keys", 201, await owner.POST("/auth/keys", { body: keyBody }));
  assert.ok(key.key.startsWith("fwk_") && key.expires_at !== null);
  assert.deepEqual(key.scopes, ["jobs:read"]);
  const keys = ok("GET /auth/keys", 200, await owner.GET("/auth/keys"));
  assert.deepEqual(keys.keys.map((k) => k.id), [key.id]);
  const withKey = bearer(key.key);
  ok("GET /jobs", 200, await withKey.GET("/jobs", { params: { query: { limit: 1 } } }));
  const keyPost = { params: { header: { "Idempotency-Key": "k" } }, body: { engine: ENGINE, kind: "echo" } };
  refused("POST /jobs", 403, "missing_scope", await withKey.POST("/jobs", keyPost));
  const deleted = ok("DELETE /auth/keys/{id}", 200, await owner.DELETE("/auth/keys/{id}", { params: { path: { id: key.id } } }));
  assert.deepEqual([deleted.id, deleted.deleted], [key.id, true]);
  refused("GET /jobs", 401, "invalid_key", await withKey.GET("/jobs"));

  // Jobs: created with its place in the queue, replayed, read, listed, batched, cancelled.
  const body: Schemas["EnqueueRequest"] = {
    engine: ENGINE,
    kind: "echo",
    payload: { n: 1 },
    priority: 1,
    max_attempts: 3,
    timeout_ms: 60000,
  };
  const post = { params: { header: { "Idempotency-Key": "ts-1" } }, body };
  const created = await owner.POST("/jobs", post);
  const job = ok("POST /jobs", 201, created);
  assert.deepEqual([job.payload, job.max_attempts], [{ n: 1 }, 3]);
  assert.equal(job.status, "queued");
  assert.equal(created.response.headers.get("location"), `/jobs/${job.id}`);
  const replay = await owner.POST("/jobs", post);
  assert.equal(ok("POST /jobs", 200, replay).id, job.id);
  assert.equal(replay.response.headers.get("idempotent-replayed"), "true");
  const byId = (id: string) => ({ params: { path: { id } } });
  const read = ok("GET /jobs/{id}", 200, await owner.GET("/jobs/{id}", byId(job.id)));
  assert.deepEqual([read.id, read.enqueued_at], [job.id, job.enqueued_at]);
  position(read);
  refused("GET /jobs/{id}", 404, "job_not_found", await owner.GET("/jobs/{id}", byId(randomUUID())));
  const query = { params: { query: { status: "queued" as const, engine: ENGINE, limit: 500 } } };
  const page = ok("GET /jobs", 200, await owner.GET("/jobs", query));
  assert.ok(page.jobs.some((j) => j.id === job.id));
  refused("GET /jobs", 400, "invalid_limit", await owner.GET("/jobs", { params: { query: { limit: 501 } } }));
  const items: Schemas["BatchJob"][] = [
    { engine: ENGINE, kind: "echo", idempotency_key: "ts-b1", payload: { n: 2 } },
    { engine: ENGINE, kind: "echo", idempotency_key: "ts-b2" },
    { engine: "no-such-engine", kind: "echo", idempotency_key: "ts-b3" },
  ];
  const batch = ok("POST /jobs/batch", 200, await owner.POST("/jobs/batch", { body: { jobs: items } }));
  const [first, second, third] = batch.results;
  assert.ok("job" in first && first.status === 201);
  assert.equal(first.job.status, "queued");
  assert.ok("job" in second && second.job.payload === null);
  assert.ok("error" in third && third.status === 422 && third.error === "unknown_engine");
  const cancel = (id: string) => owner.POST("/jobs/{id}/cancel", byId(id));
  assert.equal(ok("POST /jobs/{id}/cancel", 200, await cancel(second.job.id)).status, "cancelled");
  refused("POST /jobs/{id}/cancel", 409, "not_cancellable", await cancel(second.job.id));

  // Schedules.
  const scheduleBody: Schemas["ScheduleRequest"] = {
    engine: ENGINE,
    kind: "echo",
    cron: "0 0 1 1 *",
    timezone: "UTC",
    missed: "skip",
  };
  const schedule = ok("POST /schedules", 201, await owner.POST("/schedules", { body: scheduleBody }));
  assert.ok(schedule.cron === "0 0 1 1 *" && schedule.missed === "skip" && schedule.next_run_at !== null);
  const schedules = ok("GET /schedules", 200, await owner.GET("/schedules"));
  assert.ok(schedules.schedules.some((s) => s.id === schedule.id));
  const removeSchedule = () => owner.DELETE("/schedules/{id}", byId(schedule.id));
  assert.equal(ok("DELETE /schedules/{id}", 200, await removeSchedule()).deleted, true);
  refused("DELETE /schedules/{id}", 404, "schedule_not_found", await removeSchedule());

  // The engine's settings, by its owner.
  const theEngine = { params: { path: { id: ENGINE } } };
  assert.equal(ok("POST /engines/{id}/pause", 200, await owner.POST("/engines/{id}/pause", theEngine)).paused, true);
  const settings = ok("GET /engines/{id}/scheduling", 200, await owner.GET("/engines/{id}/scheduling", theEngine));
  assert.ok(settings.paused && settings.default_weight === 1);
  assert.equal(ok("POST /engines/{id}/resume", 200, await owner.POST("/engines/{id}/resume", theEngine)).paused, false);
  const listed = ok("GET /engines/{id}/users", 200, await owner.GET("/engines/{id}/users", theEngine));
  assert.deepEqual(listed.users.filter((u) => u.owner).map((u) => u.user), owners);
  const removed = ok("DELETE /engines/{id}/users/{user}", 200, await owner.DELETE("/engines/{id}/users/{user}", users));
  assert.ok(!removed.users.some((u) => u.user === user));
  const bob = { params: { path: { id: ENGINE, user: "bob" } } };
  const weighted = ok("PUT /engines/{id}/weights/{user}", 200, await owner.PUT("/engines/{id}/weights/{user}", { ...bob, body: { weight: 3 } }));
  assert.equal(weighted.weights["bob"], 3);
  const zero = await owner.PUT("/engines/{id}/weights/{user}", { ...bob, body: { weight: 0 } });
  refused("PUT /engines/{id}/weights/{user}", 422, "invalid_weight", zero);
  const limit = { ...theEngine, body: { default_limit: 5 } };
  const limited = ok("PUT /engines/{id}/concurrency", 200, await owner.PUT("/engines/{id}/concurrency", limit));
  assert.equal(limited.default_key_limit, 5);
  const tenant = { params: { path: { id: ENGINE, key: "tenant-1" } } };
  const keyed = await owner.PUT("/engines/{id}/concurrency/{key}", { ...tenant, body: { limit: 2 } });
  assert.deepEqual(ok("PUT /engines/{id}/concurrency/{key}", 200, keyed).key_limits, [{ key: "tenant-1", limit: 2, running: 0 }]);
  const unkeyed = await owner.DELETE("/engines/{id}/concurrency/{key}", tenant);
  assert.deepEqual(ok("DELETE /engines/{id}/concurrency/{key}", 200, unkeyed).key_limits, []);
  const breakers = ok("GET /engines/{id}/breakers", 200, await owner.GET("/engines/{id}/breakers", theEngine));
  assert.deepEqual([breakers.engine, breakers.breakers], [ENGINE, []]);
  const missing = { params: { path: { id: "no-such-engine" } } };
  refused("POST /engines/{id}/pause", 404, "engine_not_found", await owner.POST("/engines/{id}/pause", missing));

  // The operator's API.
  const engines = ok("GET /admin/engines", 200, await admin.GET("/admin/engines"));
  assert.ok(engines.engines.some((e) => e.id === ENGINE && e.active));
  const carol = { params: { path: { id: ENGINE, user: "carol" } } };
  const added = ok("PUT /admin/engines/{id}/users/{user}", 200, await admin.PUT("/admin/engines/{id}/users/{user}", carol));
  assert.ok(added.users.some((u) => u.user === "carol"));
  const dropped = ok("DELETE /admin/engines/{id}/users/{user}", 200, await admin.DELETE("/admin/engines/{id}/users/{user}", carol));
  assert.ok(!dropped.users.some((u) => u.user === "carol"));
  const audit = ok("GET /admin/audit", 200, await admin.GET("/admin/audit", { params: { query: { limit: 1000 } } }));
  assert.ok(audit.entries.some((e) => e.action === "auth.verify"));
  const verdict = ok("GET /admin/audit/verify", 200, await admin.GET("/admin/audit/verify"));
  assert.ok(verdict.intact && verdict.rows > 0);
  refused("GET /admin/engines", 401, "invalid_token", await owner.GET("/admin/engines"));

  // The engine protocol: claim, heartbeat with progress, a cancel while running, finish one and a batch.
  assert.equal(ok("GET /internal/whoami", 200, await engine.GET("/internal/whoami")).engine_id, ENGINE);
  const claim: Schemas["ClaimRequest"] = { max: 100, wait_ms: 0, lease_ms: 30000, worker: "contract-test" };
  const { leases } = ok("POST /internal/claim", 200, await engine.POST("/internal/claim", { body: claim }));
  const lease = new Map(leases.map((l) => [l.job.id, l.lease_token]));
  assert.deepEqual([...lease.keys()].sort(), [job.id, first.job.id, walletJob.id].sort());
  const token = (id: string) => lease.get(id) ?? "";
  const heartbeat = (id: string, body: Schemas["HeartbeatRequest"]) =>
    engine.POST("/internal/jobs/{id}/heartbeat", { ...byId(id), body });
  const progress = { lease_token: token(job.id), lease_ms: 30000, progress: { percent: 50, message: "half" } };
  const beat = ok("POST /internal/jobs/{id}/heartbeat", 200, await heartbeat(job.id, progress));
  assert.equal(beat.cancel_requested, false);
  const running = ok("GET /jobs/{id}", 200, await owner.GET("/jobs/{id}", byId(job.id)));
  assert.equal(running.status, "running");
  assert.deepEqual(running.progress, { percent: 50, message: "half" });
  const asked = ok("POST /jobs/{id}/cancel", 202, await cancel(first.job.id));
  assert.equal(asked.cancel_requested, true);
  const told = await heartbeat(first.job.id, { lease_token: token(first.job.id), lease_ms: 30000 });
  assert.equal(ok("POST /internal/jobs/{id}/heartbeat", 200, told).cancel_requested, true);
  const stale = await heartbeat(job.id, { lease_token: "fwl_not-a-lease", lease_ms: 30000 });
  refused("POST /internal/jobs/{id}/heartbeat", 409, "lease_lost", stale);
  const done: Schemas["FinishRequest"] = { lease_token: token(job.id), outcome: "succeeded", result: { n: 1, ok: true } };
  const finished = await engine.POST("/internal/jobs/{id}/finish", { ...byId(job.id), body: done });
  assert.equal(ok("POST /internal/jobs/{id}/finish", 200, finished).status, "succeeded");
  const finishes: Schemas["FinishItem"][] = [
    { job_id: first.job.id, report: { lease_token: token(first.job.id), outcome: "cancelled" } },
    { job_id: walletJob.id, report: { lease_token: token(walletJob.id), outcome: "failed", error: "boom", retryable: false } },
  ];
  const results = ok("POST /internal/finish", 200, await engine.POST("/internal/finish", { body: { finishes } })).results;
  assert.deepEqual(
    results.map((r) => [r.job_id, r.status]),
    [
      [first.job.id, "cancelled"],
      [walletJob.id, "dead"],
    ],
  );
  const succeeded = ok("GET /jobs/{id}", 200, await owner.GET("/jobs/{id}", byId(job.id)));
  assert.deepEqual([succeeded.status, succeeded.result], ["succeeded", { n: 1, ok: true }]);
  assert.ok(succeeded.finished_at);

  // Operating jobs: the attempt history, retry of a dead job, delete of a final one, counts, a bulk action.
  const history = ok("GET /jobs/{id}/attempts", 200, await owner.GET("/jobs/{id}/attempts", byId(job.id)));
  assert.deepEqual(
    history.attempts.map((a) => [a.number, a.outcome, a.worker]),
    [[1, "succeeded", "contract-test"]],
  );
  refused("GET /jobs/{id}/attempts", 404, "job_not_found", await owner.GET("/jobs/{id}/attempts", byId(randomUUID())));
  const retried = ok("POST /jobs/{id}/retry", 200, await owner.POST("/jobs/{id}/retry", byId(first.job.id)));
  assert.deepEqual([retried.status, retried.attempts], ["queued", 0]);
  refused("POST /jobs/{id}/retry", 409, "not_retryable", await owner.POST("/jobs/{id}/retry", byId(first.job.id)));
  refused("DELETE /jobs/{id}", 409, "job_not_final", await owner.DELETE("/jobs/{id}", byId(first.job.id)));
  const deletedJob = await owner.DELETE("/jobs/{id}", byId(second.job.id));
  routes.add("DELETE /jobs/{id}");
  assert.equal(deletedJob.response.status, 204);
  refused("GET /jobs/{id}", 404, "job_not_found", await owner.GET("/jobs/{id}", byId(second.job.id)));
  const counts = ok("GET /jobs/counts", 200, await owner.GET("/jobs/counts", { params: { query: { engine: ENGINE } } }));
  assert.ok(counts.succeeded === 1 && counts.queued >= 1, JSON.stringify(counts));
  refused("GET /jobs/counts", 400, "invalid_engine", await owner.GET("/jobs/counts", { params: { query: { engine: "BAD" } } }));
  const stats = ok("GET /jobs/stats", 200, await owner.GET("/jobs/stats", { params: { query: { engine: ENGINE, window: "15m" } } }));
  assert.ok(stats.buckets.length === 15 && stats.totals.succeeded >= 1 && stats.totals.enqueued >= 2, JSON.stringify(stats.totals));
  refused("GET /jobs/stats", 400, "invalid_window", await owner.GET("/jobs/stats", { params: { query: { window: "30s" } } }));
  const bulkBody: Schemas["BulkRequest"] = { action: "cancel", filter: { engine: ENGINE, status: "queued" } };
  const bulk = ok("POST /jobs/bulk", 200, await owner.POST("/jobs/bulk", { body: bulkBody }));
  assert.ok(bulk.matched === bulk.changed && bulk.changed >= 1, JSON.stringify(bulk));
  refused("POST /jobs/bulk", 422, "invalid_action", await owner.POST("/jobs/bulk", { body: { action: "purge", ids: [job.id] } }));

  // Drain last: new jobs are refused until it ends.
  assert.equal(ok("POST /admin/drain", 200, await admin.POST("/admin/drain")).draining, true);
  const late = await owner.POST("/jobs", { params: { header: { "Idempotency-Key": "ts-late" } }, body: { engine: ENGINE, kind: "echo" } });
  refused("POST /jobs", 503, "draining", late);
  assert.ok(Number(late.response.headers.get("retry-after")) > 0);
  refused("GET /readyz", 503, "draining", await anonymous.GET("/readyz"));
  assert.equal(ok("GET /drain", 200, await anonymous.GET("/drain")).draining, true);
  assert.equal(ok("DELETE /admin/drain", 200, await admin.DELETE("/admin/drain")).draining, false);

  console.log(`typescript client: ${routes.size} routes answered as documented`);
  for (const route of [...routes].sort()) console.log(`  ${route}`);
}

await main();
