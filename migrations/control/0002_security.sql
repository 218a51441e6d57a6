-- Security: the tamper-evident audit log, wallet sign-in nonces, refresh tokens, engine token rotation grace.
-- compat: additive

-- Append-only; each row carries the hash of the previous one, so an edited or deleted row breaks the chain.
CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY,          -- consecutive; a gap is a deleted row
    at          INTEGER NOT NULL,             -- Unix ms
    actor       TEXT NOT NULL,                -- user id, `engine:<id>`, `admin:<jti>`, `cli`, or `anonymous`
    action      TEXT NOT NULL,                -- e.g. `auth.verify`, `engine.rotate_token`
    target      TEXT,
    ip          TEXT,
    outcome     TEXT NOT NULL,                -- `ok` or the error code
    detail      TEXT,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
) STRICT;

-- Where the chain starts after old rows are pruned: the id and hash of the last pruned row.
CREATE TABLE audit_anchor (
    singleton   INTEGER PRIMARY KEY CHECK (singleton = 1),
    last_id     INTEGER NOT NULL,
    last_hash   TEXT NOT NULL
) STRICT;

-- Sign-in nonces: single use, short-lived.
CREATE TABLE auth_nonces (
    nonce       TEXT PRIMARY KEY,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER
) STRICT;

-- Refresh tokens (hashes only). Each use rotates the token within its family; a rotated token presented
-- again revokes the whole family.
CREATE TABLE refresh_tokens (
    token_hash  TEXT PRIMARY KEY,
    family_id   TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    rotated_at  INTEGER,
    revoked_at  INTEGER
) STRICT;
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);

-- After `engine rotate-token --grace`, the previous token keeps working until this time.
ALTER TABLE engines ADD COLUMN previous_token_hash TEXT;
ALTER TABLE engines ADD COLUMN previous_valid_until INTEGER;
CREATE INDEX engines_previous_token ON engines (previous_token_hash) WHERE previous_token_hash IS NOT NULL;
