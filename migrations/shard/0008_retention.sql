-- Finished jobs by age, so retention deletes old ones without scanning live ones.
-- compat: additive
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE status IN ('succeeded', 'dead', 'cancelled');
