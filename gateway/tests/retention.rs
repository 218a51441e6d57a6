//! Retention on real SQLite files with an injected clock: under steady load with pruning, a shard's file stops
//! growing; without it, it keeps growing.

mod support;

use std::sync::Arc;

use flowork_common::clock::{Clock, ManualClock};
use flowork_gateway::store::sqlite::SqliteStore;
use flowork_gateway::store::{ClaimParams, ControlStore, EnqueueOutcome, Finish, JobStore, NewJob, RetryPolicy};
use tokio_util::sync::CancellationToken;

const START: i64 = 1_800_000_000_000;
const HOUR: i64 = 3_600_000;

fn job(n: usize, now: i64) -> NewJob {
    let payload = format!(r#"{{"n":{n},"pad":"{}"}}"#, "x".repeat(400));
    NewJob { max_attempts: 1, ..support::new_job("alice", &format!("k{n}"), &payload, now) }
}

/// One hour of steady load: 1,000 jobs enqueued, run and finished.
async fn an_hour_of_work(store: &SqliteStore, clock: &ManualClock, first: usize) {
    let now = clock.now_ms();
    let jobs = (first..first + 1_000).map(|n| job(n, now)).collect();
    let outcomes = store.enqueue_many("e1", jobs).await.unwrap();
    assert!(outcomes.iter().all(|o| matches!(o, EnqueueOutcome::Created(_))));
    loop {
        let params = ClaimParams { max: 500, wait_ms: 0, lease_ms: 60_000, worker: "w".into() };
        let leases = store.claim("e1", params, CancellationToken::new()).await.unwrap();
        if leases.is_empty() {
            break;
        }
        let items = leases
            .into_iter()
            .map(|l| (l.job.id, l.lease_token, Finish::Succeeded { result: Some("{}".into()) }))
            .collect();
        assert!(store.finish_many("e1", items).await.unwrap().iter().all(Result::is_ok));
    }
    clock.advance_ms(HOUR);
}

/// The shard's size once its WAL is folded in.
fn shard_bytes(dir: &std::path::Path) -> u64 {
    let path = dir.join("shards").join("e1.sqlite3");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
    std::fs::metadata(&path).unwrap().len()
}

async fn sizes_over_a_day(prune: bool) -> Vec<u64> {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START));
    let store = SqliteStore::open(dir.path(), clock.clone(), RetryPolicy::default()).await.unwrap();
    store.add_engine("e1", Some("alice"), "hash").await.unwrap();
    let mut sizes = Vec::new();
    for hour in 0..16 {
        an_hour_of_work(&store, &clock, hour * 1_000).await;
        if prune {
            // Keep three hours of finished jobs.
            while store.prune_finished(clock.now_ms() - 3 * HOUR, 5_000).await.unwrap() > 0 {}
        }
        sizes.push(shard_bytes(dir.path()));
    }
    sizes
}

#[tokio::test]
async fn with_retention_the_shard_levels_off_without_it_it_grows() {
    let kept = sizes_over_a_day(true).await;
    let grown = sizes_over_a_day(false).await;
    println!("with retention: {kept:?}\nwithout: {grown:?}");
    assert!(kept[15] <= kept[7] + kept[7] / 10, "the file kept growing under retention: {kept:?}");
    assert!(grown[15] > grown[7] * 3 / 2, "without retention it should grow: {grown:?}");
    assert!(kept[15] * 3 < grown[15], "{kept:?} vs {grown:?}");
}
