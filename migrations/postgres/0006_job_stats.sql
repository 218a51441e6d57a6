-- Per-minute counters of each user's jobs on each engine for GET /jobs/stats: each transaction adds what it
-- stored, claimed and finished (series: 0 enqueued, 1 succeeded, 2 failed, 3 dead, 4 queue-time histogram,
-- 5 run-time histogram; bucket: the histogram bucket, else 0). Kept 24 hours. Older builds leave it alone.
-- compat: additive
CREATE TABLE job_stats (
    engine_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    minute BIGINT NOT NULL,
    series SMALLINT NOT NULL,
    bucket SMALLINT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (user_id, engine_id, minute, series, bucket)
);
CREATE INDEX job_stats_by_minute ON job_stats (minute);
