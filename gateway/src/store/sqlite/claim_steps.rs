//! SQLite's steps of the neutral claim (`store/core/claim.rs`), on the shard writer's transaction.

use rusqlite::Connection;

use super::{breakers, fair, parking, queries};
use crate::store::breakers::HeldBack;
use crate::store::core::claim::{ClaimSteps, ProbeWanted};
use crate::store::core::fair::{ClaimBy, Claimed};
use crate::store::core::stats::Tally;
use crate::store::{BreakerPolicy, StoreError};

/// A shard's open transaction.
pub struct ShardClaim<'a>(pub &'a Connection);

impl ClaimSteps for ShardClaim<'_> {
    /// (job id, kind).
    type Lapsed = (String, String);

    async fn paused(&mut self) -> Result<bool, StoreError> {
        queries::is_paused(self.0)
    }

    async fn reap_expired(&mut self, now: i64, tally: &mut Tally) -> Result<Vec<Self::Lapsed>, StoreError> {
        queries::reap_expired(self.0, now, tally)
    }

    async fn record_lapsed(
        &mut self,
        lapsed: &[Self::Lapsed],
        now: i64,
        policy: BreakerPolicy,
    ) -> Result<(), StoreError> {
        breakers::record_lapsed(self.0, lapsed, now, policy)
    }

    async fn refresh_breakers(&mut self, now: i64, policy: BreakerPolicy) -> Result<(), StoreError> {
        breakers::refresh(self.0, now, policy)
    }

    async fn held(&mut self) -> Result<HeldBack, StoreError> {
        breakers::held(self.0, true)
    }

    async fn claim(&mut self, by: &ClaimBy<'_>, held: &HeldBack) -> Result<Claimed, StoreError> {
        fair::claim(self.0, by, held)
    }

    async fn wanting_a_probe(&mut self) -> Result<Vec<ProbeWanted>, StoreError> {
        breakers::wanting_a_probe(self.0)
    }

    async fn claim_probe(&mut self, by: &ClaimBy<'_>, kind: &str, user: Option<&str>) -> Result<Claimed, StoreError> {
        fair::claim_probe(self.0, by, kind, user)
    }

    async fn set_probe(&mut self, kind: &str, user: Option<&str>, job_id: &str) -> Result<(), StoreError> {
        breakers::set_probe(self.0, kind, user, job_id)
    }

    async fn release_parked_keys(&mut self) -> Result<(), StoreError> {
        parking::release_parked_keys(self.0).map(drop)
    }

    async fn next_due(&mut self, cooldown_ms: u64) -> Result<Option<i64>, StoreError> {
        queries::next_due(self.0, cooldown_ms)
    }
}
