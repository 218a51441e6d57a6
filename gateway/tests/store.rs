//! The SQLite store through its `JobStore` interface, on real files, with an injected clock.

mod support;

use support::{AnyStore, StorePlace};

use std::collections::HashSet;
use std::sync::Arc;

use flowork_common::clock::{Clock, ManualClock};
use flowork_common::wire::JobStatus;
use flowork_gateway::store::{
    ActOutcome, ClaimParams, EnqueueOutcome, Finish, JobAction, ListQuery, NewJob, RetryPolicy, StoreError,
};
use tokio_util::sync::CancellationToken;

const START: i64 = 1_800_000_000_000;

async fn store(place: &StorePlace, clock: Arc<ManualClock>) -> Arc<dyn AnyStore> {
    let store = place.open(clock, RetryPolicy { base_ms: 1_000, cap_ms: 60_000 }).await;
    if store.engine("e1").await.unwrap().is_none() {
        store.add_engine("e1", Some("alice"), "hash-e1").await.unwrap();
    }
    store
}

fn job(key: &str, payload: &str, now: i64) -> NewJob {
    support::new_job("alice", key, payload, now)
}

fn claim(max: u32, lease_ms: u64) -> ClaimParams {
    ClaimParams { max, wait_ms: 0, lease_ms, worker: "test".into() }
}

#[tokio::test]
async fn concurrent_enqueues_with_one_key_store_one_job() {
    let place = StorePlace::new();
    let clock = Arc::new(ManualClock::new(START));
    let store = store(&place, clock).await;
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move { store.enqueue(job("same", "{}", START)).await }));
    }
    let (mut created, mut replayed) = (0, 0);
    let mut ids = HashSet::new();
    for task in tasks {
        match task.await.unwrap().unwrap() {
            EnqueueOutcome::Created(j) => {
                created += 1;
                ids.insert(j.id);
            }
            EnqueueOutcome::Replayed(j) => {
                replayed += 1;
                ids.insert(j.id);
            }
            other => panic!("same fingerprint must replay, got {other:?}"),
        }
    }
    assert_eq!((created, replayed, ids.len()), (1, 63, 1));
    assert!(matches!(store.enqueue(job("same", "[1]", START)).await.unwrap(), EnqueueOutcome::KeyReused));
}

#[tokio::test]
async fn concurrent_claims_never_share_a_job_and_group_commit_keeps_every_write() {
    let place = StorePlace::new();
    let clock = Arc::new(ManualClock::new(START));
    let store = store(&place, clock).await;
    let mut writes = Vec::new();
    for i in 0..500 {
        let store = store.clone();
        writes.push(tokio::spawn(async move { store.enqueue(job(&format!("k{i}"), "{}", START)).await }));
    }
    for w in writes {
        assert!(matches!(w.await.unwrap().unwrap(), EnqueueOutcome::Created(_)));
    }
    let mut claimers = Vec::new();
    for _ in 0..16 {
        let store = store.clone();
        claimers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let leases = store.claim("e1", claim(5, 60_000), CancellationToken::new()).await.unwrap();
                if leases.is_empty() {
                    return got;
                }
                got.extend(leases.into_iter().map(|l| l.job.id));
            }
        }));
    }
    let mut seen = HashSet::new();
    for c in claimers {
        for id in c.await.unwrap() {
            assert!(seen.insert(id), "leased twice");
        }
    }
    assert_eq!(seen.len(), 500);
    let counts = store.queue_counts("e1").await.unwrap();
    assert_eq!((counts.queued, counts.running), (0, 500));
}

#[tokio::test]
async fn expired_leases_requeue_and_fence_the_old_holder() {
    let place = StorePlace::new();
    let clock = Arc::new(ManualClock::new(START));
    let store = store(&place, clock.clone()).await;
    store.enqueue(job("a", "{}", START)).await.unwrap();
    let first = store.claim("e1", claim(1, 10_000), CancellationToken::new()).await.unwrap().remove(0);

    // Heartbeats extend the lease past its first expiry.
    clock.advance_ms(8_000);
    store.heartbeat("e1", &first.job.id, &first.lease_token, 10_000, None).await.unwrap();
    clock.advance_ms(8_000);
    assert!(store.claim("e1", claim(1, 10_000), CancellationToken::new()).await.unwrap().is_empty());

    // Then the holder goes quiet: the lease lapses and the job is handed out again, attempt counted.
    clock.advance_ms(2_001);
    assert_eq!(store.reap_expired_leases().await.unwrap(), 1);
    let second = store.claim("e1", claim(1, 10_000), CancellationToken::new()).await.unwrap().remove(0);
    assert_eq!(second.job.id, first.job.id);
    assert_eq!(second.job.attempts, 2);
    let stale = store.finish("e1", &first.job.id, &first.lease_token, Finish::Succeeded { result: None }).await;
    assert!(matches!(stale, Err(StoreError::LeaseLost(_))));
    let hb = store.heartbeat("e1", &first.job.id, &first.lease_token, 10_000, None).await;
    assert!(matches!(hb, Err(StoreError::LeaseLost(_))));

    // An expired but not yet reaped lease cannot finish either.
    clock.advance_ms(10_001);
    let late = store.finish("e1", &second.job.id, &second.lease_token, Finish::Succeeded { result: None }).await;
    assert!(matches!(late, Err(StoreError::LeaseLost(_))));

    // Third and last attempt, then expiry: dead.
    let third = store.claim("e1", claim(1, 10_000), CancellationToken::new()).await.unwrap().remove(0);
    assert_eq!(third.job.attempts, 3);
    clock.advance_ms(10_001);
    store.reap_expired_leases().await.unwrap();
    let job = store.get_job("alice", &first.job.id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Dead);
    assert!(job.error.unwrap().contains("lease expired"));
}

#[tokio::test]
async fn a_job_whose_cancel_was_asked_never_runs_again() {
    let place = StorePlace::new();
    let clock = Arc::new(ManualClock::new(START));
    let store = store(&place, clock.clone()).await;
    let cancel_asked = |store: Arc<dyn AnyStore>, id: String| async move {
        assert!(matches!(store.act("alice", &id, JobAction::Cancel).await.unwrap(), ActOutcome::Requested(_)));
    };

    // The engine goes quiet after the cancel was asked: when the lease lapses the job is cancelled, not requeued.
    let quiet = store.enqueue(job("quiet", "{}", START)).await.unwrap();
    let EnqueueOutcome::Created(quiet) = quiet else { panic!("created") };
    store.claim("e1", claim(1, 10_000), CancellationToken::new()).await.unwrap();
    cancel_asked(store.clone(), quiet.id.clone()).await;
    clock.advance_ms(10_001);
    assert_eq!(store.reap_expired_leases().await.unwrap(), 1);
    let job_now = store.get_job("alice", &quiet.id).await.unwrap().unwrap();
    assert_eq!((job_now.status, job_now.attempts), (JobStatus::Cancelled, 1));
    assert!(job_now.error.unwrap().starts_with("cancelled while running: lease expired"));
    assert!(store.claim("e1", claim(1, 10_000), CancellationToken::new()).await.unwrap().is_empty());

    // The engine reports a retryable failure after the cancel was asked: the job ends cancelled, attempts left.
    let EnqueueOutcome::Created(failing) = store.enqueue(job("failing", "{}", START)).await.unwrap() else {
        panic!("created")
    };
    let lease = store.claim("e1", claim(1, 10_000), CancellationToken::new()).await.unwrap().remove(0);
    cancel_asked(store.clone(), failing.id.clone()).await;
    let failed = Finish::Failed { error: "interrupted".into(), retryable: true };
    let outcome = store.finish("e1", &lease.job.id, &lease.lease_token, failed).await.unwrap();
    assert_eq!(outcome.status, JobStatus::Cancelled);
    let job_now = store.get_job("alice", &failing.id).await.unwrap().unwrap();
    assert_eq!(job_now.error.as_deref(), Some("cancelled while running: interrupted"));
    assert!(store.claim("e1", claim(1, 10_000), CancellationToken::new()).await.unwrap().is_empty());
}

#[tokio::test]
async fn retry_backoff_keeps_within_bounds_and_data_survives_reopen() {
    let place = StorePlace::new();
    let clock = Arc::new(ManualClock::new(START));
    {
        let store = store(&place, clock.clone()).await;
        store.enqueue(job("r", r#"{"x":1}"#, START)).await.unwrap();
        for attempt in 1..=2u32 {
            let lease = loop {
                let mut leases = store.claim("e1", claim(1, 10_000), CancellationToken::new()).await.unwrap();
                if let Some(lease) = leases.pop() {
                    break lease;
                }
                clock.advance_ms(500);
            };
            let now = clock.now_ms();
            let outcome = store
                .finish("e1", &lease.job.id, &lease.lease_token, Finish::Failed { error: "x".into(), retryable: true })
                .await
                .unwrap();
            assert_eq!(outcome.status, JobStatus::Queued);
            let delay = outcome.run_at_ms.unwrap() - now;
            assert!((0..=1_000 * (1 << (attempt - 1))).contains(&delay), "attempt {attempt}: delay {delay}");
        }
    }
    // Reopen the same files: the job and its history are still there.
    let store = store(&place, clock.clone()).await;
    let page = store.list_jobs("alice", ListQuery { limit: 10, ..ListQuery::default() }).await.unwrap();
    assert_eq!(page.jobs.len(), 1);
    assert_eq!((page.jobs[0].status, page.jobs[0].attempts), (JobStatus::Queued, 2));
    assert_eq!(page.jobs[0].payload.get(), r#"{"x":1}"#);
}

#[tokio::test]
async fn only_the_owner_and_whitelisted_users_can_enqueue_and_changes_apply_at_once() {
    let place = StorePlace::new();
    let clock = Arc::new(ManualClock::new(START));
    let store = store(&place, clock).await;
    let as_bob = |key: &str| NewJob { user: "bob".into(), ..job(key, "{}", START) };
    assert!(matches!(store.enqueue(as_bob("b1")).await.unwrap(), EnqueueOutcome::NotAllowed));
    assert!(store.allow_user("e1", "bob", false).await.unwrap());
    assert!(!store.allow_user("e1", "bob", false).await.unwrap(), "allowing twice changes nothing");
    assert!(matches!(store.enqueue(as_bob("b2")).await.unwrap(), EnqueueOutcome::Created(_)));
    assert!(store.disallow_user("e1", "bob").await.unwrap());
    assert!(matches!(store.enqueue(as_bob("b3")).await.unwrap(), EnqueueOutcome::NotAllowed));
    assert!(!store.disallow_user("e1", "alice").await.unwrap(), "the owner cannot be removed");
    let users = store.allowed_users("e1").await.unwrap();
    assert_eq!(users.len(), 1);
    assert!(users[0].is_owner && users[0].user == "alice");
}

#[tokio::test]
async fn pruning_the_audit_log_keeps_the_rest_of_the_chain_verifiable() {
    use flowork_gateway::audit::AuditEntry;
    let place = StorePlace::new();
    let clock = Arc::new(ManualClock::new(START));
    let store = store(&place, clock.clone()).await;
    for i in 0..5 {
        store.append_audit(AuditEntry::new("cli", "test", "ok").target(format!("old-{i}"))).await.unwrap();
        clock.advance_ms(1_000);
    }
    let cutoff = clock.now_ms();
    for i in 0..3 {
        store.append_audit(AuditEntry::new("cli", "test", "ok").target(format!("new-{i}"))).await.unwrap();
    }
    let rows = |report: flowork_gateway::audit::AuditReport| {
        assert!(report.is_intact(), "{report}");
        report.rows
    };
    let total = rows(store.verify_audit().await.unwrap());
    let pruned = store.prune_audit(cutoff).await.unwrap();
    assert_eq!(pruned, 5, "exactly the rows older than the cutoff go");
    assert_eq!(rows(store.verify_audit().await.unwrap()), total - pruned);
    store.append_audit(AuditEntry::new("cli", "after", "ok")).await.unwrap();
    assert_eq!(rows(store.verify_audit().await.unwrap()), total - pruned + 1);
    // Pruning everything keeps the newest row to link to.
    clock.advance_ms(10_000);
    store.prune_audit(clock.now_ms()).await.unwrap();
    store.checkpoint_audit().await.unwrap();
    assert_eq!(rows(store.verify_audit().await.unwrap()), 1);
}
