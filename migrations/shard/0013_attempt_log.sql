-- Each job keeps the history of its attempts: a JSON array the writer appends to as an attempt ends (finish,
-- a lapsed lease), read by GET /jobs/{id}/attempts, deleted with the job. Older builds leave it alone.
-- compat: additive
ALTER TABLE jobs ADD COLUMN attempt_log TEXT;
