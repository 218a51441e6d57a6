/** The JSON shapes of the public and the engine API (common/src/wire.rs on the gateway side). */

/** Any JSON value. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** A job's lifecycle; `succeeded`, `dead` and `cancelled` are final. */
export type JobStatus = "queued" | "running" | "succeeded" | "dead" | "cancelled" | "waiting";

/** The statuses after which a job never changes again. */
export const FINAL_STATUSES: readonly JobStatus[] = ["succeeded", "dead", "cancelled"];

/** How far a running job has come, as its handler last reported. */
export interface Progress {
  percent: number;
  message?: string | null;
}

/** A job as every endpoint returns it. Times are RFC 3339 with milliseconds, in UTC. */
export interface Job {
  id: string;
  engine: string;
  user: string;
  kind: string;
  status: JobStatus;
  payload: Json;
  attempts: number;
  max_attempts: number;
  priority: number;
  timeout_ms: number;
  run_at: string;
  enqueued_at: string;
  claimed_at: string | null;
  finished_at: string | null;
  result: Json | null;
  error: string | null;
  traceparent?: string;
  concurrency_key?: string;
  queue_position?: number;
  waiting_on?: string;
  cancel_requested?: boolean;
  progress?: Progress;
  /** Fields added by newer gateways. */
  [field: string]: unknown;
}

/** The optional fields of `POST /jobs`. */
export interface EnqueueOptions {
  /** A retry with the same key returns the same job; made with `crypto.randomUUID()` when not given. */
  idempotencyKey?: string;
  priority?: number;
  /** When the job becomes runnable: a `Date` or RFC 3339 text. */
  runAt?: Date | string;
  maxAttempts?: number;
  timeoutMs?: number;
  concurrencyKey?: string;
  /** W3C trace context of the caller. */
  traceparent?: string;
  /**
   * How long the call may keep retrying a gateway that answers 429/503 (or cannot be reached) before it gives
   * up with the last error; default 30 s. 0 sends once.
   */
  retryWithinMs?: number;
}

/** One item of `enqueueBatch`. */
export interface BatchItem extends Omit<EnqueueOptions, "traceparent" | "retryWithinMs"> {
  engine: string;
  kind: string;
  payload?: unknown;
}

/** One result of `enqueueBatch`, in the order of the items: the job, or why it was refused. */
export type BatchResult =
  | { status: 200 | 201; replayed?: boolean; job: Job }
  | { status: number; error: string; message: string };

/** `GET /jobs` filters. */
export interface ListOptions extends JobFilter {
  limit?: number;
  cursor?: string;
}

/** Which of the caller's jobs: the filters of `GET /jobs`, `GET /jobs/counts` and `POST /jobs/bulk`. */
export interface JobFilter {
  /** One state, or several (`["dead", "cancelled"]` or `"dead,cancelled"`). */
  status?: JobStatus | string | (JobStatus | string)[];
  engine?: string;
  kind?: string;
  /** Enqueued at or after (RFC 3339 or a Date). */
  after?: string | Date;
  /** Enqueued before (RFC 3339 or a Date). */
  before?: string | Date;
  /** Ids that start with this. */
  id_prefix?: string;
}

/** One attempt of a job (`GET /jobs/{id}/attempts`); `outcome` and `finished_at` are null while it runs. */
export interface JobAttempt {
  number: number;
  worker: string | null;
  started_at: string | null;
  finished_at: string | null;
  outcome: "succeeded" | "failed" | "timed_out" | "lease_expired" | "cancelled" | null;
  error: string | null;
}

/** How many of the caller's jobs are in each state (`GET /jobs/counts`). */
export interface JobCounts {
  queued: number;
  running: number;
  succeeded: number;
  dead: number;
  cancelled: number;
}

/** Two percentiles of a duration in milliseconds; `null` when nothing was measured. */
export interface Percentiles {
  p50: number | null;
  p95: number | null;
}

/** What happened to the caller's jobs in a minute, or in a whole window (`GET /jobs/stats`). */
export interface StatsFigures {
  enqueued: number;
  /** Attempts that succeeded. */
  succeeded: number;
  /** Attempts that failed (errors, timeouts, lapsed leases), retried or not. */
  failed: number;
  /** Jobs that gave up. */
  dead: number;
  /** From due to claimed, per claim. */
  queue_ms: Percentiles;
  /** From claimed to finished, per attempt. */
  run_ms: Percentiles;
}

/** `GET /jobs/stats`: per-minute figures over a window, oldest minute first, every minute present. */
export interface JobStats {
  engine: string | null;
  window_seconds: number;
  bucket_seconds: number;
  buckets: Array<StatsFigures & { start: string }>;
  totals: StatsFigures;
}

/** What a bulk action did (`POST /jobs/bulk`). */
export interface BulkResult {
  matched: number;
  changed: number;
}

/** A page of `GET /jobs`, newest first. */
export interface JobPage {
  jobs: Job[];
  next_cursor: string | null;
}

/** One leased job of `POST /internal/claim`. */
export interface Lease {
  job: Job;
  lease_token: string;
  lease_expires_at: string;
}

/** `POST /internal/jobs/{id}/finish` body. */
export interface FinishReport {
  lease_token: string;
  outcome: "succeeded" | "failed" | "timed_out" | "cancelled";
  result?: unknown;
  error?: string;
  retryable?: boolean;
}

/** One result of `POST /internal/finish`. */
export interface FinishItemResult {
  job_id: string;
  status?: JobStatus;
  run_at?: string | null;
  error?: string;
  message?: string;
}
