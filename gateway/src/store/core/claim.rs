//! One claim, the same on every store: reap lapsed leases, bring breakers up to date, claim in fair order, add one
//! probe per cooled-down breaker, and say when work is next due. Each driver supplies the steps in its own SQL.
//!
//! The steps are `async` so PostgreSQL can await its round trips; SQLite's are plain calls wrapped in ready
//! futures, run to completion by [`run_ready`] on the shard's writer thread.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use flowork_common::wire::Lease;

use super::fair::{ClaimBy, Claimed};
use super::stats::Tally;
use crate::observability::queue_metrics::QueueMetrics;
use crate::store::breakers::{HeldBack, probes_to_claim};
use crate::store::{BreakerPolicy, StoreError};

/// A kind (and, for a per-user breaker, the user) whose breaker wants a probe job.
pub type ProbeWanted = (String, Option<String>);

/// The database steps of a claim, within the driver's transaction on one engine.
// Used only with concrete drivers (static dispatch), so the futures' `Send` is the driver's own.
#[allow(async_fn_in_trait)]
pub trait ClaimSteps {
    /// A job whose lease lapsed, in the form the driver's breakers record it.
    type Lapsed;

    /// Whether the engine is paused (a paused engine hands out nothing).
    async fn paused(&mut self) -> Result<bool, StoreError>;
    /// Requeues (or buries) jobs whose lease expired, counting them in `tally`.
    async fn reap_expired(&mut self, now: i64, tally: &mut Tally) -> Result<Vec<Self::Lapsed>, StoreError>;
    /// Counts lapsed leases as failures of their kinds' breakers.
    async fn record_lapsed(
        &mut self,
        lapsed: &[Self::Lapsed],
        now: i64,
        policy: BreakerPolicy,
    ) -> Result<(), StoreError>;
    /// Opens, half-opens and closes breakers by the clock.
    async fn refresh_breakers(&mut self, now: i64, policy: BreakerPolicy) -> Result<(), StoreError>;
    /// What open breakers hold back.
    async fn held(&mut self) -> Result<HeldBack, StoreError>;
    /// Claims runnable jobs in fair order, skipping what `held` holds back.
    async fn claim(&mut self, by: &ClaimBy<'_>, held: &HeldBack) -> Result<Claimed, StoreError>;
    /// The breakers that have cooled down and want one probe job.
    async fn wanting_a_probe(&mut self) -> Result<Vec<ProbeWanted>, StoreError>;
    /// Claims one held job of `kind` (and `user`) as a breaker's probe.
    async fn claim_probe(&mut self, by: &ClaimBy<'_>, kind: &str, user: Option<&str>) -> Result<Claimed, StoreError>;
    /// Marks `job_id` as the probe of `kind`'s (and `user`'s) breaker.
    async fn set_probe(&mut self, kind: &str, user: Option<&str>, job_id: &str) -> Result<(), StoreError>;
    /// Releases jobs parked behind a key limit that now has room.
    async fn release_parked_keys(&mut self) -> Result<(), StoreError>;
    /// When the next delayed job (or a breaker's cool-down) falls due, if any.
    async fn next_due(&mut self, cooldown_ms: u64) -> Result<Option<i64>, StoreError>;
}

/// What one claim did.
#[derive(Debug)]
pub struct ClaimDone<L> {
    pub leases: Vec<Lease>,
    /// The jobs whose lease lapsed and were reaped on the way.
    pub lapsed: Vec<L>,
    /// When the next job becomes due, if nothing was claimable.
    pub next_due_ms: Option<i64>,
}

/// Runs one claim through `steps`, counting it in `metrics` and `tally`.
pub async fn claim<S: ClaimSteps>(
    steps: &mut S,
    by: &ClaimBy<'_>,
    breaker: BreakerPolicy,
    metrics: &QueueMetrics,
    tally: &mut Tally,
) -> Result<ClaimDone<S::Lapsed>, StoreError> {
    if steps.paused().await? {
        // A paused engine gets nothing; the waiting claim sleeps until resumed (resume wakes it).
        return Ok(ClaimDone { leases: Vec::new(), lapsed: Vec::new(), next_due_ms: None });
    }
    let now = by.now;
    let lapsed = steps.reap_expired(now, tally).await?;
    steps.record_lapsed(&lapsed, now, breaker).await?;
    let breakers_on = breaker.failures > 0;
    let held = if breakers_on {
        steps.refresh_breakers(now, breaker).await?;
        steps.held().await?
    } else {
        HeldBack::default()
    };
    let mut claimed = steps.claim(by, &held).await?;
    if breakers_on {
        for (kind, user) in probes_to_claim(steps.wanting_a_probe().await?, &held) {
            if claimed.leases.len() >= by.max as usize {
                break;
            }
            let probe = steps.claim_probe(by, &kind, user.as_deref()).await?;
            if let Some(lease) = probe.leases.first() {
                steps.set_probe(&kind, user.as_deref(), &lease.job.id).await?;
            }
            claimed.leases.extend(probe.leases);
            claimed.waited_ms.extend(probe.waited_ms);
        }
    }
    if !lapsed.is_empty() {
        steps.release_parked_keys().await?;
    }
    let next_due_ms = if claimed.leases.is_empty() { steps.next_due(breaker.cooldown_ms).await? } else { None };
    // Counted before the commit: a claim that then fails to commit overstates the rate a little, once.
    metrics.record_claims(now, &claimed.waited_ms);
    for (lease, waited) in claimed.leases.iter().zip(&claimed.waited_ms) {
        tally.claimed(&lease.job.user, now, *waited);
    }
    Ok(ClaimDone { leases: claimed.leases, lapsed, next_due_ms })
}

/// Runs a future whose steps never wait (SQLite's) to its end on this thread.
pub fn run_ready<T>(future: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
    let mut future = pin!(future);
    match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(value) => value,
        Poll::Pending => Err(StoreError::Task("a synchronous store step waited".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ready_future_runs_and_a_waiting_one_is_an_error() {
        assert_eq!(run_ready(async { Ok::<_, StoreError>(7) }).ok(), Some(7));
        let waits = async {
            std::future::pending::<()>().await;
            Ok::<_, StoreError>(())
        };
        assert!(matches!(run_ready(waits), Err(StoreError::Task(_))));
    }
}
