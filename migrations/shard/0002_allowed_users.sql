-- The users allowed to submit jobs to this engine (its owner and its whitelist). Kept in the shard so the
-- enqueue transaction checks it atomically, and a change applies to the very next request.
-- compat: breaking (older builds would not check the whitelist)
CREATE TABLE allowed_users (
    user_id     TEXT PRIMARY KEY,
    is_owner    INTEGER NOT NULL DEFAULT 0,
    added_at    INTEGER NOT NULL
) STRICT;
