-- The audit log's keyed signatures: each new row and the prune anchor carry an HMAC (key in <data-dir>/keys/
-- audit.key), so rows rewritten with recomputed hashes are caught without the key. The signed head of the log
-- (the newest row checkpointed) lives beside the key, outside this database, so cutting the newest rows is caught.
-- Rows written before this step have no signature; the first signed row vouches for every hash before it.
-- compat: additive
ALTER TABLE audit_log ADD COLUMN mac TEXT;
ALTER TABLE audit_anchor ADD COLUMN mac TEXT;
-- `audit show --since`, `GET /admin/audit?since=`.
CREATE INDEX audit_log_at ON audit_log (at);
