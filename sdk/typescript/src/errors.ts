/** Errors the SDK throws, and the one a job handler throws to fail a job for good. */

/** A refusal from the gateway (`{"error", "message"}` with an HTTP status), or a gateway that could not be reached. */
export class FloworkError extends Error {
  /** The gateway's machine-readable code (`queue_full`, `lease_lost`, ...); `unreachable` when no answer came. */
  readonly code: string;
  /** The HTTP status; 0 when no answer came. */
  readonly status: number;
  /** How long the gateway asked the caller to wait before retrying (`Retry-After`), when it said. */
  readonly retryAfterMs: number | undefined;

  constructor(code: string, status: number, message: string, options?: { retryAfterMs?: number; cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "FloworkError";
    this.code = code;
    this.status = status;
    this.retryAfterMs = options?.retryAfterMs;
  }

  /** Worth another try: no answer, a server error, or 429 (too many requests). */
  get transient(): boolean {
    return this.status === 0 || this.status >= 500 || this.status === 429;
  }

  /** The lease is gone (it lapsed and the job was leased again, or it was never ours): stop working on the job. */
  get leaseLost(): boolean {
    return this.code === "lease_lost" || this.code === "job_not_found";
  }
}

/**
 * Thrown by a job handler for a failure another attempt cannot fix (bad input, a refused request): the job ends
 * `dead` at once instead of being retried. Any other error thrown by a handler is retried by the gateway.
 */
export class PermanentError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "PermanentError";
  }
}

/** A `wait` whose job did not end in time. */
export class WaitTimeoutError extends Error {
  readonly jobId: string;

  constructor(jobId: string, timeoutMs: number) {
    super(`job ${jobId} did not finish within ${timeoutMs} ms`);
    this.name = "WaitTimeoutError";
    this.jobId = jobId;
  }
}
