/**
 * The public API as a user's program sees it: enqueue (idempotent, retried), batch, get, list, wait, cancel, and
 * operating jobs: retry, delete, attempts, counts, bulk.
 */

import { randomUUID } from "node:crypto";

import { FloworkError, WaitTimeoutError } from "./errors.js";
import { fetchTrusting, type Fetch } from "./fetcher.js";
import { call, fullJitterMs, sleep, type Answer, type CallOptions } from "./http.js";
import { USER_AGENT } from "./protocol.js";
import {
  FINAL_STATUSES,
  type BatchItem,
  type BatchResult,
  type EnqueueOptions,
  type Job,
  type BulkResult,
  type JobAttempt,
  type JobCounts,
  type JobStats,
  type JobFilter,
  type JobPage,
  type ListOptions,
} from "./types.js";

/** How to reach the gateway as a user. */
export interface ClientOptions {
  /** The gateway's base URL, e.g. `http://127.0.0.1:8080`. */
  baseUrl: string;
  /** A user access token (`flowork-gateway token mint`, the sign-in's `access_token`) or an API key. */
  token: string;
  /** The longest one HTTP call may take; default 30 s. */
  requestTimeoutMs?: number;
  /** A PEM file of certificate authorities to trust besides the public ones (a gateway with a self-signed certificate). */
  caFile?: string;
}

/** Default time `enqueue` keeps retrying a busy or away gateway. */
const DEFAULT_RETRY_WITHIN_MS = 30_000;

/** Calls the public API on behalf of one user. */
export class Client {
  readonly baseUrl: string;
  readonly #token: string;
  readonly #timeoutMs: number;
  readonly #fetch: Fetch;

  constructor(options: ClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.#token = options.token;
    this.#timeoutMs = options.requestTimeoutMs ?? 30_000;
    this.#fetch = fetchTrusting(options.caFile);
  }

  async #call<T>(method: CallOptions["method"], path: string, body?: unknown, headers: Record<string, string> = {}) {
    const options: CallOptions = {
      method,
      headers: { authorization: `Bearer ${this.#token}`, "user-agent": USER_AGENT, ...headers },
      timeoutMs: this.#timeoutMs,
      fetch: this.#fetch,
    };
    if (body !== undefined) options.body = body;
    return call<T>(this.baseUrl, path, options);
  }

  /**
   * Submits a job (`POST /jobs`). The Idempotency-Key (made when not given) makes every retry safe: a gateway that
   * answers 429 or 503 (or 409 while the first request with the key is in progress), or cannot be reached, is
   * asked again after its `Retry-After` until `retryWithinMs` has passed; a replay answers the same job.
   */
  async enqueue(engine: string, kind: string, payload?: unknown, options: EnqueueOptions = {}): Promise<Job> {
    const body: Record<string, unknown> = { engine, kind, ...jobFields(options) };
    if (payload !== undefined) body["payload"] = payload;
    const headers: Record<string, string> = { "idempotency-key": options.idempotencyKey ?? randomUUID() };
    if (options.traceparent !== undefined) headers["traceparent"] = options.traceparent;
    const answer = await this.#retrying(options.retryWithinMs ?? DEFAULT_RETRY_WITHIN_MS, () =>
      this.#call<Job>("POST", "/jobs", body, headers),
    );
    return answer.body;
  }

  /**
   * Submits up to 1,000 jobs in one call (`POST /jobs/batch`); each item gets its own Idempotency-Key when it has
   * none, so the whole call is retried like `enqueue`. One result per item, in order.
   */
  async enqueueBatch(items: BatchItem[], options: { retryWithinMs?: number } = {}): Promise<BatchResult[]> {
    const jobs = items.map((item) => {
      const job: Record<string, unknown> = {
        engine: item.engine,
        kind: item.kind,
        idempotency_key: item.idempotencyKey ?? randomUUID(),
        ...jobFields(item),
      };
      if (item.payload !== undefined) job["payload"] = item.payload;
      return job;
    });
    const answer = await this.#retrying(options.retryWithinMs ?? DEFAULT_RETRY_WITHIN_MS, () =>
      this.#call<{ results: BatchResult[] }>("POST", "/jobs/batch", { jobs }),
    );
    return answer.body.results;
  }

  /** One of the caller's jobs (`GET /jobs/{id}`); a `FloworkError` `job_not_found` (404) otherwise. */
  async get(id: string): Promise<Job> {
    return (await this.#call<Job>("GET", `/jobs/${encodeURIComponent(id)}`)).body;
  }

  /** A page of the caller's jobs, newest first (`GET /jobs`); pass `next_cursor` as `cursor` for the next one. */
  async list(options: ListOptions = {}): Promise<JobPage> {
    const query = new URLSearchParams(filterFields(options));
    for (const name of ["limit", "cursor"] as const) {
      if (options[name] !== undefined) query.set(name, String(options[name]));
    }
    const text = query.toString();
    return (await this.#call<JobPage>("GET", text ? `/jobs?${text}` : "/jobs")).body;
  }

  /**
   * Puts a `dead` or `cancelled` job back in the queue now (`POST /jobs/{id}/retry`), same id, with a fresh budget
   * of attempts; a `FloworkError` `not_retryable` (409) for a job in another state.
   */
  async retry(id: string): Promise<Job> {
    return (await this.#call<Job>("POST", `/jobs/${encodeURIComponent(id)}/retry`)).body;
  }

  /** Deletes a final job with its history (`DELETE /jobs/{id}`); `job_not_final` (409) for a queued or running one. */
  async delete(id: string): Promise<void> {
    await this.#call<null>("DELETE", `/jobs/${encodeURIComponent(id)}`);
  }

  /** Every attempt of a job, oldest first (`GET /jobs/{id}/attempts`). */
  async attempts(id: string): Promise<JobAttempt[]> {
    return (await this.#call<{ attempts: JobAttempt[] }>("GET", `/jobs/${encodeURIComponent(id)}/attempts`)).body
      .attempts;
  }

  /** How many of the caller's jobs are in each state, on one engine or all (`GET /jobs/counts`). */
  async counts(engine?: string): Promise<JobCounts> {
    const path = engine === undefined ? "/jobs/counts" : `/jobs/counts?engine=${encodeURIComponent(engine)}`;
    return (await this.#call<JobCounts>("GET", path)).body;
  }

  /**
   * The caller's jobs per minute over `window` (`1m` to `24h`, default `1h`), on one engine or all
   * (`GET /jobs/stats`).
   */
  async stats(options: { engine?: string; window?: string } = {}): Promise<JobStats> {
    const query = new URLSearchParams();
    if (options.engine !== undefined) query.set("engine", options.engine);
    if (options.window !== undefined) query.set("window", options.window);
    const suffix = query.toString() === "" ? "" : `?${query}`;
    return (await this.#call<JobStats>("GET", `/jobs/stats${suffix}`)).body;
  }

  /**
   * Retries, cancels or deletes many of the caller's jobs (`POST /jobs/bulk`): the given ids (at most 1,000), or
   * every job the filter selects.
   */
  async bulk(action: "retry" | "cancel" | "delete", selection: { ids: string[] } | JobFilter): Promise<BulkResult> {
    const body = "ids" in selection ? { action, ids: selection.ids } : { action, filter: filterFields(selection) };
    return (await this.#call<BulkResult>("POST", "/jobs/bulk", body)).body;
  }

  /**
   * Polls `GET /jobs/{id}` until the job is final (`succeeded`, `dead` or `cancelled`) and returns it; a
   * `WaitTimeoutError` after `timeoutMs` (default 60 s). Brief gateway trouble is waited out, not thrown.
   */
  async wait(id: string, options: { timeoutMs?: number; pollMs?: number; signal?: AbortSignal } = {}): Promise<Job> {
    const timeoutMs = options.timeoutMs ?? 60_000;
    const deadline = Date.now() + timeoutMs;
    let pollMs = Math.min(options.pollMs ?? 50, 1_000);
    for (;;) {
      try {
        const job = await this.get(id);
        if (FINAL_STATUSES.includes(job.status)) return job;
      } catch (error) {
        if (!(error instanceof FloworkError && error.transient)) throw error;
      }
      if (options.signal?.aborted) throw options.signal.reason;
      const left = deadline - Date.now();
      if (left <= 0) throw new WaitTimeoutError(id, timeoutMs);
      await sleep(Math.min(pollMs, left), options.signal);
      // Poll quickly at first (most jobs are short), then back off to a poll a second.
      pollMs = Math.min(pollMs * 2, options.pollMs ?? 1_000);
    }
  }

  /**
   * Cancels a job (`POST /jobs/{id}/cancel`): a queued one at once; for a running one the engine is asked to stop it
   * (its handler's `ctx.signal` aborts) and the answer has `cancel_requested`. A final job is a `FloworkError`
   * `not_cancellable` (409).
   */
  async cancel(id: string): Promise<Job> {
    return (await this.#call<Job>("POST", `/jobs/${encodeURIComponent(id)}/cancel`)).body;
  }

  /** Runs `send` again on a transient refusal (429, 503, 409 `idempotency_key_in_progress`, no answer). */
  async #retrying<T>(withinMs: number, send: () => Promise<Answer<T>>): Promise<Answer<T>> {
    const deadline = Date.now() + withinMs;
    for (let failures = 1; ; failures++) {
      try {
        return await send();
      } catch (error) {
        if (!(error instanceof FloworkError) || !retriable(error)) throw error;
        const delay = error.retryAfterMs ?? fullJitterMs(failures, 100, 5_000);
        if (Date.now() + delay > deadline) throw error;
        await sleep(delay);
      }
    }
  }
}

/** Refusals that a later identical request (same Idempotency-Key) may get past. */
function retriable(error: FloworkError): boolean {
  if (error.code === "idempotency_key_in_progress") return true;
  return error.status === 0 || error.status === 429 || error.status === 503 || error.status === 502 || error.status === 504;
}

/** The optional job fields of `POST /jobs`, in the API's names. */
function jobFields(options: Omit<EnqueueOptions, "idempotencyKey" | "traceparent" | "retryWithinMs">) {
  const fields: Record<string, unknown> = {};
  if (options.priority !== undefined) fields["priority"] = options.priority;
  if (options.runAt !== undefined) {
    fields["run_at"] = options.runAt instanceof Date ? options.runAt.toISOString() : options.runAt;
  }
  if (options.maxAttempts !== undefined) fields["max_attempts"] = options.maxAttempts;
  if (options.timeoutMs !== undefined) fields["timeout_ms"] = options.timeoutMs;
  if (options.concurrencyKey !== undefined) fields["concurrency_key"] = options.concurrencyKey;
  return fields;
}

/** A filter as the gateway takes it: states comma-separated, times in RFC 3339, unset fields left out. */
function filterFields(filter: JobFilter): Record<string, string> {
  const fields: Record<string, string> = {};
  const time = (value: string | Date) => (value instanceof Date ? value.toISOString() : value);
  if (filter.status !== undefined) {
    fields["status"] = Array.isArray(filter.status) ? filter.status.join(",") : filter.status;
  }
  if (filter.engine !== undefined) fields["engine"] = filter.engine;
  if (filter.kind !== undefined) fields["kind"] = filter.kind;
  if (filter.after !== undefined) fields["after"] = time(filter.after);
  if (filter.before !== undefined) fields["before"] = time(filter.before);
  if (filter.id_prefix !== undefined) fields["id_prefix"] = filter.id_prefix;
  return fields;
}
