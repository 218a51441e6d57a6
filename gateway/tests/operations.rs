//! Operating jobs through the `JobStore` interface, on both drivers: retry, cancel and delete (one and in bulk),
//! the attempt history, filtered listings and counts per state.

mod support;

use support::{AnyStore, StorePlace};

use std::sync::Arc;

use flowork_common::clock::{Clock, ManualClock};
use flowork_common::wire::{AttemptEnd, JobStatus};
use flowork_gateway::store::core::operate::{BULK_CHUNK, act_on_filter};
use flowork_gateway::store::{
    ActOutcome, ClaimParams, EnqueueOutcome, Finish, JobAction, JobFilter, JobStore, ListQuery, NewJob, RetryPolicy,
};
use tokio_util::sync::CancellationToken;

const START: i64 = 1_800_000_000_000;

async fn store(place: &StorePlace, clock: Arc<ManualClock>) -> Arc<dyn AnyStore> {
    let store = place.open(clock, RetryPolicy { base_ms: 1_000, cap_ms: 60_000 }).await;
    for engine in ["e1", "e2"] {
        if store.engine(engine).await.unwrap().is_none() {
            store.add_engine(engine, Some("alice"), &format!("hash-{engine}")).await.unwrap();
        }
    }
    store
}

fn job_on(engine: &str, user: &str, key: &str, kind: &str, max_attempts: u32) -> NewJob {
    NewJob { engine: engine.into(), kind: kind.into(), max_attempts, ..support::new_job(user, key, "{}", START) }
}

async fn enqueue(store: &Arc<dyn AnyStore>, job: NewJob) -> String {
    match store.enqueue(job).await.unwrap() {
        EnqueueOutcome::Created(job) => job.id,
        other => panic!("not created: {other:?}"),
    }
}

fn claim(max: u32) -> ClaimParams {
    ClaimParams { max, wait_ms: 0, lease_ms: 10_000, worker: "worker-7".into() }
}

async fn claim_one(store: &Arc<dyn AnyStore>, engine: &str) -> flowork_common::wire::Lease {
    store.claim(engine, claim(1), CancellationToken::new()).await.unwrap().pop().expect("a lease")
}

fn failed(retryable: bool) -> Finish {
    Finish::Failed { error: "boom \"quoted\"".into(), retryable }
}

#[tokio::test]
async fn a_dead_job_is_retried_with_a_fresh_budget_and_its_history_counts_on() {
    let place = StorePlace::new();
    let clock = Arc::new(ManualClock::new(START));
    let store = store(&place, clock.clone()).await;
    let id = enqueue(&store, job_on("e1", "alice", "a", "echo", 2)).await;

    // Attempt 1 times out, attempt 2's lease lapses: dead.
    let first = claim_one(&store, "e1").await;
    let timed_out = Finish::TimedOut { error: "timed out after 1000 ms".into() };
    assert_eq!(store.finish("e1", &id, &first.lease_token, timed_out).await.unwrap().status, JobStatus::Queued);
    clock.advance_ms(60_001);
    claim_one(&store, "e1").await;
    clock.advance_ms(10_001);
    assert_eq!(store.reap_expired_leases().await.unwrap(), 1);
    assert_eq!(store.get_job("alice", &id).await.unwrap().unwrap().status, JobStatus::Dead);

    // Only dead and cancelled jobs can be retried; another user's job is not found.
    assert!(matches!(store.act("bob", &id, JobAction::Retry).await.unwrap(), ActOutcome::NotFound));
    let ActOutcome::Done(retried) = store.act("alice", &id, JobAction::Retry).await.unwrap() else { panic!("retried") };
    assert_eq!((retried.id.as_str(), retried.status, retried.attempts), (id.as_str(), JobStatus::Queued, 0));
    assert_eq!((retried.error, retried.finished_at), (None, None));
    match store.act("alice", &id, JobAction::Retry).await.unwrap() {
        ActOutcome::NotApplicable(JobStatus::Queued) => {}
        other => panic!("a queued job is not retryable: {other:?}"),
    }

    // It runs again at once with its whole budget, and succeeds on its third attempt overall.
    let third = claim_one(&store, "e1").await;
    assert_eq!((third.job.id.as_str(), third.job.attempts), (id.as_str(), 1));
    let running = store.attempts("alice", &id).await.unwrap().unwrap();
    assert_eq!(running.len(), 3);
    assert_eq!((running[2].outcome, running[2].worker.as_deref()), (None, Some("worker-7")));
    store.finish("e1", &id, &third.lease_token, Finish::Succeeded { result: Some("1".into()) }).await.unwrap();

    let attempts = store.attempts("alice", &id).await.unwrap().unwrap();
    let outcomes: Vec<_> = attempts.iter().map(|a| (a.number, a.outcome)).collect();
    assert_eq!(
        outcomes,
        vec![(1, Some(AttemptEnd::TimedOut)), (2, Some(AttemptEnd::LeaseExpired)), (3, Some(AttemptEnd::Succeeded))]
    );
    assert_eq!(attempts[0].error.as_deref(), Some("timed out after 1000 ms"));
    assert!(attempts.iter().all(|a| a.worker.as_deref() == Some("worker-7") && a.started_at.is_some()));
    assert!(attempts.iter().all(|a| a.finished_at.is_some()));
    assert!(store.attempts("bob", &id).await.unwrap().is_none(), "another user's job has no history for them");
}

#[tokio::test]
async fn the_attempt_log_records_failures_cancels_and_batched_successes() {
    let place = StorePlace::new();
    let clock = Arc::new(ManualClock::new(START));
    let store = store(&place, clock.clone()).await;
    let failing = enqueue(&store, job_on("e1", "alice", "f", "echo", 3)).await;
    let lease = claim_one(&store, "e1").await;
    store.finish("e1", &failing, &lease.lease_token, failed(false)).await.unwrap();
    let log = store.attempts("alice", &failing).await.unwrap().unwrap();
    assert_eq!((log.len(), log[0].outcome), (1, Some(AttemptEnd::Failed)));
    assert_eq!(log[0].error.as_deref(), Some("boom \"quoted\""), "errors are kept as written");

    let ids = [
        enqueue(&store, job_on("e1", "alice", "s1", "echo", 3)).await,
        enqueue(&store, job_on("e1", "alice", "s2", "echo", 3)).await,
    ];
    let leases = store.claim("e1", claim(2), CancellationToken::new()).await.unwrap();
    let items =
        leases.iter().map(|l| (l.job.id.clone(), l.lease_token.clone(), Finish::Succeeded { result: None })).collect();
    for outcome in store.finish_many("e1", items).await.unwrap() {
        assert_eq!(outcome.unwrap().status, JobStatus::Succeeded);
    }
    for id in &ids {
        let log = store.attempts("alice", id).await.unwrap().unwrap();
        assert_eq!((log.len(), log[0].outcome, log[0].error.clone()), (1, Some(AttemptEnd::Succeeded), None));
    }

    let cancelled = enqueue(&store, job_on("e1", "alice", "c", "echo", 3)).await;
    let lease = claim_one(&store, "e1").await;
    assert!(matches!(store.act("alice", &cancelled, JobAction::Cancel).await.unwrap(), ActOutcome::Requested(_)));
    store.finish("e1", &cancelled, &lease.lease_token, Finish::Cancelled).await.unwrap();
    let log = store.attempts("alice", &cancelled).await.unwrap().unwrap();
    assert_eq!(log[0].outcome, Some(AttemptEnd::Cancelled));
    let queued = enqueue(&store, job_on("e1", "alice", "q", "echo", 3)).await;
    assert!(store.attempts("alice", &queued).await.unwrap().unwrap().is_empty(), "no attempt yet");
}

#[tokio::test]
async fn only_final_jobs_are_deleted_and_a_deleted_job_is_gone_with_its_key() {
    let place = StorePlace::new();
    let clock = Arc::new(ManualClock::new(START));
    let store = store(&place, clock).await;
    let id = enqueue(&store, job_on("e1", "alice", "d", "echo", 3)).await;
    match store.act("alice", &id, JobAction::Delete).await.unwrap() {
        ActOutcome::NotApplicable(JobStatus::Queued) => {}
        other => panic!("a queued job is not deleted: {other:?}"),
    }
    assert!(matches!(store.act("alice", &id, JobAction::Cancel).await.unwrap(), ActOutcome::Done(_)));
    assert!(matches!(store.act("bob", &id, JobAction::Delete).await.unwrap(), ActOutcome::NotFound));
    let ActOutcome::Done(deleted) = store.act("alice", &id, JobAction::Delete).await.unwrap() else {
        panic!("deleted")
    };
    assert_eq!((deleted.id.as_str(), deleted.status), (id.as_str(), JobStatus::Cancelled));
    assert!(store.get_job("alice", &id).await.unwrap().is_none());
    assert!(store.attempts("alice", &id).await.unwrap().is_none());
    assert!(matches!(store.act("alice", &id, JobAction::Delete).await.unwrap(), ActOutcome::NotFound));
    // The idempotency key is free again: the same request makes a new job.
    let again = enqueue(&store, job_on("e1", "alice", "d", "echo", 3)).await;
    assert_ne!(again, id);
    let counts = store.queue_counts("e1").await.unwrap();
    assert_eq!((counts.queued, counts.running), (1, 0), "the counters stay right");
}

#[tokio::test]
async fn a_retry_needs_the_user_still_on_the_whitelist() {
    let place = StorePlace::new();
    let clock = Arc::new(ManualClock::new(START));
    let store = store(&place, clock).await;
    store.allow_user("e1", "bob", false).await.unwrap();
    let id = enqueue(&store, job_on("e1", "bob", "b", "echo", 1)).await;
    assert!(matches!(store.act("bob", &id, JobAction::Cancel).await.unwrap(), ActOutcome::Done(_)));
    store.disallow_user("e1", "bob").await.unwrap();
    assert!(matches!(store.act("bob", &id, JobAction::Retry).await.unwrap(), ActOutcome::NotAllowed));
    assert_eq!(store.get_job("bob", &id).await.unwrap().unwrap().status, JobStatus::Cancelled);
}

#[tokio::test]
async fn filters_select_by_state_engine_kind_time_and_id_and_counts_add_up() {
    let place = StorePlace::new();
    let clock = Arc::new(ManualClock::new(START));
    let store = store(&place, clock.clone()).await;
    let mut on_e1 = Vec::new();
    for i in 0..6 {
        let kind = if i % 2 == 0 { "echo" } else { "sleep" };
        let mut job = job_on("e1", "alice", &format!("k{i}"), kind, 3);
        job.run_at_ms = clock.now_ms();
        on_e1.push(enqueue(&store, job).await);
        clock.advance_ms(1_000);
    }
    let on_e2 = enqueue(&store, job_on("e2", "alice", "other", "echo", 3)).await;
    store.allow_user("e1", "bob", false).await.unwrap();
    enqueue(&store, job_on("e1", "bob", "x", "echo", 3)).await;
    for id in &on_e1[..2] {
        store.act("alice", id, JobAction::Cancel).await.unwrap();
    }
    let list = |filter: JobFilter| {
        let store = store.clone();
        async move {
            let page = store.list_jobs("alice", ListQuery { filter, limit: 100, before_id: None }).await.unwrap();
            page.jobs.into_iter().map(|j| j.id).collect::<Vec<_>>()
        }
    };
    let cancelled = JobFilter { statuses: vec![JobStatus::Cancelled], ..JobFilter::default() };
    assert_eq!(list(cancelled).await, vec![on_e1[1].clone(), on_e1[0].clone()]);
    let both = JobFilter { statuses: vec![JobStatus::Cancelled, JobStatus::Queued], ..JobFilter::default() };
    assert_eq!(list(both).await.len(), 7);
    let e2 = JobFilter { engine: Some("e2".into()), ..JobFilter::default() };
    assert_eq!(list(e2).await, vec![on_e2.clone()]);
    let sleeps = JobFilter { kind: Some("sleep".into()), ..JobFilter::default() };
    assert_eq!(list(sleeps).await, vec![on_e1[5].clone(), on_e1[3].clone(), on_e1[1].clone()]);
    let window = JobFilter {
        engine: Some("e1".into()),
        enqueued_from_ms: Some(START + 1_000),
        enqueued_before_ms: Some(START + 3_000),
        ..JobFilter::default()
    };
    assert_eq!(list(window).await, vec![on_e1[2].clone(), on_e1[1].clone()]);
    let prefix = JobFilter { id_prefix: Some(on_e2[..30].to_string()), ..JobFilter::default() };
    assert_eq!(list(prefix).await, vec![on_e2.clone()]);

    let all = store.count_jobs("alice", None).await.unwrap();
    assert_eq!((all.queued, all.cancelled, all.running, all.dead, all.succeeded), (5, 2, 0, 0, 0));
    let e2_counts = store.count_jobs("alice", Some("e2")).await.unwrap();
    assert_eq!(e2_counts.queued, 1);
    assert_eq!(store.count_jobs("alice", Some("nowhere")).await.unwrap().queued, 0);
    assert_eq!(store.count_jobs("carol", None).await.unwrap(), Default::default());
}

#[tokio::test]
async fn a_bulk_action_walks_every_matching_job_in_chunks_and_touches_no_one_elses() {
    let place = StorePlace::new();
    let clock = Arc::new(ManualClock::new(START));
    let store = store(&place, clock).await;
    store.allow_user("e1", "bob", false).await.unwrap();
    let total = BULK_CHUNK * 2 + 17;
    let jobs: Vec<NewJob> = (0..total).map(|i| job_on("e1", "alice", &format!("b{i}"), "echo", 1)).collect();
    for outcome in store.enqueue_many("e1", jobs).await.unwrap() {
        assert!(matches!(outcome, EnqueueOutcome::Created(_)));
    }
    enqueue(&store, job_on("e2", "alice", "elsewhere", "echo", 1)).await;
    let bobs = enqueue(&store, job_on("e1", "bob", "bob", "echo", 1)).await;
    let running = claim_one(&store, "e1").await;

    let on_e1 = JobFilter { engine: Some("e1".into()), ..JobFilter::default() };
    let dyn_store: &dyn JobStore = store.as_ref();
    let cancelled = act_on_filter(dyn_store, "alice", &on_e1, JobAction::Cancel).await.unwrap();
    assert_eq!((cancelled.matched, cancelled.changed), (total as u64, total as u64), "queued and running ones");
    let counts = store.count_jobs("alice", Some("e1")).await.unwrap();
    assert_eq!((counts.cancelled, counts.running), (total as u64 - 1, 1), "the running one is asked to stop");
    assert!(store.get_job("alice", &running.job.id).await.unwrap().unwrap().cancel_requested);
    assert_eq!(store.get_job("bob", &bobs).await.unwrap().unwrap().status, JobStatus::Queued);

    let retried = act_on_filter(dyn_store, "alice", &on_e1, JobAction::Retry).await.unwrap();
    assert_eq!(retried.changed, total as u64 - 1);
    assert_eq!(store.count_jobs("alice", Some("e1")).await.unwrap().queued, total as u64 - 1);
    act_on_filter(dyn_store, "alice", &on_e1, JobAction::Cancel).await.unwrap();
    let deleted = act_on_filter(dyn_store, "alice", &JobFilter::default(), JobAction::Delete).await.unwrap();
    assert_eq!(deleted.changed, total as u64 - 1, "every final job of alice's, the running one left");
    let left = store.count_jobs("alice", None).await.unwrap();
    assert_eq!((left.running, left.queued, left.cancelled), (1, 1, 0), "the running one and e2's queued one");
    assert_eq!(store.get_job("bob", &bobs).await.unwrap().unwrap().status, JobStatus::Queued);
    let counts = store.queue_counts("e1").await.unwrap();
    assert_eq!((counts.queued, counts.running), (1, 1), "bob's queued job and the running one");
}

#[tokio::test]
async fn stats_count_each_users_jobs_per_minute_as_they_move_and_are_pruned_after_a_day() {
    use flowork_gateway::store::core::stats::{MINUTE_MS, Window, summarize};
    let place = StorePlace::new();
    let clock = Arc::new(ManualClock::new(START));
    let store = store(&place, clock.clone()).await;
    let figures = |rows: &[flowork_gateway::store::core::stats::StatRow], now: i64| {
        summarize(None, Window::ending_at(now, 60), rows).totals
    };
    store.allow_user("e1", "bob", false).await.unwrap();
    // Minute 0: alice stores three jobs on e1 and one on e2, bob one on e1.
    let mut alice = Vec::new();
    for key in ["a1", "a2", "a3"] {
        alice.push(enqueue(&store, job_on("e1", "alice", key, "echo", 1)).await);
    }
    enqueue(&store, job_on("e2", "alice", "other-engine", "echo", 1)).await;
    let bobs = enqueue(&store, job_on("e1", "bob", "b1", "echo", 1)).await;

    // 40 ms later all four of e1 are claimed; 30 ms after that two of alice's and bob's succeed (one of them
    // alone, the others batched) and alice's third fails for good.
    clock.advance_ms(40);
    let leases = store.claim("e1", claim(10), CancellationToken::new()).await.unwrap();
    assert_eq!(leases.len(), 4);
    let token = |id: &str| leases.iter().find(|l| l.job.id == id).expect("leased").lease_token.clone();
    clock.advance_ms(30);
    store.finish("e1", &alice[0], &token(&alice[0]), Finish::Succeeded { result: None }).await.unwrap();
    let batch = vec![
        (alice[1].clone(), token(&alice[1]), Finish::Succeeded { result: None }),
        (bobs.clone(), token(&bobs), Finish::Succeeded { result: None }),
    ];
    for outcome in store.finish_many("e1", batch).await.unwrap() {
        outcome.unwrap();
    }
    store.finish("e1", &alice[2], &token(&alice[2]), failed(false)).await.unwrap();

    let now = clock.now_ms();
    let on_e1 = figures(&store.job_stats("alice", Some("e1"), START).await.unwrap(), now);
    assert_eq!((on_e1.enqueued, on_e1.succeeded, on_e1.failed, on_e1.dead), (3, 2, 1, 1));
    let queue_p50 = on_e1.queue_ms.p50.expect("claims were measured");
    assert!((25.0..=50.0).contains(&queue_p50), "40 ms in the queue falls in (25, 50]: {queue_p50}");
    let run_p95 = on_e1.run_ms.p95.expect("attempts were measured");
    assert!((25.0..=50.0).contains(&run_p95), "30 ms of running falls in (25, 50]: {run_p95}");
    let everywhere = figures(&store.job_stats("alice", None, START).await.unwrap(), now);
    assert_eq!((everywhere.enqueued, everywhere.succeeded), (4, 2), "e2's job counts without an engine");
    let on_e2 = figures(&store.job_stats("alice", Some("e2"), START).await.unwrap(), now);
    assert_eq!((on_e2.enqueued, on_e2.succeeded, on_e2.queue_ms.p50), (1, 0, None));
    let bob = figures(&store.job_stats("bob", None, START).await.unwrap(), now);
    assert_eq!((bob.enqueued, bob.succeeded, bob.failed), (1, 1, 0), "bob sees only his own job");
    assert!(store.job_stats("carol", None, START).await.unwrap().is_empty());
    assert!(store.job_stats("alice", Some("no-such-engine"), START).await.unwrap().is_empty());

    // Minute 2: a lapsed lease is a failed attempt (the job has one more), counted in its own minute.
    clock.advance_ms(2 * MINUTE_MS);
    let lapsing = enqueue(&store, job_on("e1", "alice", "lapse", "echo", 2)).await;
    assert_eq!(claim_one(&store, "e1").await.job.id, lapsing);
    clock.advance_ms(10_001);
    assert_eq!(store.reap_expired_leases().await.unwrap(), 1);
    let now = clock.now_ms();
    let stats = summarize(None, Window::ending_at(now, 3), &store.job_stats("alice", Some("e1"), START).await.unwrap());
    let per_minute: Vec<(u64, u64, u64)> =
        stats.buckets.iter().map(|b| (b.figures.enqueued, b.figures.succeeded, b.figures.failed)).collect();
    assert_eq!(per_minute, vec![(3, 2, 1), (0, 0, 0), (1, 0, 1)]);
    assert_eq!(stats.totals.dead, 1, "the lapsed job is queued again, not dead");

    // A day later the pruner removes them.
    clock.advance_ms(25 * 60 * MINUTE_MS);
    store.prune_finished(clock.now_ms() - 1, 1_000).await.unwrap();
    assert!(store.job_stats("alice", None, START).await.unwrap().is_empty(), "counters older than a day are pruned");
}
