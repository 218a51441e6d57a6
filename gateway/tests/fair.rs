//! The fair claim order, per-key limits, queue positions and cron ticks, through the `JobStore` interface on real
//! SQLite files with an injected clock.

mod support;

use support::{AnyStore, StorePlace};

use std::collections::HashMap;
use std::sync::Arc;

use flowork_common::clock::{Clock, ManualClock};
use flowork_common::wire::{Job, JobStatus, Lease};
use flowork_gateway::store::{
    ClaimParams, EnqueueOutcome, Finish, MissedTicks, NewJob, RetryPolicy, Schedule, ScheduleOutcome,
};
use tokio_util::sync::CancellationToken;

const START: i64 = 1_800_000_000_000; // a whole minute

async fn store(place: &StorePlace, clock: Arc<ManualClock>) -> Arc<dyn AnyStore> {
    let store = place.open(clock, RetryPolicy::default()).await;
    if store.engine("e1").await.unwrap().is_none() {
        store.add_engine("e1", Some("alice"), "hash-e1").await.unwrap();
        for user in ["bob", "carol"] {
            store.allow_user("e1", user, false).await.unwrap();
        }
    }
    store
}

fn job(user: &str, key: &str, now: i64) -> NewJob {
    support::new_job(user, key, "{}", now)
}

async fn enqueue(store: &Arc<dyn AnyStore>, job: NewJob) -> Job {
    match store.enqueue(job).await.unwrap() {
        EnqueueOutcome::Created(job) => job,
        other => panic!("not created: {other:?}"),
    }
}

async fn enqueue_many(store: &Arc<dyn AnyStore>, user: &str, count: usize, now: i64) -> Vec<Job> {
    let jobs = (0..count).map(|i| job(user, &format!("{user}-{i}"), now)).collect();
    let outcomes = store.enqueue_many("e1", jobs).await.unwrap();
    outcomes
        .into_iter()
        .map(|o| match o {
            EnqueueOutcome::Created(job) => job,
            other => panic!("not created: {other:?}"),
        })
        .collect()
}

async fn claim(store: &Arc<dyn AnyStore>, max: u32) -> Vec<Lease> {
    let params = ClaimParams { max, wait_ms: 0, lease_ms: 60_000, worker: "test".into() };
    store.claim("e1", params, CancellationToken::new()).await.unwrap()
}

fn users(leases: &[Lease]) -> Vec<&str> {
    leases.iter().map(|l| l.job.user.as_str()).collect()
}

#[tokio::test]
async fn a_flood_does_not_hold_up_a_small_user() {
    let place = StorePlace::new();
    let clock = Arc::new(ManualClock::new(START));
    let store = store(&place, clock.clone()).await;
    enqueue_many(&store, "alice", 1_000, START).await;
    enqueue_many(&store, "bob", 5, START).await;
    // One at a time: alice and bob alternate while both have work.
    let mut order = Vec::new();
    for _ in 0..8 {
        order.extend(users(&claim(&store, 1).await).into_iter().map(str::to_string));
    }
    assert_eq!(order, ["alice", "bob", "alice", "bob", "alice", "bob", "alice", "bob"]);
    // A batch claim hands out the rest of bob's jobs among the first ones.
    let batch = claim(&store, 10).await;
    assert_eq!(users(&batch).iter().filter(|u| **u == "bob").count(), 1, "{:?}", users(&batch));
    assert_eq!(batch.len(), 10);
}

#[tokio::test]
async fn weights_share_the_engine_in_proportion_and_priority_orders_a_users_own_jobs() {
    let place = StorePlace::new();
    let clock = Arc::new(ManualClock::new(START));
    let store = store(&place, clock.clone()).await;
    assert!(store.set_weight("e1", "alice", 3).await.unwrap());
    enqueue_many(&store, "alice", 100, START).await;
    enqueue_many(&store, "bob", 100, START).await;
    let urgent = enqueue(&store, NewJob { priority: 5, ..job("bob", "bob-urgent", START) }).await;
    let leases = claim(&store, 40).await;
    let alice = users(&leases).iter().filter(|u| **u == "alice").count();
    assert_eq!((alice, leases.len() - alice), (30, 10), "3:1 by weight");
    let first_of_bob = leases.iter().find(|l| l.job.user == "bob").unwrap();
    assert_eq!(first_of_bob.job.id, urgent.id, "bob's priority job goes first among his");
}

#[tokio::test]
async fn a_full_concurrency_key_holds_only_its_own_jobs() {
    let place = StorePlace::new();
    let clock = Arc::new(ManualClock::new(START));
    let store = store(&place, clock.clone()).await;
    store.set_key_limit("e1", "repo-a", Some(2)).await.unwrap();
    let keyed = |i: usize| NewJob { concurrency_key: Some("repo-a".into()), ..job("alice", &format!("k{i}"), START) };
    for i in 0..6 {
        enqueue(&store, keyed(i)).await;
    }
    enqueue_many(&store, "alice", 3, START).await;
    let first = claim(&store, 10).await;
    let running_keyed: Vec<&Lease> = first.iter().filter(|l| l.job.concurrency_key.is_some()).collect();
    assert_eq!(running_keyed.len(), 2, "the key's limit");
    assert_eq!(first.len(), 5, "the unkeyed jobs behind the key's jobs still run");
    // The parked jobs say why they wait.
    let page = store.list_jobs("alice", queued_page(50)).await.unwrap();
    assert_eq!(page.jobs.len(), 4);
    assert!(page.jobs.iter().all(|j| j.waiting_on.as_deref() == Some("concurrency_key")), "{:?}", page.jobs);
    assert!(claim(&store, 10).await.is_empty(), "nothing more while the key is full");
    // One finishes: exactly one more of the key may run.
    let done = running_keyed[0];
    store.finish("e1", &done.job.id, &done.lease_token, Finish::Succeeded { result: None }).await.unwrap();
    let next = claim(&store, 10).await;
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].job.concurrency_key.as_deref(), Some("repo-a"));
    // A default limit applies to keys without their own; raising it releases parked jobs at once.
    store.set_default_key_limit("e1", Some(1)).await.unwrap();
    let other = |i: usize| NewJob { concurrency_key: Some("repo-b".into()), ..job("bob", &format!("b{i}"), START) };
    for i in 0..3 {
        enqueue(&store, other(i)).await;
    }
    assert_eq!(claim(&store, 10).await.len(), 1, "repo-b runs one at a time by default");
    store.set_key_limit("e1", "repo-a", Some(10)).await.unwrap();
    assert_eq!(claim(&store, 10).await.len(), 3, "the rest of repo-a, after its limit was raised");
}

#[tokio::test]
async fn queue_positions_match_the_order_claims_then_take() {
    let place = StorePlace::new();
    let clock = Arc::new(ManualClock::new(START));
    let store = store(&place, clock.clone()).await;
    store.set_weight("e1", "carol", 2).await.unwrap();
    let mut jobs = enqueue_many(&store, "alice", 30, START).await;
    // Others arrive after alice has been served a little, with a mix of priorities.
    claim(&store, 3).await;
    jobs.extend(enqueue_many(&store, "bob", 7, START).await);
    jobs.extend(enqueue_many(&store, "carol", 12, START).await);
    jobs.push(enqueue(&store, NewJob { priority: 9, ..job("bob", "bob-hi", START) }).await);
    jobs.push(enqueue(&store, NewJob { priority: -2, ..job("bob", "bob-lo", START) }).await);
    jobs.push(enqueue(&store, NewJob { priority: 4, ..job("carol", "carol-mid", START) }).await);
    let mut expected: HashMap<String, u64> = HashMap::new();
    for job in &jobs {
        let found = store.get_job(&job.user, &job.id).await.unwrap().unwrap();
        if found.status == JobStatus::Queued {
            expected.insert(found.id.clone(), found.queue_position.expect("a runnable job has a position"));
        }
    }
    // A listing page computes positions by walking the gaps between its jobs: the same numbers.
    for user in ["alice", "bob", "carol"] {
        for limit in [3, 500] {
            let query = queued_page(limit);
            for listed in store.list_jobs(user, query).await.unwrap().jobs {
                assert_eq!(listed.queue_position, expected.get(&listed.id).copied(), "listed {}", listed.id);
            }
        }
    }
    let mut claimed_at = 0u64;
    loop {
        let leases = claim(&store, 1).await;
        let Some(lease) = leases.first() else { break };
        assert_eq!(expected.get(&lease.job.id), Some(&claimed_at), "job {} of {}", lease.job.id, lease.job.user);
        claimed_at += 1;
    }
    assert_eq!(claimed_at as usize, expected.len());
}

#[tokio::test]
async fn delayed_and_paused_jobs_say_what_they_wait_on() {
    let place = StorePlace::new();
    let clock = Arc::new(ManualClock::new(START));
    let store = store(&place, clock.clone()).await;
    let later = enqueue(&store, job("alice", "later", START + 10_000)).await;
    let now = enqueue(&store, job("alice", "now", START)).await;
    let later = store.get_job("alice", &later.id).await.unwrap().unwrap();
    assert_eq!((later.waiting_on.as_deref(), later.queue_position), (Some("run_at"), None));
    store.set_paused("e1", true).await.unwrap();
    let paused = store.get_job("alice", &now.id).await.unwrap().unwrap();
    assert_eq!((paused.waiting_on.as_deref(), paused.queue_position), (Some("paused"), Some(0)));
    store.set_paused("e1", false).await.unwrap();
    assert_eq!(claim(&store, 10).await.len(), 1, "only the due job");
    clock.advance_ms(10_000);
    let leases = claim(&store, 10).await;
    assert_eq!(leases.len(), 1, "the delayed job once due");
    assert_eq!(leases[0].job.id, later.id);
}

fn schedule(id: &str, cron: &str, missed: MissedTicks, next_run_at_ms: i64) -> Schedule {
    Schedule {
        id: id.into(),
        engine: "e1".into(),
        user: "bob".into(),
        kind: "echo".into(),
        payload: r#"{"tick":true}"#.into(),
        cron: cron.into(),
        timezone: "UTC".into(),
        missed,
        priority: 0,
        max_attempts: 1,
        timeout_ms: 1_000,
        concurrency_key: None,
        next_run_at_ms,
        last_run_at_ms: None,
        last_job_id: None,
        last_error: None,
        created_at_ms: START,
    }
}

async fn queued_of(store: &Arc<dyn AnyStore>, user: &str) -> usize {
    let query = flowork_gateway::store::ListQuery { limit: 500, ..Default::default() };
    store.list_jobs(user, query).await.unwrap().jobs.len()
}

#[tokio::test]
async fn each_cron_tick_enqueues_one_job_across_restarts_and_missed_ticks_follow_the_policy() {
    let place = StorePlace::new();
    let clock = Arc::new(ManualClock::new(START));
    let grace = 5_000;
    {
        let store = store(&place, clock.clone()).await;
        let every_second = schedule(&uuid::Uuid::now_v7().to_string(), "* * * * * *", MissedTicks::Skip, START + 1_000);
        assert!(matches!(store.create_schedule(every_second).await.unwrap(), ScheduleOutcome::Created(_)));
        let carol = Schedule { user: "mallory".into(), ..schedule("x", "* * * * * *", MissedTicks::Skip, START) };
        assert!(matches!(store.create_schedule(carol).await.unwrap(), ScheduleOutcome::NotAllowed));
        clock.advance_ms(3_500);
        assert_eq!(store.fire_schedules(grace).await.unwrap(), 3, "ticks at +1, +2, +3 s");
        assert_eq!(store.fire_schedules(grace).await.unwrap(), 0, "no tick twice");
    }
    // A restarted gateway fires nothing already fired, then the next tick once.
    let store = store(&place, clock.clone()).await;
    assert_eq!(store.fire_schedules(grace).await.unwrap(), 0);
    clock.advance_ms(1_000);
    assert_eq!(store.fire_schedules(grace).await.unwrap(), 1);
    assert_eq!(queued_of(&store, "bob").await, 4);
    // Down for a minute: with `skip` only the ticks within the grace fire.
    clock.advance_ms(60_000);
    assert_eq!(store.fire_schedules(grace).await.unwrap(), 5, "only the ticks within the 5 s grace");
    // `catch_up_one` adds the latest missed tick, once.
    let hourly = schedule(&uuid::Uuid::now_v7().to_string(), "0 * * * *", MissedTicks::CatchUpOne, START + 3_600_000);
    let id = hourly.id.clone();
    store.create_schedule(hourly).await.unwrap();
    clock.advance_ms(5 * 3_600_000);
    assert_eq!(store.fire_schedules(grace).await.unwrap(), 5 + 1, "5 on-time ticks, 1 caught-up hour");
    let mine = store.list_schedules("bob").await.unwrap();
    let hourly = mine.iter().find(|s| s.id == id).unwrap();
    assert!(hourly.last_job_id.is_some());
    assert!(hourly.next_run_at_ms > clock.now_ms());
    assert_eq!(store.fire_schedules(grace).await.unwrap(), 0);
    assert!(store.delete_schedule("bob", &id).await.unwrap());
    assert!(!store.delete_schedule("bob", &id).await.unwrap());
    assert_eq!(store.list_schedules("bob").await.unwrap().len(), 1);
}

/// A listing of queued jobs, `limit` a page.
fn queued_page(limit: usize) -> flowork_gateway::store::ListQuery {
    let filter = flowork_gateway::store::JobFilter { statuses: vec![JobStatus::Queued], ..Default::default() };
    flowork_gateway::store::ListQuery { filter, limit, ..Default::default() }
}
