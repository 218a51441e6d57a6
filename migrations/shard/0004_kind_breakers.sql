-- Per-kind circuit breakers: a kind whose attempts keep failing is held back (its jobs wait instead of burning
-- compat: additive
-- their attempts) until a cool-down passes and one probe job succeeds.
CREATE TABLE kind_breakers (
    kind            TEXT PRIMARY KEY,
    state           TEXT NOT NULL CHECK (state IN ('closed', 'open', 'half_open')),
    failures        INTEGER NOT NULL DEFAULT 0,   -- failures in the current window
    window_start    INTEGER NOT NULL,             -- Unix ms
    opened_at       INTEGER,
    last_error      TEXT,
    probe_job_id    TEXT                          -- the one job let through while half-open
) STRICT;
