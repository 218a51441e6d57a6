/** The gateway's engine (`/internal/*`) API as a worker sees it: whoami, claim, heartbeat, finish. */

import type { Fetch } from "./fetcher.js";
import { call, type CallOptions } from "./http.js";
import { PROTOCOL_HEADER, PROTOCOL_VERSION, USER_AGENT } from "./protocol.js";
import type { FinishItemResult, FinishReport, Lease, Progress } from "./types.js";

/** What a worker reports about its slots with each claim (shown in `GET /status`). */
export interface WorkerReport {
  workers: number;
  min_workers: number;
  max_workers: number;
  busy: number;
  utilization: number;
}

/** `POST /internal/claim` body. */
export interface ClaimRequest {
  max: number;
  wait_ms: number;
  lease_ms: number;
  worker: string;
  report?: WorkerReport;
}

/** Calls the engine API with one engine's token. */
export class EngineApi {
  readonly #base: string;
  readonly #token: string;
  readonly #fetch: Fetch;

  constructor(base: string, token: string, fetch: Fetch) {
    this.#base = base.replace(/\/+$/, "");
    this.#token = token;
    this.#fetch = fetch;
  }

  #options(method: CallOptions["method"], timeoutMs: number, body?: unknown, traceparent?: string): CallOptions {
    const headers: Record<string, string> = {
      "x-engine-token": this.#token,
      [PROTOCOL_HEADER]: PROTOCOL_VERSION,
      "user-agent": USER_AGENT,
    };
    if (traceparent !== undefined) headers["traceparent"] = traceparent;
    const options: CallOptions = { method, headers, timeoutMs, fetch: this.#fetch };
    if (body !== undefined) options.body = body;
    return options;
  }

  /** Which engine the token belongs to. */
  async whoami(): Promise<{ engine_id: string }> {
    return (await call<{ engine_id: string }>(this.#base, "/internal/whoami", this.#options("GET", 10_000))).body;
  }

  /** Leases up to `max` jobs, waiting up to `wait_ms` for one; `signal` gives up the wait (a stopping worker). */
  async claim(request: ClaimRequest, signal: AbortSignal): Promise<Lease[]> {
    const options = this.#options("POST", request.wait_ms + 15_000, request);
    options.signal = signal;
    return (await call<{ leases: Lease[] }>(this.#base, "/internal/claim", options)).body.leases;
  }

  /** Extends a lease by `leaseMs` from now, carrying the latest progress; says whether cancellation was asked. */
  async heartbeat(
    jobId: string,
    traceparent: string | undefined,
    body: { lease_token: string; lease_ms: number; progress?: Progress },
  ): Promise<{ lease_expires_at: string; cancel_requested?: boolean }> {
    const path = `/internal/jobs/${encodeURIComponent(jobId)}/heartbeat`;
    return (await call<{ lease_expires_at: string; cancel_requested?: boolean }>(
      this.#base,
      path,
      this.#options("POST", 10_000, body, traceparent),
    )).body;
  }

  /** One attempt's outcome. */
  async finish(jobId: string, traceparent: string | undefined, report: FinishReport): Promise<void> {
    const path = `/internal/jobs/${encodeURIComponent(jobId)}/finish`;
    await call(this.#base, path, this.#options("POST", 15_000, report, traceparent));
  }

  /** Several outcomes in one call; one result per item, in order. */
  async finishMany(finishes: { job_id: string; report: FinishReport }[]): Promise<FinishItemResult[]> {
    const answer = await call<{ results: FinishItemResult[] }>(
      this.#base,
      "/internal/finish",
      this.#options("POST", 15_000, { finishes }),
    );
    return answer.body.results;
  }
}
