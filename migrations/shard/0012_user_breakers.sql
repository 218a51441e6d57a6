-- Circuit breakers per user and kind: a user's retryable failures of a kind hold back only that user's jobs of
-- compat: additive
-- the kind; `kind_breakers` (everyone's jobs of the kind) opens only when the failures come from several users.
-- Older builds ignore this table (their breakers count every user's failures, as before).
CREATE TABLE user_breakers (
    kind            TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('closed', 'open', 'half_open')),
    failures        INTEGER NOT NULL DEFAULT 0,   -- retryable failures in the current window
    window_start    INTEGER NOT NULL,             -- Unix ms
    opened_at       INTEGER,
    last_error      TEXT,
    probe_job_id    TEXT,                         -- the one job let through while half-open
    PRIMARY KEY (kind, user_id)
) STRICT;
