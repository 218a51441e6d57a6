-- Whether the engine is paused: claims hand out nothing while it is; enqueues are still accepted.
-- compat: additive
CREATE TABLE engine_state (
    singleton   INTEGER PRIMARY KEY CHECK (singleton = 1),
    paused      INTEGER NOT NULL DEFAULT 0,
    changed_at  INTEGER NOT NULL
) STRICT;
INSERT INTO engine_state (singleton, paused, changed_at) VALUES (1, 0, 0);
