-- Per-minute counters of each user's jobs on this engine for GET /jobs/stats: the writer adds what each
-- transaction stored, claimed and finished (series: 0 enqueued, 1 succeeded, 2 failed, 3 dead, 4 queue-time
-- histogram, 5 run-time histogram; bucket: the histogram bucket, else 0). Kept 24 hours. Older builds leave it
-- alone.
-- compat: additive
CREATE TABLE job_stats (
    user_id TEXT NOT NULL,
    minute INTEGER NOT NULL,
    series INTEGER NOT NULL,
    bucket INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (user_id, minute, series, bucket)
) WITHOUT ROWID;
CREATE INDEX job_stats_by_minute ON job_stats (minute);
