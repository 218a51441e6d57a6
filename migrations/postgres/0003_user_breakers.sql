-- Circuit breakers per user and kind (see migrations/shard/0012_user_breakers.sql), per engine.
-- compat: additive
CREATE TABLE user_breakers (
    engine_id       TEXT NOT NULL,
    kind            TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('closed', 'open', 'half_open')),
    failures        BIGINT NOT NULL DEFAULT 0,
    window_start    BIGINT NOT NULL,
    opened_at       BIGINT,
    last_error      TEXT,
    probe_job_id    TEXT,
    PRIMARY KEY (engine_id, kind, user_id)
);
