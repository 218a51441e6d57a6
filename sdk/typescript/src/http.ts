/** One JSON call to the gateway over the global `fetch`: a deadline, the error body turned into a `FloworkError`. */

import { FloworkError } from "./errors.js";
import type { Fetch } from "./fetcher.js";

/** What a successful call answered. */
export interface Answer<T> {
  status: number;
  headers: Headers;
  body: T;
}

/** A request: the path below the base URL, with headers that carry the credentials. */
export interface CallOptions {
  method: "GET" | "POST" | "DELETE" | "PUT";
  headers: Record<string, string>;
  body?: unknown;
  timeoutMs: number;
  /** Aborts the call early (a worker that stops claiming). */
  signal?: AbortSignal;
  /** The `fetch` to call with (one trusting a private CA); the global one by default. */
  fetch?: Fetch;
}

/** Calls `base + path`; resolves with a 2xx answer, rejects with a `FloworkError` for anything else. */
export async function call<T>(base: string, path: string, options: CallOptions): Promise<Answer<T>> {
  const deadline = AbortSignal.timeout(options.timeoutMs);
  const signal = options.signal ? AbortSignal.any([options.signal, deadline]) : deadline;
  const headers: Record<string, string> = { accept: "application/json", ...options.headers };
  let body: string | undefined;
  if (options.body !== undefined) {
    headers["content-type"] = "application/json";
    body = JSON.stringify(options.body);
  }
  let response: Response;
  let text: string;
  try {
    const send = options.fetch ?? fetch;
    response = await send(base + path, { method: options.method, headers, body: body ?? null, signal });
    text = await response.text();
  } catch (cause) {
    if (options.signal?.aborted) throw new FloworkError("aborted", 0, `${options.method} ${path} was aborted`, { cause });
    const why = deadline.aborted ? `no answer within ${options.timeoutMs} ms` : describe(cause);
    throw new FloworkError("unreachable", 0, `cannot reach the gateway at ${base}: ${why}`, { cause });
  }
  const parsed = parse(text);
  if (response.ok) return { status: response.status, headers: response.headers, body: parsed as T };
  const error = isErrorBody(parsed) ? parsed : { error: "unknown", message: text.slice(0, 500) || response.statusText };
  const retryAfterMs = parseRetryAfter(response.headers.get("retry-after"));
  throw new FloworkError(error.error, response.status, error.message, retryAfterMs === undefined ? {} : { retryAfterMs });
}

function parse(text: string): unknown {
  if (text === "") return null;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function isErrorBody(value: unknown): value is { error: string; message: string } {
  return (
    typeof value === "object" &&
    value !== null &&
    typeof (value as { error?: unknown }).error === "string" &&
    typeof (value as { message?: unknown }).message === "string"
  );
}

function describe(cause: unknown): string {
  if (cause instanceof Error) {
    const inner = cause.cause instanceof Error ? `: ${cause.cause.message}` : "";
    return cause.message + inner;
  }
  return String(cause);
}

/** `Retry-After` as milliseconds: delta-seconds or an HTTP date (RFC 9110 §10.2.3). */
export function parseRetryAfter(value: string | null): number | undefined {
  if (value === null) return undefined;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1_000;
  const date = Date.parse(trimmed);
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now());
}

/** Resolves after `ms`, or at once when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}

/**
 * Exponential backoff with full jitter (the Rust engine's `full_jitter_delay_ms`): uniform in
 * `[0, min(cap, base * 2^(failures-1))]`.
 */
export function fullJitterMs(failures: number, baseMs: number, capMs: number, unit = Math.random()): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(Math.max(failures - 1, 0), 30));
  return Math.round(ceiling * Math.min(Math.max(unit, 0), 1));
}
