-- The claim's and the batched success's status changes counted by the writer once per statement, as new jobs
-- compat: additive
-- are since 0010: the update triggers were a quarter of a claim's cost (two or three counter statements per job;
-- scripts/store-cost.sh: claim 90k -> 69k instructions per job, finish 51k -> 46k). A build
-- that counts a move itself bumps the row's `counted` in the same UPDATE, and the triggers skip rows whose
-- `counted` moved. Every other change (a retry, a cancel, the reaper, parking, an older build's claim) leaves
-- `counted` as it was, so the triggers still count it: older builds run on this schema unchanged.
DROP TRIGGER jobs_stats_update;
CREATE TRIGGER jobs_stats_update AFTER UPDATE OF status ON jobs
WHEN OLD.status <> NEW.status AND NEW.counted = OLD.counted BEGIN
    UPDATE queue_stats SET
        queued = queued - (OLD.status = 'queued') + (NEW.status = 'queued'),
        running = running - (OLD.status = 'running') + (NEW.status = 'running');
    UPDATE user_inflight
    SET inflight = inflight - (OLD.status IN ('queued', 'running')) + (NEW.status IN ('queued', 'running'))
    WHERE user_id = NEW.user_id;
END;

DROP TRIGGER jobs_share_update;
CREATE TRIGGER jobs_share_update AFTER UPDATE OF status, hold ON jobs
WHEN (OLD.status = 'queued' AND OLD.hold = 0) <> (NEW.status = 'queued' AND NEW.hold = 0)
     AND NEW.counted = OLD.counted BEGIN
    INSERT INTO user_share (user_id, runnable, pass)
    VALUES (NEW.user_id, CASE WHEN NEW.status = 'queued' AND NEW.hold = 0 THEN 1 ELSE -1 END,
            (SELECT vtime FROM engine_state))
    ON CONFLICT (user_id) DO UPDATE SET
        pass = CASE WHEN runnable <= 0 AND excluded.runnable > 0 THEN max(pass, excluded.pass) ELSE pass END,
        runnable = runnable + excluded.runnable;
END;

DROP TRIGGER jobs_key_update;
CREATE TRIGGER jobs_key_update AFTER UPDATE OF status, hold ON jobs
WHEN NEW.concurrency_key IS NOT NULL AND NEW.counted = OLD.counted BEGIN
    UPDATE key_state SET
        running = running + (NEW.status = 'running') - (OLD.status = 'running'),
        ready = ready + (NEW.status = 'queued' AND NEW.hold = 0) - (OLD.status = 'queued' AND OLD.hold = 0),
        parked = parked + (NEW.status = 'queued' AND NEW.hold = 2) - (OLD.status = 'queued' AND OLD.hold = 2)
    WHERE concurrency_key = NEW.concurrency_key;
END;
