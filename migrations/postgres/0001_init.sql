-- The PostgreSQL store of a gateway fleet: what the SQLite control database and the per-engine shards hold, in
-- one database. `engine_id` leads the key of every per-engine table, so the schema can be distributed by engine
-- id (Citus: `SELECT create_distributed_table('jobs', 'engine_id')` and the same for each per-engine table;
-- `engines`, the sign-in tables and the audit log stay reference/local tables). Times are Unix ms.
-- compat: breaking

-- Control: engines (token hashes only), sign-in nonces, refresh tokens, the audit chain, JWT signing keys.
CREATE TABLE engines (
    id                    TEXT PRIMARY KEY,
    owner                 TEXT,
    token_hash            TEXT NOT NULL UNIQUE,
    created_at            BIGINT NOT NULL,
    revoked_at            BIGINT,
    previous_token_hash   TEXT,
    previous_valid_until  BIGINT
);
CREATE INDEX engines_previous_token ON engines (previous_token_hash) WHERE previous_token_hash IS NOT NULL;

CREATE TABLE audit_log (
    id          BIGINT PRIMARY KEY,          -- consecutive; a gap is a deleted row
    at          BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT,
    ip          TEXT,
    outcome     TEXT NOT NULL,
    detail      TEXT,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);
CREATE TABLE audit_anchor (
    singleton   INTEGER PRIMARY KEY CHECK (singleton = 1),
    last_id     BIGINT NOT NULL,
    last_hash   TEXT NOT NULL
);

CREATE TABLE auth_nonces (
    nonce       TEXT PRIMARY KEY,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);
CREATE INDEX auth_nonces_expiry ON auth_nonces (expires_at);

CREATE TABLE refresh_tokens (
    token_hash  TEXT PRIMARY KEY,
    family_id   TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    rotated_at  BIGINT,
    revoked_at  BIGINT
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);

-- HS256 signing keys shared by every gateway of the fleet (a token minted through one is accepted by all).
CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,
    secret      BYTEA NOT NULL,
    created_at  BIGINT NOT NULL
);

-- Per engine: its state (pause, fair-share virtual time, default key limit) and its queue counters.
CREATE TABLE engine_state (
    engine_id          TEXT PRIMARY KEY,
    paused             BOOLEAN NOT NULL DEFAULT false,
    changed_at         BIGINT NOT NULL DEFAULT 0,
    vtime              DOUBLE PRECISION NOT NULL DEFAULT 0,
    default_key_limit  BIGINT CHECK (default_key_limit >= 0)
);
-- Kept by triggers in the transaction of every change, so admission reads exact numbers whichever gateway wrote.
CREATE TABLE queue_stats (
    engine_id   TEXT PRIMARY KEY,
    queued      BIGINT NOT NULL DEFAULT 0,
    running     BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE user_inflight (
    engine_id   TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    inflight    BIGINT NOT NULL,
    PRIMARY KEY (engine_id, user_id)
);

CREATE TABLE allowed_users (
    engine_id   TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    is_owner    BOOLEAN NOT NULL DEFAULT false,
    added_at    BIGINT NOT NULL,
    PRIMARY KEY (engine_id, user_id)
);

CREATE TABLE jobs (
    engine_id           TEXT NOT NULL,
    id                  TEXT NOT NULL,       -- UUIDv7, so id order is enqueue order
    user_id             TEXT NOT NULL,
    kind                TEXT NOT NULL,
    payload             TEXT NOT NULL,       -- canonical JSON text, kept byte for byte
    priority            INTEGER NOT NULL DEFAULT 0,
    run_at              BIGINT NOT NULL,
    max_attempts        INTEGER NOT NULL CHECK (max_attempts >= 1),
    timeout_ms          BIGINT NOT NULL CHECK (timeout_ms >= 1),
    attempts            INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    status              TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'dead', 'cancelled')),
    lease_owner         TEXT,
    lease_token         TEXT,
    lease_expires_at    BIGINT,
    enqueued_at         BIGINT NOT NULL,
    claimed_at          BIGINT,
    finished_at         BIGINT,
    result              TEXT,
    error               TEXT,
    idempotency_key     TEXT NOT NULL,
    request_fingerprint TEXT NOT NULL,
    traceparent         TEXT,
    cancel_requested    BOOLEAN NOT NULL DEFAULT false,
    progress            TEXT,
    concurrency_key     TEXT,
    -- Why a queued job cannot be claimed now: 0 runnable, 1 waits for run_at, 2 key full, 3 breaker open.
    hold                SMALLINT NOT NULL DEFAULT 0 CHECK (hold BETWEEN 0 AND 3),
    PRIMARY KEY (engine_id, id),
    CHECK ((status = 'running') = (lease_token IS NOT NULL AND lease_expires_at IS NOT NULL)),
    CHECK ((finished_at IS NOT NULL) = (status IN ('succeeded', 'dead', 'cancelled')))
);
-- One job per (user, key) on an engine: the database, not a gateway, enforces idempotency across the fleet.
CREATE UNIQUE INDEX jobs_idempotency ON jobs (engine_id, user_id, idempotency_key);
CREATE INDEX jobs_ready ON jobs (engine_id, user_id, priority DESC, run_at, id) WHERE status = 'queued' AND hold = 0;
CREATE INDEX jobs_delayed ON jobs (engine_id, run_at) WHERE status = 'queued' AND hold = 1;
CREATE INDEX jobs_parked_key ON jobs (engine_id, concurrency_key, priority DESC, run_at, id)
    WHERE status = 'queued' AND hold = 2;
CREATE INDEX jobs_parked_kind ON jobs (engine_id, kind, id) WHERE status = 'queued' AND hold = 3;
CREATE INDEX jobs_leases ON jobs (engine_id, lease_expires_at) WHERE status = 'running';
CREATE INDEX jobs_by_user ON jobs (user_id, id);
CREATE INDEX jobs_finished ON jobs (engine_id, finished_at) WHERE finished_at IS NOT NULL;

-- Fair share (stride scheduling) per user and engine; `runnable` kept by the trigger below.
CREATE TABLE user_share (
    engine_id   TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    weight      BIGINT NOT NULL DEFAULT 1 CHECK (weight BETWEEN 1 AND 1000),
    pass        DOUBLE PRECISION NOT NULL DEFAULT 0,
    runnable    BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (engine_id, user_id)
);
CREATE INDEX user_share_next ON user_share (engine_id, pass, user_id) WHERE runnable > 0;

CREATE TABLE concurrency_limits (
    engine_id       TEXT NOT NULL,
    concurrency_key TEXT NOT NULL,
    max_running     BIGINT NOT NULL CHECK (max_running >= 0),
    PRIMARY KEY (engine_id, concurrency_key)
);
CREATE TABLE key_state (
    engine_id       TEXT NOT NULL,
    concurrency_key TEXT NOT NULL,
    running         BIGINT NOT NULL DEFAULT 0,
    ready           BIGINT NOT NULL DEFAULT 0,
    parked          BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (engine_id, concurrency_key)
);
CREATE INDEX key_state_parked ON key_state (engine_id, concurrency_key) WHERE parked > 0;

CREATE TABLE kind_breakers (
    engine_id       TEXT NOT NULL,
    kind            TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('closed', 'open', 'half_open')),
    failures        BIGINT NOT NULL DEFAULT 0,
    window_start    BIGINT NOT NULL,
    opened_at       BIGINT,
    last_error      TEXT,
    probe_job_id    TEXT,
    PRIMARY KEY (engine_id, kind)
);

CREATE TABLE schedules (
    engine_id       TEXT NOT NULL,
    id              TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    kind            TEXT NOT NULL,
    payload         TEXT NOT NULL,
    cron            TEXT NOT NULL,
    timezone        TEXT NOT NULL,
    missed          TEXT NOT NULL CHECK (missed IN ('skip', 'catch_up_one')),
    priority        INTEGER NOT NULL DEFAULT 0,
    max_attempts    INTEGER NOT NULL CHECK (max_attempts >= 1),
    timeout_ms      BIGINT NOT NULL CHECK (timeout_ms >= 1),
    concurrency_key TEXT,
    next_run_at     BIGINT NOT NULL,
    last_run_at     BIGINT,
    last_job_id     TEXT,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (engine_id, id)
);
CREATE INDEX schedules_due ON schedules (next_run_at);
CREATE INDEX schedules_by_user ON schedules (user_id, id);

-- The counters above, kept in the same transaction as every change of a job row.
CREATE FUNCTION flowork_job_counters() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    old_queued INT := 0; old_running INT := 0; old_ready INT := 0; old_parked INT := 0;
    new_queued INT := 0; new_running INT := 0; new_ready INT := 0; new_parked INT := 0;
    row_engine TEXT; row_user TEXT; row_key TEXT;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        old_queued := (OLD.status = 'queued')::INT;
        old_running := (OLD.status = 'running')::INT;
        old_ready := (OLD.status = 'queued' AND OLD.hold = 0)::INT;
        old_parked := (OLD.status = 'queued' AND OLD.hold = 2)::INT;
        row_engine := OLD.engine_id; row_user := OLD.user_id; row_key := OLD.concurrency_key;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        new_queued := (NEW.status = 'queued')::INT;
        new_running := (NEW.status = 'running')::INT;
        new_ready := (NEW.status = 'queued' AND NEW.hold = 0)::INT;
        new_parked := (NEW.status = 'queued' AND NEW.hold = 2)::INT;
        row_engine := NEW.engine_id; row_user := NEW.user_id; row_key := NEW.concurrency_key;
    END IF;
    IF new_queued <> old_queued OR new_running <> old_running THEN
        INSERT INTO queue_stats AS s (engine_id, queued, running)
        VALUES (row_engine, new_queued - old_queued, new_running - old_running)
        ON CONFLICT (engine_id) DO UPDATE
        SET queued = s.queued + excluded.queued, running = s.running + excluded.running;
    END IF;
    IF (new_queued + new_running) <> (old_queued + old_running) THEN
        INSERT INTO user_inflight AS u (engine_id, user_id, inflight)
        VALUES (row_engine, row_user, (new_queued + new_running) - (old_queued + old_running))
        ON CONFLICT (engine_id, user_id) DO UPDATE SET inflight = u.inflight + excluded.inflight;
    END IF;
    IF new_ready <> old_ready THEN
        INSERT INTO user_share AS u (engine_id, user_id, runnable, pass)
        VALUES (row_engine, row_user, new_ready - old_ready,
                coalesce((SELECT vtime FROM engine_state WHERE engine_id = row_engine), 0))
        ON CONFLICT (engine_id, user_id) DO UPDATE SET
            pass = CASE WHEN u.runnable <= 0 AND excluded.runnable > 0 THEN greatest(u.pass, excluded.pass)
                        ELSE u.pass END,
            runnable = u.runnable + excluded.runnable;
    END IF;
    IF row_key IS NOT NULL AND (new_running <> old_running OR new_ready <> old_ready OR new_parked <> old_parked) THEN
        INSERT INTO key_state AS k (engine_id, concurrency_key, running, ready, parked)
        VALUES (row_engine, row_key, new_running - old_running, new_ready - old_ready, new_parked - old_parked)
        ON CONFLICT (engine_id, concurrency_key) DO UPDATE SET
            running = k.running + excluded.running, ready = k.ready + excluded.ready,
            parked = k.parked + excluded.parked;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER jobs_counters AFTER INSERT OR UPDATE OF status, hold OR DELETE ON jobs
FOR EACH ROW EXECUTE FUNCTION flowork_job_counters();
