-- User tokens: revocations of user JWTs (`token revoke`) and self-service API keys (`/auth/keys`).
-- compat: additive

-- Token ids revoked before their expiry; a row is kept until the token would have expired anyway.
CREATE TABLE revoked_tokens (
    jti         TEXT PRIMARY KEY,
    revoked_at  INTEGER NOT NULL,             -- Unix ms
    keep_until  INTEGER NOT NULL              -- Unix ms
) STRICT;

-- Per user: every token issued at or before `revoked_through` is revoked.
CREATE TABLE revoked_users (
    user_id          TEXT PRIMARY KEY,
    revoked_through  INTEGER NOT NULL,        -- Unix ms
    keep_until       INTEGER NOT NULL         -- Unix ms
) STRICT;

-- Moves on every revocation: gateways poll it and re-read the lists above only when it moved.
CREATE TABLE revocation_generation (
    singleton   INTEGER PRIMARY KEY CHECK (singleton = 1),
    generation  INTEGER NOT NULL
) STRICT;
INSERT INTO revocation_generation (singleton, generation) VALUES (1, 0);

-- API keys (`fwk_...`), hashes only; each allows exactly its scopes (space-separated).
CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL,
    name        TEXT NOT NULL,
    key_hash    TEXT NOT NULL UNIQUE,
    scopes      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,             -- Unix ms
    expires_at  INTEGER                       -- Unix ms; NULL: does not expire
) STRICT;
CREATE INDEX api_keys_user ON api_keys (user_id);
