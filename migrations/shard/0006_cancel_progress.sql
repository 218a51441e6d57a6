-- Cancelling a running job is a request the engine learns at its next heartbeat; progress comes the same way.
-- compat: additive
ALTER TABLE jobs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN progress TEXT;   -- JSON {"percent", "message"}
