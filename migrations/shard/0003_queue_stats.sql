-- Queue depth kept by triggers in the same transaction as every change, so admission control reads exact
-- compat: additive
-- numbers in O(1), whichever gateway process wrote the jobs.
CREATE TABLE queue_stats (
    singleton   INTEGER PRIMARY KEY CHECK (singleton = 1),
    queued      INTEGER NOT NULL,
    running     INTEGER NOT NULL
) STRICT;
INSERT INTO queue_stats (singleton, queued, running)
VALUES (1, (SELECT count(*) FROM jobs WHERE status = 'queued'), (SELECT count(*) FROM jobs WHERE status = 'running'));

-- Queued + running jobs per user, for the per-user cap.
CREATE TABLE user_inflight (
    user_id     TEXT PRIMARY KEY,
    inflight    INTEGER NOT NULL
) STRICT;
INSERT INTO user_inflight (user_id, inflight)
SELECT user_id, count(*) FROM jobs WHERE status IN ('queued', 'running') GROUP BY user_id;

CREATE TRIGGER jobs_stats_insert AFTER INSERT ON jobs BEGIN
    UPDATE queue_stats SET queued = queued + (NEW.status = 'queued'), running = running + (NEW.status = 'running');
    INSERT INTO user_inflight (user_id, inflight) VALUES (NEW.user_id, NEW.status IN ('queued', 'running'))
    ON CONFLICT (user_id) DO UPDATE SET inflight = inflight + excluded.inflight;
END;

CREATE TRIGGER jobs_stats_update AFTER UPDATE OF status ON jobs WHEN OLD.status <> NEW.status BEGIN
    UPDATE queue_stats SET
        queued = queued - (OLD.status = 'queued') + (NEW.status = 'queued'),
        running = running - (OLD.status = 'running') + (NEW.status = 'running');
    UPDATE user_inflight
    SET inflight = inflight - (OLD.status IN ('queued', 'running')) + (NEW.status IN ('queued', 'running'))
    WHERE user_id = NEW.user_id;
END;

CREATE TRIGGER jobs_stats_delete AFTER DELETE ON jobs BEGIN
    UPDATE queue_stats SET queued = queued - (OLD.status = 'queued'), running = running - (OLD.status = 'running');
    UPDATE user_inflight SET inflight = inflight - (OLD.status IN ('queued', 'running')) WHERE user_id = OLD.user_id;
END;
