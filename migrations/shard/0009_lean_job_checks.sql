-- The job row without IN lists in its checks. SQLite evaluates an IN list of more than two values in a CHECK
-- constraint or a partial index's WHERE with a temporary b-tree built for every row written: nine of them per
-- job from enqueue to finish, a third of the write path's instructions (scripts/store-cost.sh). The status check
-- becomes a chain of comparisons and the finished-jobs index is keyed on finished_at being set (exactly the
-- final states). The same columns, indexes and triggers, so older builds run on it unchanged. Rows keep their
-- rowids (the live feed names rows by rowid); a final job without finished_at gets one. Dropping the old table
-- drops its triggers, so the counters' triggers are made again as they were.
-- compat: additive
CREATE TABLE jobs_rebuilt (
    id                  TEXT PRIMARY KEY,    -- UUIDv7, so id order is enqueue order
    user_id             TEXT NOT NULL,
    kind                TEXT NOT NULL,
    payload             TEXT NOT NULL,       -- JSON
    priority            INTEGER NOT NULL DEFAULT 0,
    run_at              INTEGER NOT NULL,    -- Unix ms; not claimable before
    max_attempts        INTEGER NOT NULL CHECK (max_attempts >= 1),
    timeout_ms          INTEGER NOT NULL CHECK (timeout_ms >= 1),
    attempts            INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    status              TEXT NOT NULL CHECK (status = 'queued' OR status = 'running' OR status = 'succeeded'
                                             OR status = 'dead' OR status = 'cancelled'),
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
    cancel_requested    INTEGER NOT NULL DEFAULT 0,
    progress            TEXT,
    concurrency_key     TEXT,
    hold                INTEGER NOT NULL DEFAULT 0 CHECK (hold BETWEEN 0 AND 3),
    CHECK ((status = 'running') = (lease_token IS NOT NULL AND lease_expires_at IS NOT NULL)),
    CHECK ((finished_at IS NOT NULL) = (status = 'succeeded' OR status = 'dead' OR status = 'cancelled'))
) STRICT;

INSERT INTO jobs_rebuilt (rowid, id, user_id, kind, payload, priority, run_at, max_attempts, timeout_ms, attempts,
                          status, lease_owner, lease_token, lease_expires_at, enqueued_at, claimed_at, finished_at,
                          result, error, idempotency_key, request_fingerprint, traceparent, cancel_requested,
                          progress, concurrency_key, hold)
SELECT rowid, id, user_id, kind, payload, priority, run_at, max_attempts, timeout_ms, attempts,
       status, lease_owner, lease_token, lease_expires_at, enqueued_at, claimed_at,
       CASE WHEN status IN ('succeeded', 'dead', 'cancelled') THEN coalesce(finished_at, claimed_at, enqueued_at) END,
       result, error, idempotency_key, request_fingerprint, traceparent, cancel_requested,
       progress, concurrency_key, hold
FROM jobs;

DROP TABLE jobs;
ALTER TABLE jobs_rebuilt RENAME TO jobs;

CREATE UNIQUE INDEX jobs_idempotency ON jobs (user_id, idempotency_key);
CREATE INDEX jobs_leases ON jobs (lease_expires_at) WHERE status = 'running';
CREATE INDEX jobs_by_user ON jobs (user_id, id);
CREATE INDEX jobs_by_user_status ON jobs (user_id, status, id);
CREATE INDEX jobs_ready ON jobs (user_id, priority DESC, run_at, id) WHERE status = 'queued' AND hold = 0;
CREATE INDEX jobs_delayed ON jobs (run_at) WHERE status = 'queued' AND hold = 1;
CREATE INDEX jobs_parked_key ON jobs (concurrency_key, priority DESC, run_at, id) WHERE status = 'queued' AND hold = 2;
CREATE INDEX jobs_parked_kind ON jobs (kind, id) WHERE status = 'queued' AND hold = 3;
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;

CREATE TRIGGER jobs_stats_insert AFTER INSERT ON jobs BEGIN
    UPDATE queue_stats SET queued = queued + (NEW.status = 'queued'), running = running + (NEW.status = 'running');
    INSERT INTO user_inflight (user_id, inflight) VALUES (NEW.user_id, NEW.status IN ('queued', 'running'))
    ON CONFLICT (user_id) DO UPDATE SET inflight = inflight + excluded.inflight;
END;

CREATE TRIGGER jobs_stats_update AFTER UPDATE OF status ON jobs WHEN OLD.status <> NEW.status BEGIN
    UPDATE queue_stats SET
        queued = queued - (OLD.status = 'queued') + (NEW.status = 'queued'),
        running = running - (OLD.status = 'running') + (NEW.status = 'running');
    UPDATE user_inflight
    SET inflight = inflight - (OLD.status IN ('queued', 'running')) + (NEW.status IN ('queued', 'running'))
    WHERE user_id = NEW.user_id;
END;

CREATE TRIGGER jobs_stats_delete AFTER DELETE ON jobs BEGIN
    UPDATE queue_stats SET queued = queued - (OLD.status = 'queued'), running = running - (OLD.status = 'running');
    UPDATE user_inflight SET inflight = inflight - (OLD.status IN ('queued', 'running')) WHERE user_id = OLD.user_id;
END;

CREATE TRIGGER jobs_share_insert AFTER INSERT ON jobs WHEN NEW.status = 'queued' AND NEW.hold = 0 BEGIN
    INSERT INTO user_share (user_id, runnable, pass) VALUES (NEW.user_id, 1, (SELECT vtime FROM engine_state))
    ON CONFLICT (user_id) DO UPDATE SET
        pass = CASE WHEN runnable <= 0 THEN max(pass, excluded.pass) ELSE pass END,
        runnable = runnable + 1;
END;

CREATE TRIGGER jobs_share_update AFTER UPDATE OF status, hold ON jobs
WHEN (OLD.status = 'queued' AND OLD.hold = 0) <> (NEW.status = 'queued' AND NEW.hold = 0) BEGIN
    INSERT INTO user_share (user_id, runnable, pass)
    VALUES (NEW.user_id, CASE WHEN NEW.status = 'queued' AND NEW.hold = 0 THEN 1 ELSE -1 END,
            (SELECT vtime FROM engine_state))
    ON CONFLICT (user_id) DO UPDATE SET
        pass = CASE WHEN runnable <= 0 AND excluded.runnable > 0 THEN max(pass, excluded.pass) ELSE pass END,
        runnable = runnable + excluded.runnable;
END;

CREATE TRIGGER jobs_share_delete AFTER DELETE ON jobs WHEN OLD.status = 'queued' AND OLD.hold = 0 BEGIN
    UPDATE user_share SET runnable = runnable - 1 WHERE user_id = OLD.user_id;
END;

CREATE TRIGGER jobs_key_insert AFTER INSERT ON jobs WHEN NEW.concurrency_key IS NOT NULL BEGIN
    INSERT INTO key_state (concurrency_key, running, ready, parked)
    VALUES (NEW.concurrency_key, NEW.status = 'running', NEW.status = 'queued' AND NEW.hold = 0,
            NEW.status = 'queued' AND NEW.hold = 2)
    ON CONFLICT (concurrency_key) DO UPDATE SET
        running = running + excluded.running, ready = ready + excluded.ready, parked = parked + excluded.parked;
END;

CREATE TRIGGER jobs_key_update AFTER UPDATE OF status, hold ON jobs WHEN NEW.concurrency_key IS NOT NULL BEGIN
    UPDATE key_state SET
        running = running + (NEW.status = 'running') - (OLD.status = 'running'),
        ready = ready + (NEW.status = 'queued' AND NEW.hold = 0) - (OLD.status = 'queued' AND OLD.hold = 0),
        parked = parked + (NEW.status = 'queued' AND NEW.hold = 2) - (OLD.status = 'queued' AND OLD.hold = 2)
    WHERE concurrency_key = NEW.concurrency_key;
END;

CREATE TRIGGER jobs_key_delete AFTER DELETE ON jobs WHEN OLD.concurrency_key IS NOT NULL BEGIN
    UPDATE key_state SET
        running = running - (OLD.status = 'running'),
        ready = ready - (OLD.status = 'queued' AND OLD.hold = 0),
        parked = parked - (OLD.status = 'queued' AND OLD.hold = 2)
    WHERE concurrency_key = OLD.concurrency_key;
END;
