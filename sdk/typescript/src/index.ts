/** Flowork for Node: a `Client` that enqueues and follows jobs, a `Worker` that runs your own code as jobs. */

export { Client, type ClientOptions } from "./client.js";
export { FloworkError, PermanentError, WaitTimeoutError } from "./errors.js";
export { PROTOCOL_HEADER, PROTOCOL_VERSION } from "./protocol.js";
export type {
  BatchItem,
  BatchResult,
  BulkResult,
  EnqueueOptions,
  FinishReport,
  Job,
  JobAttempt,
  JobCounts,
  JobStats,
  JobFilter,
  JobPage,
  JobStatus,
  Json,
  Lease,
  ListOptions,
  Progress,
  Percentiles,
  StatsFigures,
} from "./types.js";
export { FINAL_STATUSES } from "./types.js";
export { Worker, type Handler, type JobContext, type LogFn, type WorkerOptions } from "./worker.js";
