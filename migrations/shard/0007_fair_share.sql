-- Fair share across users, per-key concurrency limits and cron schedules (issue #11).
-- compat: breaking (older builds would ignore parked jobs and concurrency-key limits)
--
-- `hold` says why a queued job cannot be claimed right now, so a claim reads only runnable jobs through one
-- index and never scans past the rest: 0 = runnable, 1 = waits for its run_at, 2 = its concurrency key is at its
-- limit, 3 = its kind's circuit breaker is open.
ALTER TABLE jobs ADD COLUMN concurrency_key TEXT;
ALTER TABLE jobs ADD COLUMN hold INTEGER NOT NULL DEFAULT 0 CHECK (hold BETWEEN 0 AND 3);
UPDATE jobs SET hold = 1 WHERE status = 'queued' AND run_at > CAST(unixepoch('subsec') * 1000 AS INTEGER);

DROP INDEX jobs_claimable;
DROP INDEX jobs_due;
-- A user's runnable jobs in claim order: priority, then run_at, then enqueue order.
CREATE INDEX jobs_ready ON jobs (user_id, priority DESC, run_at, id) WHERE status = 'queued' AND hold = 0;
-- Delayed jobs by due time: made runnable at the claim that finds them due.
CREATE INDEX jobs_delayed ON jobs (run_at) WHERE status = 'queued' AND hold = 1;
-- Jobs parked behind a full concurrency key, released in claim order when the key has room.
CREATE INDEX jobs_parked_key ON jobs (concurrency_key, priority DESC, run_at, id) WHERE status = 'queued' AND hold = 2;
-- Jobs parked behind an open breaker, released when it closes.
CREATE INDEX jobs_parked_kind ON jobs (kind, id) WHERE status = 'queued' AND hold = 3;

-- Per-user fair-share state (stride scheduling): a claim serves the user with the lowest `pass` among those with
-- runnable jobs and advances it by 1/weight per job. `runnable` is kept by triggers.
CREATE TABLE user_share (
    user_id     TEXT PRIMARY KEY,
    weight      INTEGER NOT NULL DEFAULT 1 CHECK (weight BETWEEN 1 AND 1000),
    pass        REAL NOT NULL DEFAULT 0,
    runnable    INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX user_share_next ON user_share (pass, user_id) WHERE runnable > 0;
-- The pass of the latest claim ("virtual time"): a user who becomes runnable starts no earlier, so idle time is
-- not banked as credit. Plus the limit for concurrency keys without their own (NULL = unlimited).
ALTER TABLE engine_state ADD COLUMN vtime REAL NOT NULL DEFAULT 0;
ALTER TABLE engine_state ADD COLUMN default_key_limit INTEGER CHECK (default_key_limit >= 0);

INSERT INTO user_share (user_id, runnable)
SELECT user_id, count(*) FROM jobs WHERE status = 'queued' AND hold = 0 GROUP BY user_id;

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

-- Per-key limits set by the engine's owner or an operator.
CREATE TABLE concurrency_limits (
    concurrency_key TEXT PRIMARY KEY,
    max_running     INTEGER NOT NULL CHECK (max_running >= 0)
) STRICT;
-- Per-key counts kept by triggers: running, runnable (hold 0) and parked (hold 2) jobs.
CREATE TABLE key_state (
    concurrency_key TEXT PRIMARY KEY,
    running         INTEGER NOT NULL DEFAULT 0,
    ready           INTEGER NOT NULL DEFAULT 0,
    parked          INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX key_state_parked ON key_state (concurrency_key) WHERE parked > 0;

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

-- Cron schedules: each tick enqueues one job under the schedule's owner, with the idempotency key
-- `schedule:<id>:<tick ms>`, in the same transaction that moves `next_run_at` on.
CREATE TABLE schedules (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL,
    kind            TEXT NOT NULL,
    payload         TEXT NOT NULL,
    cron            TEXT NOT NULL,
    timezone        TEXT NOT NULL,
    missed          TEXT NOT NULL CHECK (missed IN ('skip', 'catch_up_one')),
    priority        INTEGER NOT NULL DEFAULT 0,
    max_attempts    INTEGER NOT NULL CHECK (max_attempts >= 1),
    timeout_ms      INTEGER NOT NULL CHECK (timeout_ms >= 1),
    concurrency_key TEXT,
    next_run_at     INTEGER NOT NULL,
    last_run_at     INTEGER,
    last_job_id     TEXT,
    last_error      TEXT,
    created_at      INTEGER NOT NULL
) STRICT;
CREATE INDEX schedules_due ON schedules (next_run_at);
CREATE INDEX schedules_by_user ON schedules (user_id, id);
