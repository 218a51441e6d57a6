//! PostgreSQL's steps of the neutral claim (`store/core/claim.rs`), in a transaction holding the engine's lock.

use deadpool_postgres::GenericClient;
use flowork_common::wire::Job;

use super::{breakers, claim, jobs};
use crate::store::breakers::HeldBack;
use crate::store::core::claim::{ClaimSteps, ProbeWanted};
use crate::store::core::fair::{ClaimBy, Claimed};
use crate::store::core::stats::Tally;
use crate::store::{BreakerPolicy, StoreError};

/// An open transaction on one engine's rows.
pub struct EngineClaim<'a, C> {
    pub tx: &'a C,
    pub engine: &'a str,
}

impl<C: GenericClient + Sync> ClaimSteps for EngineClaim<'_, C> {
    /// The reaped job as it is now (for live events).
    type Lapsed = Job;

    async fn paused(&mut self) -> Result<bool, StoreError> {
        claim::lock_state(self.tx, self.engine).await
    }

    async fn reap_expired(&mut self, now: i64, tally: &mut Tally) -> Result<Vec<Self::Lapsed>, StoreError> {
        jobs::reap_expired(self.tx, self.engine, now, tally).await
    }

    async fn record_lapsed(
        &mut self,
        lapsed: &[Self::Lapsed],
        now: i64,
        policy: BreakerPolicy,
    ) -> Result<(), StoreError> {
        breakers::record_lapsed(self.tx, self.engine, lapsed, now, policy).await
    }

    async fn refresh_breakers(&mut self, now: i64, policy: BreakerPolicy) -> Result<(), StoreError> {
        breakers::refresh(self.tx, self.engine, now, policy).await
    }

    async fn held(&mut self) -> Result<HeldBack, StoreError> {
        breakers::held(self.tx, self.engine).await
    }

    async fn claim(&mut self, by: &ClaimBy<'_>, held: &HeldBack) -> Result<Claimed, StoreError> {
        claim::claim(self.tx, by, held).await
    }

    async fn wanting_a_probe(&mut self) -> Result<Vec<ProbeWanted>, StoreError> {
        breakers::wanting_a_probe(self.tx, self.engine).await
    }

    async fn claim_probe(&mut self, by: &ClaimBy<'_>, kind: &str, user: Option<&str>) -> Result<Claimed, StoreError> {
        claim::claim_probe(self.tx, by, kind, user).await
    }

    async fn set_probe(&mut self, kind: &str, user: Option<&str>, job_id: &str) -> Result<(), StoreError> {
        breakers::set_probe(self.tx, self.engine, kind, user, job_id).await
    }

    async fn release_parked_keys(&mut self) -> Result<(), StoreError> {
        claim::release_parked_keys(self.tx, self.engine).await.map(drop)
    }

    async fn next_due(&mut self, cooldown_ms: u64) -> Result<Option<i64>, StoreError> {
        claim::next_due(self.tx, self.engine, cooldown_ms).await
    }
}
