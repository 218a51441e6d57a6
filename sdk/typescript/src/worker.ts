/**
 * A worker: your own handlers run as an engine's jobs. The claim loop keeps every slot busy by long-polling the
 * gateway; each job runs under its lease (heartbeats extend it, carry progress and bring cancel requests) and its
 * timeout; outcomes go back in batches; SIGTERM stops claiming and lets running jobs finish. The same behaviour
 * as the Rust engine (engine/src/claim.rs, runner.rs, finisher.rs).
 */

import { hostname } from "node:os";
import process from "node:process";

import { EngineApi } from "./engine-api.js";
import { FloworkError, PermanentError } from "./errors.js";
import { fetchTrusting } from "./fetcher.js";
import { Finisher } from "./finisher.js";
import { fullJitterMs, sleep } from "./http.js";
import type { FinishReport, Job, Lease, Progress } from "./types.js";

/** What a handler gets besides the payload. */
export interface JobContext {
  readonly jobId: string;
  readonly kind: string;
  /** 1 on the first attempt, 2 on the first retry, ... */
  readonly attempt: number;
  /**
   * Aborted when the job should stop: the user cancelled it, its timeout passed, its lease was lost, or the worker
   * gave up waiting for it while stopping. `signal.reason` says which. Pass it to `fetch` and the like.
   */
  readonly signal: AbortSignal;
  /** The job's W3C trace context, for the spans of your own code. */
  readonly traceparent: string | undefined;
  /** The whole job as claimed. */
  readonly job: Job;
  /** Reports how far the job has come (0-100); sent with the next heartbeat and shown on `GET /jobs/{id}`. */
  progress(percent: number, message?: string): void;
}

/** Runs one job: resolves with its JSON result; throws to fail it (retried unless it is a `PermanentError`). */
// `any` by default so a handler can read its payload without declaring a type; give `P` for a checked one.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Handler<P = any, R = unknown> = (payload: P, ctx: JobContext) => R | Promise<R>;

/** One line of the worker's log. */
export type LogFn = (level: "info" | "warn" | "error", message: string, fields: Record<string, unknown>) => void;

/** How to reach the gateway as an engine, and how to claim. */
export interface WorkerOptions {
  /** The gateway's base URL. */
  gateway: string;
  /** The engine's id (the NAME of `flowork-gateway engine add`); checked against the token at start. */
  engineId: string;
  /** The engine's token. */
  token: string;
  /** A PEM file of certificate authorities to trust besides the public ones (a gateway with a self-signed certificate). */
  caFile?: string;
  /** Jobs run at once; default 4. */
  concurrency?: number;
  /** Lease length asked for each job; heartbeats renew it every third of it. Default 30 s. */
  leaseMs?: number;
  /** Longest wait of one claim for a job to become runnable. Default 20 s. */
  waitMs?: number;
  /** How long a stopping worker waits for running jobs before giving them up (their leases lapse). Default 30 s. */
  graceMs?: number;
  /** Who holds the leases, in the gateway's records; default `ENGINE/typescript/HOST/pid-PID`. */
  workerName?: string;
  /** Drain on SIGTERM and SIGINT while `run()` runs; default true. */
  handleSignals?: boolean;
  /** Where log lines go; default warnings and errors to stderr. */
  log?: LogFn;
}

/** Why a job attempt ended on this worker. */
type Ending =
  | { kind: "finished"; report: Omit<FinishReport, "lease_token"> }
  | { kind: "cancelled" }
  | { kind: "timed_out" }
  | { kind: "lease_lost"; error: FloworkError };

/** Runs your handlers as the jobs of one engine. */
export class Worker {
  readonly engineId: string;
  readonly #api: EngineApi;
  readonly #finisher: Finisher;
  readonly #handlers = new Map<string, Handler>();
  readonly #concurrency: number;
  readonly #leaseMs: number;
  readonly #waitMs: number;
  readonly #graceMs: number;
  readonly #workerName: string;
  readonly #handleSignals: boolean;
  readonly #log: LogFn;
  /** Aborted when the worker starts to stop: no more claims. */
  readonly #stopping = new AbortController();
  /** The jobs running now, each until its outcome is reported. */
  readonly #running = new Map<string, { promise: Promise<void>; abort: (reason: unknown) => void }>();
  /** Wakes the claim loop when a slot frees up. */
  #slotFreed: (() => void) | undefined;
  #run: Promise<void> | undefined;

  constructor(options: WorkerOptions) {
    const concurrency = options.concurrency ?? 4;
    if (!Number.isInteger(concurrency) || concurrency < 1) throw new RangeError("concurrency must be an integer >= 1");
    this.engineId = options.engineId;
    this.#api = new EngineApi(options.gateway, options.token, fetchTrusting(options.caFile));
    this.#finisher = new Finisher(this.#api);
    this.#concurrency = concurrency;
    this.#leaseMs = options.leaseMs ?? 30_000;
    this.#waitMs = options.waitMs ?? 20_000;
    this.#graceMs = options.graceMs ?? 30_000;
    this.#workerName = (options.workerName ?? `${options.engineId}/typescript/${hostname()}/pid-${process.pid}`).slice(0, 200);
    this.#handleSignals = options.handleSignals ?? true;
    this.#log = options.log ?? stderrLog;
  }

  /** Registers the handler of a job kind (replacing an earlier one). */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  handle<P = any, R = unknown>(kind: string, handler: Handler<P, R>): this {
    this.#handlers.set(kind, handler as Handler);
    return this;
  }

  /** Jobs running now. */
  get running(): number {
    return this.#running.size;
  }

  /**
   * Claims and runs jobs until `stop()` (or SIGTERM/SIGINT), then waits for running jobs and resolves. Rejects when
   * the gateway refuses the token, or it belongs to another engine (after running jobs have finished).
   */
  run(): Promise<void> {
    this.#run ??= this.#runOnce();
    return this.#run;
  }

  /** Stops claiming; running jobs finish (up to the grace period). Resolves when `run()` has. */
  async stop(): Promise<void> {
    if (!this.#stopping.signal.aborted) {
      this.#log("info", "stop requested: no new claims", { running: this.#running.size });
      this.#stopping.abort(new Error("the worker is stopping"));
    }
    await this.#run?.catch(() => undefined);
  }

  async #runOnce(): Promise<void> {
    const onSignal = () => void this.stop();
    if (this.#handleSignals) {
      process.on("SIGTERM", onSignal);
      process.on("SIGINT", onSignal);
    }
    try {
      let fatal: unknown;
      try {
        await this.#checkIdentity();
        await this.#claimLoop();
      } catch (error) {
        fatal = error;
        this.#stopping.abort(error);
      }
      await this.#drain();
      if (fatal !== undefined) throw fatal;
    } finally {
      if (this.#handleSignals) {
        process.off("SIGTERM", onSignal);
        process.off("SIGINT", onSignal);
      }
    }
  }

  /** Checks that the token is this engine's, waiting out a gateway that is not up yet. */
  async #checkIdentity(): Promise<void> {
    let engineId: string | undefined;
    for (let failures = 1; engineId === undefined && !this.#stopping.signal.aborted; failures++) {
      try {
        engineId = (await this.#api.whoami()).engine_id;
      } catch (error) {
        if (!(error instanceof FloworkError && error.transient)) throw error;
        await this.#backoff(failures, error, "the gateway is not answering yet");
      }
    }
    if (engineId !== undefined && engineId !== this.engineId) {
      throw new FloworkError(
        "wrong_engine",
        0,
        `the token belongs to engine ${JSON.stringify(engineId)}, not ${JSON.stringify(this.engineId)}`,
      );
    }
    this.#log("info", "worker started", { engine_id: this.engineId, concurrency: this.#concurrency });
  }

  async #claimLoop(): Promise<void> {
    const stop = this.#stopping.signal;
    let failures = 0;
    while (!stop.aborted) {
      if (this.#running.size >= this.#concurrency) {
        await new Promise<void>((resolve) => {
          const wake = () => {
            stop.removeEventListener("abort", wake);
            this.#slotFreed = undefined;
            resolve();
          };
          this.#slotFreed = wake;
          stop.addEventListener("abort", wake, { once: true });
        });
        continue;
      }
      const free = this.#concurrency - this.#running.size;
      let leases: Lease[];
      try {
        leases = await this.#api.claim(
          {
            max: free,
            wait_ms: this.#waitMs,
            lease_ms: this.#leaseMs,
            worker: this.#workerName,
            report: {
              workers: this.#concurrency,
              min_workers: this.#concurrency,
              max_workers: this.#concurrency,
              busy: this.#running.size,
              utilization: this.#running.size / this.#concurrency,
            },
          },
          stop,
        );
      } catch (error) {
        if (stop.aborted) return;
        // Retrying cannot help a refused token or a protocol this gateway does not speak.
        if (error instanceof FloworkError && (error.status === 401 || error.code === "unsupported_protocol")) throw error;
        failures += 1;
        await this.#backoff(failures, error, "claim failed");
        continue;
      }
      failures = 0;
      for (const lease of leases) this.#start(lease);
    }
  }

  /** Waits before the next try: full jitter from 200 ms up to 5 s, never sooner than the gateway's Retry-After. */
  async #backoff(failures: number, error: unknown, message: string): Promise<void> {
    const retryAfter = error instanceof FloworkError ? (error.retryAfterMs ?? 0) : 0;
    const delay = Math.max(fullJitterMs(failures, 200, 5_000), retryAfter);
    this.#log("warn", message, { error: String(error instanceof Error ? error.message : error), retry_in_ms: delay });
    await sleep(delay, this.#stopping.signal);
  }

  #start(lease: Lease): void {
    const controller = new AbortController();
    const jobId = lease.job.id;
    const promise = this.#runJob(lease, controller)
      .catch((error: unknown) => this.#log("error", "job runner failed", { job_id: jobId, error: String(error) }))
      .finally(() => {
        this.#running.delete(jobId);
        this.#slotFreed?.();
      });
    this.#running.set(jobId, { promise, abort: (reason) => controller.abort(reason) });
  }

  /**
   * Runs a job to its end and reports it. A lost lease drops the job without a report: another worker may hold it
   * by then, and the gateway would refuse the report anyway (fencing). A cancel request or the job's timeout aborts
   * the handler's signal and reports at once. The slot stays taken until the handler has really returned.
   */
  async #runJob(lease: Lease, controller: AbortController): Promise<void> {
    const job = lease.job;
    const started = Date.now();
    const progress = new ProgressSlot();
    const ctx: JobContext = {
      jobId: job.id,
      kind: job.kind,
      attempt: job.attempts,
      signal: controller.signal,
      traceparent: job.traceparent,
      job,
      progress(percent: number, message?: string) {
        if (!Number.isFinite(percent) || percent < 0 || percent > 100) {
          throw new RangeError("progress percent must be between 0 and 100");
        }
        progress.put(message === undefined ? { percent } : { percent, message: message.slice(0, 500) });
      },
    };
    const keeper = this.#keepLease(lease, progress);
    const handled = this.#execute(job, ctx);
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<Ending>((resolve) => {
      timer = setTimeout(() => resolve({ kind: "timed_out" }), job.timeout_ms);
    });
    const ending = await Promise.race([handled, timedOut, keeper.ended]);
    clearTimeout(timer);
    keeper.stop();
    const fields = { job_id: job.id, kind: job.kind, ms: Date.now() - started };
    if (ending.kind === "lease_lost") {
      controller.abort(ending.error);
      this.#log("warn", "lease lost while running; abandoning the job", { ...fields, error: ending.error.message });
    } else if (ending.kind === "cancelled") {
      controller.abort(new FloworkError("cancelled", 0, "the job was cancelled"));
      this.#log("info", "job cancelled", fields);
      await this.#deliver(job, { lease_token: lease.lease_token, outcome: "cancelled" }, fields);
    } else if (ending.kind === "timed_out") {
      const error = `timed out after ${job.timeout_ms} ms`;
      controller.abort(new FloworkError("timeout", 0, error));
      this.#log("info", "job timed out", fields);
      await this.#deliver(job, { lease_token: lease.lease_token, outcome: "timed_out", error, retryable: true }, fields);
    } else {
      const report: FinishReport = { lease_token: lease.lease_token, ...ending.report };
      this.#log("info", `job ${report.outcome}`, report.error === undefined ? fields : { ...fields, error: report.error });
      await this.#deliver(job, report, fields);
    }
    await handled;
  }

  /**
   * Reports an outcome. A refusal means the job is no longer ours (dropped), or the lease lapses and the job runs
   * again; a result too large for the gateway will not shrink on another attempt, so the job fails for good.
   */
  async #deliver(job: Job, report: FinishReport, fields: Record<string, unknown>): Promise<void> {
    try {
      await this.#finisher.report(job.id, job.traceparent, report);
    } catch (error) {
      if (error instanceof FloworkError && error.code === "payload_too_large" && report.outcome === "succeeded") {
        const tooLarge = failure(`the result is too large for the gateway: ${error.message}`, false);
        await this.#deliver(job, { lease_token: report.lease_token, ...tooLarge }, fields);
        return;
      }
      const why =
        error instanceof FloworkError && error.leaseLost
          ? "the gateway refused the outcome: the lease was lost; the job is dropped"
          : "could not report the outcome; the lease will lapse and the job run again";
      this.#log("warn", why, { ...fields, error: error instanceof Error ? error.message : String(error) });
    }
  }

  /** The handler's outcome (never rejects). */
  async #execute(job: Job, ctx: JobContext): Promise<Ending> {
    const handler = this.#handlers.get(job.kind);
    if (handler === undefined) {
      return failed(`this worker has no handler for the kind ${JSON.stringify(job.kind)}`, false);
    }
    try {
      const result: unknown = await handler(job.payload, ctx);
      return succeeded(result);
    } catch (error) {
      if (error instanceof PermanentError) return failed(error.message, false);
      return failed(error instanceof Error ? error.message || error.name : String(error), true);
    }
  }

  /**
   * Renews the lease every third of its length, and sooner when the handler reports progress (at most once per
   * `PROGRESS_EVERY_MS`), carrying the latest progress. `ended` resolves only when the gateway says the lease is
   * gone or the job was cancelled; a failed heartbeat is retried at the next beat.
   */
  #keepLease(lease: Lease, progress: ProgressSlot) {
    const stopped = new AbortController();
    const every = Math.max(Math.floor(this.#leaseMs / 3), 50);
    const ended = (async (): Promise<Ending> => {
      let renewAt = Date.now() + every;
      let sentAt: number | undefined;
      for (;;) {
        await sleep(Math.max(0, renewAt - Date.now()), progress.wakeOnReport());
        if (stopped.signal.aborted) return new Promise<Ending>(() => undefined);
        // Progress goes out promptly, but a handler reporting in a tight loop costs one call a second.
        if (progress.waiting() && sentAt !== undefined) {
          await sleep(Math.max(0, Math.min(sentAt + PROGRESS_EVERY_MS, renewAt) - Date.now()), stopped.signal);
          if (stopped.signal.aborted) return new Promise<Ending>(() => undefined);
        }
        const taken = progress.take();
        const body = { lease_token: lease.lease_token, lease_ms: this.#leaseMs, ...(taken ? { progress: taken } : {}) };
        sentAt = Date.now();
        renewAt = sentAt + every;
        try {
          const answer = await this.#api.heartbeat(lease.job.id, lease.job.traceparent, body);
          if (answer.cancel_requested) return { kind: "cancelled" };
        } catch (error) {
          if (error instanceof FloworkError && error.leaseLost) return { kind: "lease_lost", error };
          this.#log("warn", "heartbeat failed", { job_id: lease.job.id, error: String(error) });
        }
      }
    })();
    const stop = () => {
      stopped.abort();
      progress.wake();
    };
    return { ended, stop };
  }

  /** Waits for running jobs up to the grace period; then aborts their signals and lets their leases lapse. */
  async #drain(): Promise<void> {
    if (this.#running.size === 0) return;
    this.#log("info", "waiting for running jobs", { running: this.#running.size, grace_ms: this.#graceMs });
    const grace = new AbortController();
    const all = Promise.all([...this.#running.values()].map((job) => job.promise));
    const timer = setTimeout(() => grace.abort(), this.#graceMs);
    await Promise.race([all, new Promise((resolve) => grace.signal.addEventListener("abort", resolve))]);
    clearTimeout(timer);
    if (this.#running.size > 0) {
      this.#log("warn", "grace period over; their leases will lapse and the jobs run again", {
        abandoned: this.#running.size,
      });
      for (const job of this.#running.values()) job.abort(new Error("the worker stopped before the job finished"));
    }
  }
}

/** The least time between two heartbeats sent for progress: a progress bar moves within a second of a report. */
const PROGRESS_EVERY_MS = 1_000;

/** The latest progress a handler reported, and the wake-up of the heartbeat loop waiting to carry it. */
class ProgressSlot {
  #latest: Progress | undefined;
  #waiter: AbortController | undefined;

  put(progress: Progress): void {
    this.#latest = progress;
    this.wake();
  }

  take(): Progress | undefined {
    const taken = this.#latest;
    this.#latest = undefined;
    return taken;
  }

  waiting(): boolean {
    return this.#latest !== undefined;
  }

  /** A signal that aborts at the next report (at once if progress is already waiting) or `wake()`. */
  wakeOnReport(): AbortSignal {
    const waiter = new AbortController();
    this.#waiter = waiter;
    if (this.#latest !== undefined) waiter.abort();
    return waiter.signal;
  }

  wake(): void {
    this.#waiter?.abort();
  }
}

function succeeded(result: unknown): Ending {
  if (result === undefined) return { kind: "finished", report: { outcome: "succeeded" } };
  try {
    // The result travels as JSON: fail now (for good) on what cannot, rather than at the report.
    JSON.stringify(result);
  } catch (error) {
    return failed(`the result is not JSON: ${error instanceof Error ? error.message : String(error)}`, false);
  }
  return { kind: "finished", report: { outcome: "succeeded", result } };
}

function failed(error: string, retryable: boolean): Ending {
  return { kind: "finished", report: failure(error, retryable) };
}

function failure(error: string, retryable: boolean): Omit<FinishReport, "lease_token"> {
  return { outcome: "failed", error, retryable };
}

function stderrLog(level: "info" | "warn" | "error", message: string, fields: Record<string, unknown>): void {
  if (level === "info") return;
  process.stderr.write(`${JSON.stringify({ level, message, ...fields })}\n`);
}
