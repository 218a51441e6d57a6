//! The tamper-evident audit log: what a row is and how the hash chain over rows is computed and checked.
//!
//! Each row's hash covers its own fields and the previous row's hash. Editing a row changes its hash (the next
//! row no longer points at it); deleting a row leaves an id gap and a dangling `prev_hash`. Pruning old rows
//! records the last pruned row's id and hash as the anchor the remaining chain must start from.

use sha2::{Digest, Sha256};

/// The `prev_hash` of the very first row.
pub const GENESIS: &str = "genesis";

/// What happened, by whom, to what.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditEntry {
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub ip: Option<String>,
    /// `ok`, or the error code of a refusal.
    pub outcome: String,
    pub detail: Option<String>,
}

impl AuditEntry {
    pub fn new(actor: impl Into<String>, action: impl Into<String>, outcome: impl Into<String>) -> Self {
        Self { actor: actor.into(), action: action.into(), outcome: outcome.into(), ..Self::default() }
    }

    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    pub fn ip(mut self, ip: Option<String>) -> Self {
        self.ip = ip;
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

/// A stored row.
#[derive(Debug, Clone)]
pub struct AuditRow {
    pub id: i64,
    pub at_ms: i64,
    pub entry: AuditEntry,
    pub prev_hash: String,
    pub hash: String,
}

/// The hash of a row: SHA-256 over an unambiguous (JSON array) encoding of every field and the previous hash.
pub fn row_hash(prev_hash: &str, id: i64, at_ms: i64, entry: &AuditEntry) -> String {
    let encoded = serde_json::json!([
        prev_hash,
        id,
        at_ms,
        entry.actor,
        entry.action,
        entry.target,
        entry.ip,
        entry.outcome,
        entry.detail
    ])
    .to_string();
    hex::encode(Sha256::digest(encoded.as_bytes()))
}

/// Where and why a chain check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit chain broken at row {id}: {reason}")]
pub struct ChainBreak {
    pub id: i64,
    pub reason: String,
}

/// Checks rows (in id order) against the chain, starting from the anchor (or the genesis); returns how many
/// rows were checked.
pub fn verify_chain(
    anchor: Option<(i64, String)>,
    rows: impl IntoIterator<Item = AuditRow>,
) -> Result<u64, ChainBreak> {
    let (mut last_id, mut last_hash) = anchor.unwrap_or((0, GENESIS.to_string()));
    let mut checked = 0;
    for row in rows {
        if row.id != last_id + 1 {
            return Err(ChainBreak {
                id: row.id,
                reason: format!("rows {} to {} are missing", last_id + 1, row.id - 1),
            });
        }
        if row.prev_hash != last_hash {
            return Err(ChainBreak { id: row.id, reason: "does not point at the previous row".into() });
        }
        if row_hash(&row.prev_hash, row.id, row.at_ms, &row.entry) != row.hash {
            return Err(ChainBreak { id: row.id, reason: "its contents were changed".into() });
        }
        last_id = row.id;
        last_hash = row.hash;
        checked += 1;
    }
    Ok(checked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<AuditRow> {
        let mut prev = GENESIS.to_string();
        (1..=n)
            .map(|id| {
                let entry = AuditEntry::new("alice", "auth.verify", "ok").target(format!("t{id}"));
                let hash = row_hash(&prev, id, 1_000 + id, &entry);
                let row = AuditRow { id, at_ms: 1_000 + id, entry, prev_hash: prev.clone(), hash: hash.clone() };
                prev = hash;
                row
            })
            .collect()
    }

    #[test]
    fn an_intact_chain_verifies() {
        assert_eq!(verify_chain(None, chain(5)), Ok(5));
        assert_eq!(verify_chain(None, Vec::new()), Ok(0));
    }

    #[test]
    fn edits_deletions_and_reordering_are_detected() {
        let mut edited = chain(5);
        edited[2].entry.outcome = "bad_signature".into();
        assert_eq!(verify_chain(None, edited).unwrap_err().id, 3);

        let mut deleted = chain(5);
        deleted.remove(1);
        assert_eq!(verify_chain(None, deleted).unwrap_err().id, 3);

        let mut head_cut = chain(5);
        head_cut.remove(0);
        assert!(verify_chain(None, head_cut).is_err());

        let mut rehashed = chain(5);
        rehashed[1].entry.actor = "mallory".into();
        rehashed[1].hash = row_hash(&rehashed[1].prev_hash, 2, rehashed[1].at_ms, &rehashed[1].entry);
        assert_eq!(verify_chain(None, rehashed).unwrap_err().id, 3, "re-hashing one row breaks the next link");
    }

    #[test]
    fn a_pruned_chain_verifies_from_its_anchor() {
        let rows = chain(6);
        let anchor = (rows[2].id, rows[2].hash.clone());
        assert_eq!(verify_chain(Some(anchor.clone()), rows[3..].to_vec()), Ok(3));
        assert!(verify_chain(Some(anchor), rows[4..].to_vec()).is_err());
    }
}
