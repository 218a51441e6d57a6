//! The writer's multi-row statements — many enqueues in one INSERT, many successes in one UPDATE — answer each
//! job exactly as the one-by-one path would, and keep the counters the triggers maintain equal to a recount.

mod support;

use flowork_gateway::admission::AdmissionLimits;
use flowork_gateway::store::breakers::HeldBack;
use flowork_gateway::store::sqlite::{connection, fair, migrate, queries};
use flowork_gateway::store::{EnqueueOutcome, NewJob};
use rusqlite::{Connection, TransactionBehavior};

const NOW: i64 = 1_800_000_000_000;

fn job(user: &str, key: &str, payload: &str) -> NewJob {
    let traceparent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
    NewJob { traceparent, ..support::new_job(user, key, payload, NOW) }
}

fn shard(dir: &std::path::Path) -> Connection {
    let mut conn = connection::open_writer(&dir.join("e1.sqlite3")).unwrap();
    migrate::apply(&mut conn, migrate::SHARD, "e1").unwrap();
    queries::allow_user(&conn, "alice", true, NOW).unwrap();
    conn
}

fn enqueue_many(conn: &mut Connection, jobs: &[&NewJob], caps: AdmissionLimits) -> Vec<EnqueueOutcome> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).unwrap();
    let outcomes = queries::enqueue_many(&tx, jobs, NOW, caps).unwrap();
    tx.commit().unwrap();
    outcomes.into_iter().map(Result::unwrap).collect()
}

/// The counters (queued, running, alice's in-flight and runnable jobs) and the same counted from the jobs.
fn counters(conn: &Connection) -> ([i64; 4], [i64; 4]) {
    let one = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
    let kept = [
        one("SELECT queued FROM queue_stats"),
        one("SELECT running FROM queue_stats"),
        one("SELECT coalesce((SELECT inflight FROM user_inflight WHERE user_id = 'alice'), 0)"),
        one("SELECT coalesce((SELECT runnable FROM user_share WHERE user_id = 'alice'), 0)"),
    ];
    let counted = [
        one("SELECT count(*) FROM jobs WHERE status = 'queued'"),
        one("SELECT count(*) FROM jobs WHERE status = 'running'"),
        one("SELECT count(*) FROM jobs WHERE user_id = 'alice' AND status IN ('queued', 'running')"),
        one("SELECT count(*) FROM jobs WHERE user_id = 'alice' AND status = 'queued' AND hold = 0"),
    ];
    (kept, counted)
}

#[test]
fn many_enqueues_in_one_statement_answer_each_job_as_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = shard(dir.path());
    let before = job("alice", "k0", "{}");
    let first = enqueue_many(&mut conn, &[&before], AdmissionLimits::default());
    assert!(matches!(&first[..], [EnqueueOutcome::Created(_)]));

    let (a, b) = (job("alice", "k1", "{\"a\":1}"), job("alice", "k2", "[2]"));
    let a_again = job("alice", "k1", "{\"a\":1}");
    let b_changed = job("alice", "k2", "[3]");
    let before_again = job("alice", "k0", "{}");
    let stranger = job("mallory", "k9", "{}");
    let outcomes =
        enqueue_many(&mut conn, &[&a, &b, &a_again, &b_changed, &before_again, &stranger], AdmissionLimits::default());
    match &outcomes[..] {
        [
            EnqueueOutcome::Created(ca),
            EnqueueOutcome::Created(cb),
            EnqueueOutcome::Replayed(ra),
            EnqueueOutcome::KeyReused,
            EnqueueOutcome::Replayed(r0),
            EnqueueOutcome::NotAllowed,
        ] => {
            assert_eq!((ca.id.as_str(), cb.id.as_str()), (a.id.as_str(), b.id.as_str()));
            assert_eq!((ra.id.as_str(), r0.id.as_str()), (a.id.as_str(), before.id.as_str()));
            assert_eq!(ca.payload.get(), "{\"a\":1}");
        }
        other => panic!("unexpected outcomes {other:?}"),
    }
    // The rows hold what was sent, byte for byte.
    let (payload, traceparent): (String, String) = conn
        .query_row("SELECT payload, traceparent FROM jobs WHERE id = ?1", [&b.id], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    assert_eq!((payload.as_str(), Some(traceparent)), (b.payload.as_str(), b.traceparent.clone()));
    let (kept, counted) = counters(&conn);
    assert_eq!(kept, counted);
    assert_eq!(kept, [3, 0, 3, 3]);

    // A cap that one of them would cross: they go one by one, and the cap counts exactly.
    let caps = AdmissionLimits { max_queue_depth: 4, ..AdmissionLimits::default() };
    let (c, d) = (job("alice", "k3", "{}"), job("alice", "k4", "{}"));
    let outcomes = enqueue_many(&mut conn, &[&c, &d], caps);
    assert!(matches!(&outcomes[..], [EnqueueOutcome::Created(_), EnqueueOutcome::QueueFull { depth: 4 }]));
    let (kept, counted) = counters(&conn);
    assert_eq!(kept, counted);

    // More than the largest chunk, in one call.
    let many: Vec<NewJob> = (0..150).map(|i| job("alice", &format!("bulk-{i}"), "{}")).collect();
    let outcomes = enqueue_many(&mut conn, &many.iter().collect::<Vec<_>>(), AdmissionLimits::default());
    assert!(outcomes.iter().all(|o| matches!(o, EnqueueOutcome::Created(_))));
    let (kept, counted) = counters(&conn);
    assert_eq!(kept, counted);
    assert_eq!(kept[0], 154);
}

#[test]
fn many_successes_in_one_statement_finish_only_live_leases_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = shard(dir.path());
    let jobs: Vec<NewJob> = (0..70).map(|i| job("alice", &format!("k{i}"), "{}")).collect();
    enqueue_many(&mut conn, &jobs.iter().collect::<Vec<_>>(), AdmissionLimits::default());
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).unwrap();
    let by = fair::ClaimBy { engine: "e1", worker: "w", max: 70, lease_ms: 60_000, now: NOW };
    let leases = fair::claim(&tx, &by, &HeldBack::default()).unwrap().leases;
    tx.commit().unwrap();
    assert_eq!(leases.len(), 70);
    let ids: Vec<&str> = leases.iter().map(|l| l.job.id.as_str()).collect();
    let expected: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, expected, "the claim hands jobs out in their order");

    // 68 good reports, one with a wrong token, one twice; the last lease is not reported at all.
    let mut items: Vec<(&str, &str, Option<&str>)> =
        leases[..68].iter().map(|l| (l.job.id.as_str(), l.lease_token.as_str(), Some("{\"ok\":1}"))).collect();
    items.push((leases[68].job.id.as_str(), "not-the-token", None));
    items.push((leases[0].job.id.as_str(), leases[0].lease_token.as_str(), None));
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).unwrap();
    let finished = queries::finish_succeeded_many(&tx, &items, NOW + 1, &mut Default::default()).unwrap();
    tx.commit().unwrap();
    assert_eq!(finished.len(), 68);
    assert!(leases[..68].iter().all(|l| finished.get(&l.job.id).map(String::as_str) == Some("echo")));
    let result: String =
        conn.query_row("SELECT result FROM jobs WHERE id = ?1", [&leases[0].job.id], |r| r.get(0)).unwrap();
    assert_eq!(result, "{\"ok\":1}", "the first report of a job wins");
    let running: i64 = conn.query_row("SELECT count(*) FROM jobs WHERE status = 'running'", [], |r| r.get(0)).unwrap();
    assert_eq!(running, 2);
    let (kept, counted) = counters(&conn);
    assert_eq!(kept, counted);

    // A lease past its expiry is not finished.
    let late = [(leases[69].job.id.as_str(), leases[69].lease_token.as_str(), None)];
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).unwrap();
    assert!(queries::finish_succeeded_many(&tx, &late, NOW + 60_000, &mut Default::default()).unwrap().is_empty());
}
