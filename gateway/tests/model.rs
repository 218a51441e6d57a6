//! The shard store against a model (proptest): random sequences of enqueue, claim, heartbeat, finish (success,
//! retryable failure, final failure), cancel, lease expiry (an injected clock) and reopening the database, with
//! the store checked after every step. Shrunk failures are kept in `proptest-regressions/` as regression cases.

mod support;

use support::{AnyStore, StorePlace};

use std::collections::HashMap;
use std::sync::Arc;

use flowork_common::clock::{Clock, ManualClock};
use flowork_common::wire::JobStatus;
use flowork_gateway::store::{
    ActOutcome, ClaimParams, EnqueueOutcome, Finish, JobAction, NewJob, RetryPolicy, StoreError,
};
use proptest::prelude::*;
use tokio_util::sync::CancellationToken;

const START: i64 = 1_800_000_000_000;
const LEASE_MS: u64 = 1_000;
const MAX_ATTEMPTS: u32 = 3;

#[derive(Debug, Clone)]
enum Op {
    /// Enqueue with key `k` (a small space, so keys repeat) by user `u`, due now or `delay_ms` later, with or
    /// without a concurrency key.
    Enqueue {
        user: u8,
        key: u8,
        delay_ms: u16,
        group: Option<u8>,
    },
    /// Two jobs (keys `k` and `k + 1`) in one request, so they are stored by one multi-row statement.
    EnqueueTwo {
        user: u8,
        key: u8,
        delay_ms: u16,
        group: Option<u8>,
    },
    Claim {
        max: u8,
    },
    /// Act on the `n`-th lease ever handed out (stale ones included: fencing must refuse them).
    Heartbeat {
        lease: u8,
    },
    Finish {
        lease: u8,
        how: u8,
    },
    Cancel {
        job: u8,
    },
    Advance {
        ms: u16,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..2u8, 0..12u8, prop_oneof![Just(0u16), 1..2_000u16], proptest::option::of(0..2u8))
            .prop_map(|(user, key, delay_ms, group)| Op::Enqueue { user, key, delay_ms, group }),
        1 => (0..2u8, 0..11u8, prop_oneof![Just(0u16), 1..2_000u16], proptest::option::of(0..2u8))
            .prop_map(|(user, key, delay_ms, group)| Op::EnqueueTwo { user, key, delay_ms, group }),
        3 => (1..4u8).prop_map(|max| Op::Claim { max }),
        1 => any::<u8>().prop_map(|lease| Op::Heartbeat { lease }),
        3 => (any::<u8>(), 0..3u8).prop_map(|(lease, how)| Op::Finish { lease, how }),
        1 => any::<u8>().prop_map(|job| Op::Cancel { job }),
        2 => (0..1_500u16).prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::Reopen),
    ]
}

/// What the model knows of one job.
#[derive(Debug, Clone)]
struct ModelJob {
    user: String,
    /// Set once the job is final; it must never change afterwards.
    final_status: Option<JobStatus>,
    /// Its cancellation was asked while it ran: it must not run again.
    cancel_requested: bool,
}

#[derive(Debug, Clone)]
struct ModelLease {
    job: String,
    token: String,
    expires: i64,
    /// Finished, or overtaken by a newer lease on the same job.
    spent: bool,
}

#[derive(Default)]
struct Model {
    /// (user, key) → job id: one job per key.
    keys: HashMap<(String, u8), String>,
    jobs: HashMap<String, ModelJob>,
    ids: Vec<String>,
    leases: Vec<ModelLease>,
}

fn new_job(user: &str, key: u8, run_at_ms: i64, group: Option<u8>) -> NewJob {
    NewJob {
        max_attempts: MAX_ATTEMPTS,
        concurrency_key: group.map(|g| format!("group-{g}")),
        ..support::new_job(user, &format!("k{key}"), &format!("{{\"key\":{key}}}"), run_at_ms)
    }
}

async fn open(place: &StorePlace, clock: Arc<ManualClock>) -> Arc<dyn AnyStore> {
    let store = place.open(clock, RetryPolicy { base_ms: 100, cap_ms: 400 }).await;
    if store.engine("e1").await.expect("engine").is_none() {
        store.add_engine("e1", Some("u0"), "hash").await.expect("add");
        store.allow_user("e1", "u1", false).await.expect("allow");
    }
    store
}

/// Checks every job the model knows against the store. The one final state the store may reach on its own is
/// `dead` when the lease of the last attempt expired; the model learns it here.
async fn check(store: &Arc<dyn AnyStore>, model: &mut Model, now: i64) -> Result<(), TestCaseError> {
    for (id, known) in model.jobs.iter_mut() {
        let job = store
            .get_job(&known.user, id)
            .await
            .expect("get")
            .ok_or_else(|| TestCaseError::fail(format!("acknowledged job {id} is gone")))?;
        prop_assert!(job.attempts <= job.max_attempts, "job {id}: {} attempts of {}", job.attempts, job.max_attempts);
        match known.final_status {
            Some(final_status) => prop_assert_eq!(job.status, final_status, "job {} left its final state", id),
            None if job.status.is_final() => {
                let leases_lapsed = model.leases.iter().filter(|l| &l.job == id).all(|l| l.spent || l.expires <= now);
                // On its own, a job ends `dead` when its last attempt's lease lapsed, or `cancelled` when a lease of
                // a job whose cancellation was asked lapsed.
                let lapsed_into = if known.cancel_requested { JobStatus::Cancelled } else { JobStatus::Dead };
                let out_of_attempts = known.cancel_requested || job.attempts == job.max_attempts;
                prop_assert!(
                    job.status == lapsed_into && out_of_attempts && leases_lapsed,
                    "job {} became {:?} without a report",
                    id,
                    job.status
                );
                known.final_status = Some(job.status);
            }
            None => {}
        }
        if job.status == JobStatus::Running {
            let live = model.leases.iter().filter(|l| &l.job == id && !l.spent).count();
            prop_assert_eq!(live, 1, "running job {} should have exactly one current lease", id);
        }
    }
    Ok(())
}

/// The store's counters (queue depth, each user's jobs in flight and runnable, each concurrency key's running,
/// ready and parked jobs) against a recount of its jobs: whether a trigger or the driver kept them, they must agree.
async fn check_counters(place: &StorePlace) -> Result<(), TestCaseError> {
    let pairs = [
        (
            "SELECT 'queued', queued FROM queue_stats UNION ALL SELECT 'running', running FROM queue_stats",
            "SELECT status, count(*) FROM jobs WHERE status IN ('queued', 'running') GROUP BY status",
        ),
        (
            "SELECT user_id, inflight FROM user_inflight",
            "SELECT user_id, count(*) FROM jobs WHERE status IN ('queued', 'running') GROUP BY user_id",
        ),
        (
            "SELECT user_id, runnable FROM user_share",
            "SELECT user_id, count(*) FROM jobs WHERE status = 'queued' AND hold = 0 GROUP BY user_id",
        ),
        (
            "SELECT concurrency_key || ':' || 'ready', ready FROM key_state
             UNION ALL SELECT concurrency_key || ':' || 'running', running FROM key_state
             UNION ALL SELECT concurrency_key || ':' || 'parked', parked FROM key_state",
            "SELECT concurrency_key || ':' || CASE WHEN status = 'running' THEN 'running'
                                                 WHEN hold = 0 THEN 'ready' ELSE 'parked' END, count(*)
             FROM jobs WHERE concurrency_key IS NOT NULL
                        AND (status = 'running' OR (status = 'queued' AND hold IN (0, 2)))
             GROUP BY 1",
        ),
    ];
    for (counters, recount) in pairs {
        prop_assert_eq!(
            place.pairs(counters).await,
            place.pairs(recount).await,
            "counters disagree with a recount: {}",
            counters
        );
    }
    Ok(())
}

/// What an enqueue answered, checked against and recorded in the model.
fn learn_enqueue(model: &mut Model, user: &str, key: u8, outcome: EnqueueOutcome) -> Result<(), TestCaseError> {
    match outcome {
        EnqueueOutcome::Created(job) => {
            prop_assert!(model.keys.insert((user.to_string(), key), job.id.clone()).is_none(), "key reused");
            model.ids.push(job.id.clone());
            model.jobs.insert(job.id, ModelJob { user: user.to_string(), final_status: None, cancel_requested: false });
        }
        EnqueueOutcome::Replayed(job) => {
            prop_assert_eq!(model.keys.get(&(user.to_string(), key)), Some(&job.id), "a replay returns the original");
        }
        other => prop_assert!(false, "unexpected {:?}", other),
    }
    Ok(())
}

async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let place = StorePlace::new();
    let clock = Arc::new(ManualClock::new(START));
    let mut store = open(&place, clock.clone()).await;
    let mut model = Model::default();
    for op in ops {
        let now = clock.now_ms();
        match op {
            Op::Enqueue { user, key, delay_ms, group } => {
                let user = format!("u{user}");
                let job = new_job(&user, key, now + i64::from(delay_ms), group);
                let outcome = store.enqueue(job).await.expect("enqueue");
                learn_enqueue(&mut model, &user, key, outcome)?;
            }
            Op::EnqueueTwo { user, key, delay_ms, group } => {
                let user = format!("u{user}");
                let jobs = vec![
                    new_job(&user, key, now + i64::from(delay_ms), group),
                    new_job(&user, key + 1, now + i64::from(delay_ms), group),
                ];
                let outcomes = store.enqueue_many("e1", jobs).await.expect("enqueue two");
                prop_assert_eq!(outcomes.len(), 2);
                for (k, outcome) in [key, key + 1].into_iter().zip(outcomes) {
                    learn_enqueue(&mut model, &user, k, outcome)?;
                }
            }
            Op::Claim { max } => {
                let params = ClaimParams { max: u32::from(max), wait_ms: 0, lease_ms: LEASE_MS, worker: "w".into() };
                let leases = store.claim("e1", params, CancellationToken::new()).await.expect("claim");
                for lease in leases {
                    let id = lease.job.id.clone();
                    // Never to two holders: any earlier lease on this job must have expired.
                    for earlier in model.leases.iter_mut().filter(|l| l.job == id && !l.spent) {
                        prop_assert!(earlier.expires <= now, "job {} leased twice while a lease was live", id);
                        earlier.spent = true;
                    }
                    prop_assert!(model.jobs.get(&id).is_some_and(|j| j.final_status.is_none()), "claimed a final job");
                    model.leases.push(ModelLease {
                        job: id,
                        token: lease.lease_token,
                        expires: now + LEASE_MS as i64,
                        spent: false,
                    });
                }
            }
            Op::Heartbeat { lease } if !model.leases.is_empty() => {
                let index = usize::from(lease) % model.leases.len();
                let held = model.leases[index].clone();
                let live = !held.spent && held.expires > now;
                match store.heartbeat("e1", &held.job, &held.token, LEASE_MS, None).await {
                    Ok((expires, _)) => {
                        prop_assert!(live, "a heartbeat on a stale lease of {} was accepted", held.job);
                        model.leases[index].expires = expires;
                    }
                    Err(StoreError::LeaseLost(_)) => prop_assert!(!live, "a live lease of {} was refused", held.job),
                    Err(other) => prop_assert!(false, "heartbeat: {}", other),
                }
            }
            Op::Finish { lease, how } if !model.leases.is_empty() => {
                let index = usize::from(lease) % model.leases.len();
                let held = model.leases[index].clone();
                let live = !held.spent && held.expires > now;
                let finish = match how {
                    0 => Finish::Succeeded { result: None },
                    1 => Finish::Failed { error: "flaky".into(), retryable: true },
                    _ => Finish::Failed { error: "broken".into(), retryable: false },
                };
                match store.finish("e1", &held.job, &held.token, finish).await {
                    Ok(outcome) => {
                        prop_assert!(live, "a stale lease finished job {}", held.job);
                        model.leases[index].spent = true;
                        if outcome.status.is_final() {
                            let job = model.jobs.get_mut(&held.job).expect("known job");
                            prop_assert!(job.final_status.is_none(), "job {} finished twice", held.job);
                            job.final_status = Some(outcome.status);
                        }
                    }
                    Err(StoreError::LeaseLost(_)) => prop_assert!(!live, "a live lease of {} was refused", held.job),
                    Err(other) => prop_assert!(false, "finish: {}", other),
                }
            }
            Op::Cancel { job } if !model.ids.is_empty() => {
                let id = model.ids[usize::from(job) % model.ids.len()].clone();
                let user = model.jobs[&id].user.clone();
                match store.act(&user, &id, JobAction::Cancel).await.expect("cancel") {
                    ActOutcome::Done(done) => {
                        let job = model.jobs.get_mut(&id).expect("known job");
                        prop_assert!(job.final_status.is_none(), "cancelled a final job");
                        job.final_status = Some(done.status);
                    }
                    ActOutcome::Requested(_) => model.jobs.get_mut(&id).expect("known job").cancel_requested = true,
                    ActOutcome::NotApplicable(status) => prop_assert!(status.is_final()),
                    ActOutcome::NotAllowed | ActOutcome::NotFound => prop_assert!(false, "job {} not found", id),
                }
            }
            Op::Advance { ms } => clock.advance_ms(i64::from(ms)),
            Op::Reopen => {
                drop(store);
                store = open(&place, clock.clone()).await;
            }
            _ => {}
        }
        check(&store, &mut model, clock.now_ms()).await?;
        check_counters(&place).await?;
    }
    // Drain: with time moving on, every job reaches exactly one final state.
    for _ in 0..(MAX_ATTEMPTS as usize * 4 + 4) {
        clock.advance_ms(2_000);
        let params = ClaimParams { max: 100, wait_ms: 0, lease_ms: LEASE_MS, worker: "drain".into() };
        for lease in store.claim("e1", params, CancellationToken::new()).await.expect("claim") {
            for earlier in model.leases.iter_mut().filter(|l| l.job == lease.job.id) {
                earlier.spent = true;
            }
            let outcome = store
                .finish("e1", &lease.job.id, &lease.lease_token, Finish::Succeeded { result: None })
                .await
                .expect("finish");
            let job = model.jobs.get_mut(&lease.job.id).expect("known job");
            prop_assert!(job.final_status.is_none());
            job.final_status = Some(outcome.status);
        }
    }
    check(&store, &mut model, clock.now_ms()).await?;
    for (id, known) in &model.jobs {
        let job = store.get_job(&known.user, id).await.expect("get").expect("job");
        prop_assert!(job.status.is_final(), "job {} never finished: {:?}", id, job.status);
        prop_assert_eq!(Some(job.status), known.final_status);
    }
    Ok(())
}

proptest! {
    // Fewer cases on PostgreSQL: each opens a database of its own over the network.
    #![proptest_config(ProptestConfig {
        cases: if support::on_postgres() { 16 } else { 48 },
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_store_keeps_its_promises_under_any_sequence(ops in proptest::collection::vec(op(), 1..60)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(run(ops))?;
    }
}
