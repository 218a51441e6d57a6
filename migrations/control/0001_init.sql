-- Control database: engines (each owns one shard file) and the users known to the gateway.
-- compat: breaking
CREATE TABLE engines (
    id          TEXT PRIMARY KEY,            -- the shard key: lowercase letters, digits, '-'
    owner       TEXT,                        -- user id of the engine's owner, if any
    token_hash  TEXT NOT NULL UNIQUE,        -- hex SHA-256 of the engine token; the token itself is never stored
    created_at  INTEGER NOT NULL,            -- Unix ms
    revoked_at  INTEGER                      -- Unix ms; a revoked engine's token opens nothing
) STRICT;

CREATE TABLE users (
    id          TEXT PRIMARY KEY,
    created_at  INTEGER NOT NULL
) STRICT;
