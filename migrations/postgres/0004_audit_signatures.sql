-- The audit log's keyed signatures (see migrations/control/0003): an HMAC on each new row and on the prune anchor,
-- and the signed head of the log (the newest row), kept with the key in `audit_key`, not in `audit_log`, and
-- moved in the same transaction as every append.
-- compat: additive
ALTER TABLE audit_log ADD COLUMN mac TEXT;
ALTER TABLE audit_anchor ADD COLUMN mac TEXT;
CREATE INDEX audit_log_at ON audit_log (at);

CREATE TABLE audit_key (
    singleton   INTEGER PRIMARY KEY CHECK (singleton = 1),
    secret      BYTEA NOT NULL,               -- 32 random bytes; the HMAC-SHA256 key of the signatures
    head_id     BIGINT,                       -- the newest row signed as the head of the log
    head_hash   TEXT,
    head_mac    TEXT
);
