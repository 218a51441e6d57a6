/**
 * Reporting outcomes in batches, as the Rust engine does: what finishes while one report is in flight goes out
 * together in the next `POST /internal/finish`; a lone outcome goes through `POST /internal/jobs/{id}/finish` with
 * the job's `traceparent`; a gateway without the batch route gets one call per job.
 */

import type { EngineApi } from "./engine-api.js";
import { FloworkError } from "./errors.js";
import { sleep } from "./http.js";
import type { FinishReport } from "./types.js";

/** The most outcomes in one call. */
const MAX_BATCH = 256;
/** Tries of one call when the gateway is unreachable or briefly unavailable. */
const ATTEMPTS = 5;

interface Pending {
  jobId: string;
  traceparent: string | undefined;
  report: FinishReport;
  resolve: () => void;
  reject: (error: FloworkError) => void;
}

/** Queues outcomes and sends them, one call at a time. */
export class Finisher {
  readonly #api: EngineApi;
  #queue: Pending[] = [];
  #sending = false;
  #batchesSupported = true;

  constructor(api: EngineApi) {
    this.#api = api;
  }

  /**
   * Reports one attempt's outcome; resolves when the gateway took it, rejects with the gateway's refusal (409
   * `lease_lost`: the job is no longer ours) or after a few tries against a gateway that is away.
   */
  report(jobId: string, traceparent: string | undefined, report: FinishReport): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#queue.push({ jobId, traceparent, report, resolve, reject });
      if (!this.#sending) void this.#pump();
    });
  }

  async #pump(): Promise<void> {
    this.#sending = true;
    try {
      while (this.#queue.length > 0) {
        const batch = this.#queue.splice(0, MAX_BATCH);
        if (batch.length > 1 && this.#batchesSupported) {
          try {
            const results = await retrying(() =>
              this.#api.finishMany(batch.map((p) => ({ job_id: p.jobId, report: p.report }))),
            );
            settle(batch, results);
            continue;
          } catch (error) {
            const refusal = asFloworkError(error);
            if (!isMissingRoute(refusal)) {
              for (const pending of batch) pending.reject(refusal);
              continue;
            }
            // An older gateway: report these and every later outcome one by one.
            this.#batchesSupported = false;
          }
        }
        for (const pending of batch) {
          try {
            await retrying(() => this.#api.finish(pending.jobId, pending.traceparent, pending.report));
            pending.resolve();
          } catch (error) {
            pending.reject(asFloworkError(error));
          }
        }
      }
    } finally {
      this.#sending = false;
    }
  }
}

/** Resolves or rejects each pending report by its item of a batch answer. */
function settle(batch: Pending[], results: { job_id: string; error?: string; message?: string }[]) {
  for (const pending of batch) {
    const result = results.find((r) => r.job_id === pending.jobId);
    if (result === undefined) {
      pending.reject(new FloworkError("missing_result", 502, "the gateway's answer had no result for this job"));
    } else if (result.error !== undefined && result.error !== null) {
      pending.reject(new FloworkError(result.error, 409, result.message ?? ""));
    } else {
      pending.resolve();
    }
  }
}

/** Sends again on transient trouble: 100 ms, then doubling, `ATTEMPTS` tries in all. */
async function retrying<T>(send: () => Promise<T>): Promise<T> {
  let delay = 100;
  for (let attempt = 1; ; attempt++) {
    try {
      return await send();
    } catch (error) {
      if (!(error instanceof FloworkError && error.transient) || attempt >= ATTEMPTS) throw error;
      await sleep(delay);
      delay *= 2;
    }
  }
}

/** An older gateway answers 404 or 405 for a route it does not know (not `job_not_found`). */
function isMissingRoute(error: FloworkError): boolean {
  return (error.status === 404 || error.status === 405) && error.code !== "job_not_found";
}

function asFloworkError(error: unknown): FloworkError {
  if (error instanceof FloworkError) return error;
  return new FloworkError("unknown", 0, error instanceof Error ? error.message : String(error), { cause: error });
}
