-- One shard per engine: the jobs of every user on that engine.
-- compat: breaking
CREATE TABLE jobs (
    id                  TEXT PRIMARY KEY,    -- UUIDv7, so id order is enqueue order
    user_id             TEXT NOT NULL,
    kind                TEXT NOT NULL,
    payload             TEXT NOT NULL,       -- JSON
    priority            INTEGER NOT NULL DEFAULT 0,
    run_at              INTEGER NOT NULL,    -- Unix ms; not claimable before
    max_attempts        INTEGER NOT NULL CHECK (max_attempts >= 1),
    timeout_ms          INTEGER NOT NULL CHECK (timeout_ms >= 1),
    attempts            INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    status              TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'dead', 'cancelled')),
    lease_owner         TEXT,
    lease_token         TEXT,
    lease_expires_at    INTEGER,
    enqueued_at         INTEGER NOT NULL,
    claimed_at          INTEGER,
    finished_at         INTEGER,
    result              TEXT,                -- JSON
    error               TEXT,
    idempotency_key     TEXT NOT NULL,
    request_fingerprint TEXT NOT NULL,       -- hex SHA-256 of the normalised request
    traceparent         TEXT,
    CHECK ((status = 'running') = (lease_token IS NOT NULL AND lease_expires_at IS NOT NULL))
) STRICT;

-- One job per (user, key) on this engine: the database, not a process, enforces idempotency.
CREATE UNIQUE INDEX jobs_idempotency ON jobs (user_id, idempotency_key);
-- The claim order: highest priority, then earliest run_at, then enqueue order.
CREATE INDEX jobs_claimable ON jobs (priority DESC, run_at, id) WHERE status = 'queued';
-- When the next delayed job becomes runnable, so a waiting claim sleeps exactly until then.
CREATE INDEX jobs_due ON jobs (run_at) WHERE status = 'queued';
-- Expired leases are found without scanning finished jobs.
CREATE INDEX jobs_leases ON jobs (lease_expires_at) WHERE status = 'running';
-- A user's listing, newest first, optionally by status.
CREATE INDEX jobs_by_user ON jobs (user_id, id);
CREATE INDEX jobs_by_user_status ON jobs (user_id, status, id);
