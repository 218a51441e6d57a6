// What a job may be, checked in the browser with the gateway's own rules before anything is sent: one check for
// the submit form, each line of a batch upload and a schedule's job template.

const ENGINE = /^[a-z0-9][a-z0-9-]{0,62}$/;
const KIND = /^[a-z0-9._-]{1,64}$/;
const CONCURRENCY_KEY = /^[!-~]{1,200}$/;
const USER = /^[A-Za-z0-9._@-]{1,128}$/;
const MAX_ATTEMPTS = 100;
const MAX_TIMEOUT_MS = 86_400_000;
const I32 = 2 ** 31;
const FIELDS = new Set(['engine', 'kind', 'payload', 'priority', 'run_at', 'max_attempts', 'timeout_ms', 'concurrency_key']);

/** Whether `text` is a user id the gateway accepts (a wallet address or an operator-chosen name). */
export function isUserId(text) {
  return USER.test(text);
}

const wholeIn = (value, low, high) => Number.isInteger(value) && value >= low && value <= high;

/**
 * The problems of a `POST /jobs` body as `[field, message]` pairs, none when it is valid. `extra` names fields
 * allowed besides a job's (a batch item's `idempotency_key`).
 */
export function jobProblems(body, extra = []) {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) return [['body', 'a job is a JSON object']];
  const problems = [];
  for (const field of Object.keys(body)) {
    if (!FIELDS.has(field) && !extra.includes(field)) problems.push([field, `“${field}” is not a job field`]);
  }
  if (typeof body.engine !== 'string' || !ENGINE.test(body.engine)) {
    problems.push(['engine', 'the engine is 1-63 lowercase letters, digits and “-” (not first)']);
  }
  if (typeof body.kind !== 'string' || !KIND.test(body.kind)) {
    problems.push(['kind', 'the kind is 1-64 lowercase letters, digits, “.”, “_” and “-”']);
  }
  if (body.priority !== undefined && !wholeIn(body.priority, -I32, I32 - 1)) {
    problems.push(['priority', 'the priority is a whole number (higher runs first)']);
  }
  if (body.run_at !== undefined && (typeof body.run_at !== 'string' || Number.isNaN(Date.parse(body.run_at)))) {
    problems.push(['run_at', 'the start time is an RFC 3339 time, like 2030-01-31T09:00:00Z']);
  }
  if (body.max_attempts !== undefined && !wholeIn(body.max_attempts, 1, MAX_ATTEMPTS)) {
    problems.push(['max_attempts', `max attempts is a whole number from 1 to ${MAX_ATTEMPTS}`]);
  }
  if (body.timeout_ms !== undefined && !wholeIn(body.timeout_ms, 1, MAX_TIMEOUT_MS)) {
    problems.push(['timeout_ms', `the timeout is a whole number of milliseconds from 1 to ${MAX_TIMEOUT_MS.toLocaleString()} (24 hours)`]);
  }
  if (body.concurrency_key !== undefined && (typeof body.concurrency_key !== 'string' || !CONCURRENCY_KEY.test(body.concurrency_key))) {
    problems.push(['concurrency_key', 'a concurrency key is 1-200 visible ASCII characters without spaces']);
  }
  return problems;
}

/** A whole number typed in a form field: undefined when empty, NaN when not a whole number. */
export function wholeNumber(text) {
  const trimmed = text.trim();
  if (trimmed === '') return undefined;
  return /^-?\d+$/.test(trimmed) ? Number(trimmed) : Number.NaN;
}
