//! The tamper-evident audit log: what a row is, how the hash chain and its keyed signatures are computed, and how
//! a stored log is checked.
//!
//! Each row's hash covers its own fields and the previous row's hash. Editing a row changes its hash (the next
//! row no longer points at it); deleting a row leaves an id gap and a dangling `prev_hash`. Recomputing every hash
//! after an edit is caught by the signatures: each row carries an HMAC of its id and hash under the audit key,
//! which is kept with the gateway's keys, not in the log's database. Cutting the newest rows is caught by the
//! signed *head*, the newest row checkpointed, which also lives with the key. Pruning old rows records the last
//! pruned row's id and hash, signed, as the anchor the remaining chain must start from.

use std::fmt;

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The `prev_hash` of the very first row.
pub const GENESIS: &str = "genesis";

/// The most bytes kept of an entry's free-text fields (`target`, `detail`); longer values are cut.
pub const MAX_TEXT_BYTES: usize = 1024;
/// The most bytes kept of an entry's short fields (`actor`, `action`, `ip`, `outcome`).
pub const MAX_NAME_BYTES: usize = 128;
/// Appended to a value that was cut, so a reader knows the row holds only its start.
pub const TRUNCATED_MARK: &str = "…[truncated]";

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

    /// The entry with every field cut to its bound. Values often come from requests (a refused sign-in's message
    /// quotes the attacker's domain and URI), so the stores apply this to every entry they append: a row's size
    /// never depends on what a client sent.
    pub fn bounded(self) -> Self {
        Self {
            actor: bound(self.actor, MAX_NAME_BYTES),
            action: bound(self.action, MAX_NAME_BYTES),
            target: self.target.map(|t| bound(t, MAX_TEXT_BYTES)),
            ip: self.ip.map(|ip| bound(ip, MAX_NAME_BYTES)),
            outcome: bound(self.outcome, MAX_NAME_BYTES),
            detail: self.detail.map(|d| bound(d, MAX_TEXT_BYTES)),
        }
    }
}

/// `text` cut to at most `max` bytes (on a character boundary, the mark included) and marked as cut.
pub fn bound(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max.saturating_sub(TRUNCATED_MARK.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(TRUNCATED_MARK);
    text
}

/// The start of a `--since` / `since=` window: an RFC 3339 time, or a duration back from `now_ms` (`1h`, `7d`).
pub fn parse_since(text: &str, now_ms: i64) -> Result<i64, String> {
    if let Some(ms) = flowork_common::timefmt::parse_ms(text) {
        return Ok(ms);
    }
    match humantime::parse_duration(text) {
        Ok(back) => Ok(now_ms.saturating_sub(i64::try_from(back.as_millis()).unwrap_or(i64::MAX))),
        Err(_) => Err(format!("{text:?} is neither an RFC 3339 time nor a duration such as 1h or 7d")),
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
    /// The row's signature; `None` on rows written before the log was signed.
    pub mac: Option<String>,
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

/// What a signature vouches for; each kind has its own label, so one cannot stand in for another.
#[derive(Debug, Clone, Copy)]
pub enum Signed {
    /// A row: its id and hash (and through the hash, every row before it).
    Row,
    /// The prune anchor: the last pruned row.
    Anchor,
    /// The head: the newest row checkpointed.
    Head,
}

impl Signed {
    fn label(self) -> &'static str {
        match self {
            Self::Row => "flowork-audit-row",
            Self::Anchor => "flowork-audit-anchor",
            Self::Head => "flowork-audit-head",
        }
    }
}

/// The audit log's HMAC-SHA256 key (32 random bytes), kept with the gateway's signing keys.
#[derive(Clone)]
pub struct AuditKey([u8; 32]);

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuditKey(..)")
    }
}

impl AuditKey {
    pub fn generate() -> Self {
        Self(rand::random())
    }

    /// The key from its 32 bytes; `None` for any other length.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Some(Self(bytes.try_into().ok()?))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    fn hmac(&self, what: Signed, id: i64, hash: &str) -> Hmac<Sha256> {
        // A 32-byte key is always accepted by HMAC.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!());
        mac.update(format!("{}\n{id}\n{hash}", what.label()).as_bytes());
        mac
    }

    /// The hex signature of (`id`, `hash`) as `what`.
    pub fn sign(&self, what: Signed, id: i64, hash: &str) -> String {
        hex::encode(self.hmac(what, id, hash).finalize().into_bytes())
    }

    /// Whether `mac` is the signature of (`id`, `hash`) as `what` (compared in constant time).
    pub fn verify(&self, what: Signed, id: i64, hash: &str, mac: &str) -> bool {
        hex::decode(mac).is_ok_and(|mac| self.hmac(what, id, hash).verify_slice(&mac).is_ok())
    }
}

/// A row named by id and hash, with the signature that vouches for it: the prune anchor or the head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Checkpoint {
    pub id: i64,
    pub hash: String,
    pub mac: Option<String>,
}

impl Checkpoint {
    pub fn signed(key: &AuditKey, what: Signed, id: i64, hash: &str) -> Self {
        Self { id, hash: hash.to_string(), mac: Some(key.sign(what, id, hash)) }
    }
}

/// One thing wrong with a stored log, at the row it concerns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error, utoipa::ToSchema)]
#[error("row {id}: {reason}")]
pub struct ChainBreak {
    pub id: i64,
    pub reason: String,
}

/// The outcome of checking a stored log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    /// Rows checked.
    pub rows: u64,
    /// Of them, rows carrying a signature.
    pub signed: u64,
    /// Of them, rows without one (written before the log was signed, or by an older build).
    pub unsigned: u64,
    /// The newest row checkpointed as the head, if any.
    pub head: Option<i64>,
    /// Everything found wrong, in row order (at most `MAX_PROBLEMS`, then a count of the rest).
    pub problems: Vec<ChainBreak>,
}

/// The most problems listed one by one.
const MAX_PROBLEMS: usize = 100;

impl AuditReport {
    pub fn is_intact(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for AuditReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut head = self.head.map(|h| format!(", head checkpoint at row {h}")).unwrap_or_default();
        if self.unsigned > 0 {
            head = format!(", {} unsigned{head}", self.unsigned);
        }
        if self.is_intact() {
            return write!(f, "audit chain intact: {} rows verified ({} signed{head})", self.rows, self.signed);
        }
        writeln!(
            f,
            "audit chain BROKEN: {} problem(s) in {} rows ({} signed{head}):",
            self.problems.len(),
            self.rows,
            self.signed
        )?;
        for problem in &self.problems {
            writeln!(f, "  {problem}")?;
        }
        Ok(())
    }
}

/// `rows 5 to 6 are` / `row 5 is`.
fn missing(first: i64, last: i64) -> String {
    if first == last { format!("row {first} is") } else { format!("rows {first} to {last} are") }
}

/// Checks rows (in id order) against the chain, from the anchor (or the genesis) to the head, with `key`.
///
/// Rows written before the log was signed (or by an older build beside this one) carry no signature: the next
/// signed row or the head vouches for their hashes. An unsigned anchor is accepted only in front of unsigned rows.
pub fn verify_log(
    key: &AuditKey,
    anchor: Option<Checkpoint>,
    head: Option<Checkpoint>,
    rows: impl IntoIterator<Item = AuditRow>,
) -> AuditReport {
    let mut problems = Vec::new();
    let mut bad_signatures = Vec::new();
    let (anchor_id, anchor_hash) = anchor.as_ref().map(|a| (a.id, a.hash.clone())).unwrap_or((0, GENESIS.into()));
    let anchor_unsigned = anchor.as_ref().is_some_and(|a| a.mac.is_none());
    if let Some(Checkpoint { id, hash, mac: Some(mac) }) = &anchor
        && !key.verify(Signed::Anchor, *id, hash, mac)
    {
        problems.push(ChainBreak {
            id: *id,
            reason: "the prune anchor's signature does not match: it was forged (or moved by an older build)".into(),
        });
    }
    let (mut last_id, mut last_hash) = (anchor_id, anchor_hash.clone());
    let (mut rows_checked, mut signed, mut unsigned) = (0, 0, 0);
    let mut head_row_hash = None;
    for row in rows {
        if row.id <= last_id {
            problems.push(ChainBreak { id: row.id, reason: format!("comes after row {last_id}: out of order") });
        } else if row.id != last_id + 1 {
            problems
                .push(ChainBreak { id: last_id + 1, reason: format!("{} missing", missing(last_id + 1, row.id - 1)) });
        } else if row.prev_hash != last_hash {
            problems.push(ChainBreak { id: row.id, reason: "does not point at the previous row".into() });
        }
        if row_hash(&row.prev_hash, row.id, row.at_ms, &row.entry) != row.hash {
            problems.push(ChainBreak { id: row.id, reason: "hash mismatch: its contents were changed".into() });
        }
        match &row.mac {
            Some(mac) => {
                if signed == 0 && anchor_unsigned && rows_checked == 0 {
                    problems.push(ChainBreak {
                        id: anchor_id,
                        reason: "the prune anchor is not signed: it was forged (or moved by an older build)".into(),
                    });
                }
                signed += 1;
                if !key.verify(Signed::Row, row.id, &row.hash, mac) {
                    bad_signatures.push(ChainBreak {
                        id: row.id,
                        reason: "signature mismatch: the row was rewritten (its hashes recomputed)".into(),
                    });
                }
            }
            // Unsigned: written before the log was signed, or by an older build beside this one (a canary).
            // Its hash is still vouched for by the next signed row or the head, which chain over it.
            None => unsigned += 1,
        }
        if head.as_ref().is_some_and(|h| h.id == row.id) {
            head_row_hash = Some(row.hash.clone());
        }
        rows_checked += 1;
        last_id = last_id.max(row.id);
        last_hash = row.hash;
    }
    if signed > 1 && bad_signatures.len() as u64 == signed {
        problems.push(ChainBreak {
            id: bad_signatures[0].id,
            reason: format!(
                "none of the {signed} signed rows matches the audit key: the key was replaced or lost, or every row \
                 was rewritten"
            ),
        });
    } else {
        problems.extend(bad_signatures);
    }
    match &head {
        Some(h) if !h.mac.as_deref().is_some_and(|mac| key.verify(Signed::Head, h.id, &h.hash, mac)) => {
            problems.push(ChainBreak { id: h.id, reason: "the head checkpoint's signature does not match".into() })
        }
        Some(h) if h.id > last_id => problems.push(ChainBreak {
            id: last_id + 1,
            reason: format!(
                "{} missing after the end of the log (row {last_id}): row {} was checkpointed as the head, so the \
                 newest rows were deleted",
                missing(last_id + 1, h.id),
                h.id
            ),
        }),
        Some(h) if h.id == anchor_id && h.hash != anchor_hash => {
            problems.push(ChainBreak { id: h.id, reason: "the prune anchor does not match the head checkpoint".into() })
        }
        Some(h) if h.id > anchor_id && head_row_hash.as_deref() != Some(h.hash.as_str()) => problems.push(ChainBreak {
            id: h.id,
            reason: "does not match the head checkpoint: the log up to here was rewritten".into(),
        }),
        None if signed > 0 => {
            problems.push(ChainBreak { id: last_id, reason: "the head checkpoint is missing".into() })
        }
        _ => {}
    }
    problems.sort_by_key(|p| p.id);
    if problems.len() > MAX_PROBLEMS {
        let more = problems.len() - MAX_PROBLEMS;
        problems.truncate(MAX_PROBLEMS);
        let id = problems.last().map(|p| p.id).unwrap_or(last_id);
        problems.push(ChainBreak { id, reason: format!("and {more} more problem(s) after this one") });
    }
    AuditReport { rows: rows_checked, signed, unsigned, head: head.map(|h| h.id), problems }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(key: &AuditKey, n: i64) -> Vec<AuditRow> {
        let mut prev = GENESIS.to_string();
        (1..=n)
            .map(|id| {
                let entry = AuditEntry::new("alice", "auth.verify", "ok").target(format!("t{id}"));
                let hash = row_hash(&prev, id, 1_000 + id, &entry);
                let mac = Some(key.sign(Signed::Row, id, &hash));
                let row = AuditRow { id, at_ms: 1_000 + id, entry, prev_hash: prev.clone(), hash: hash.clone(), mac };
                prev = hash;
                row
            })
            .collect()
    }

    fn head_of(key: &AuditKey, rows: &[AuditRow]) -> Option<Checkpoint> {
        rows.last().map(|r| Checkpoint::signed(key, Signed::Head, r.id, &r.hash))
    }

    fn ids(report: &AuditReport) -> Vec<i64> {
        report.problems.iter().map(|p| p.id).collect()
    }

    #[test]
    fn an_intact_chain_verifies() {
        let key = AuditKey::generate();
        let rows = chain(&key, 5);
        let report = verify_log(&key, None, head_of(&key, &rows), rows);
        assert!(report.is_intact(), "{report}");
        assert_eq!((report.rows, report.signed, report.head), (5, 5, Some(5)));
        assert!(verify_log(&key, None, None, Vec::new()).is_intact());
    }

    #[test]
    fn edits_deletions_and_reordering_are_detected() {
        let key = AuditKey::generate();
        let verify = |rows: Vec<AuditRow>, head| verify_log(&key, None, head, rows);
        let head = head_of(&key, &chain(&key, 5));

        let mut edited = chain(&key, 5);
        edited[2].entry.outcome = "bad_signature".into();
        assert_eq!(ids(&verify(edited, head.clone())), [3]);

        let mut deleted = chain(&key, 5);
        deleted.remove(1);
        assert_eq!(ids(&verify(deleted, head.clone())), [2]);

        let mut head_cut = chain(&key, 5);
        head_cut.remove(0);
        assert!(!verify(head_cut, head.clone()).is_intact());

        let mut rehashed = chain(&key, 5);
        rehashed[1].entry.actor = "mallory".into();
        rehashed[1].hash = row_hash(&rehashed[1].prev_hash, 2, rehashed[1].at_ms, &rehashed[1].entry);
        assert_eq!(ids(&verify(rehashed, head.clone())), [2, 3], "the row's signature and the next link break");
    }

    #[test]
    fn rewriting_with_recomputed_hashes_is_caught_by_the_signatures() {
        let key = AuditKey::generate();
        let original = chain(&key, 5);
        let head = head_of(&key, &original);
        let mut rows = original.clone();
        rows[1].entry.actor = "mallory".into();
        let mut prev = rows[0].hash.clone();
        for row in &mut rows[1..] {
            row.prev_hash = prev.clone();
            row.hash = row_hash(&prev, row.id, row.at_ms, &row.entry);
            prev = row.hash.clone();
        }
        let report = verify_log(&key, None, head.clone(), rows.clone());
        assert_eq!(ids(&report), [2, 3, 4, 5, 5], "{report}");
        assert!(report.problems.iter().any(|p| p.reason.contains("head checkpoint")), "{report}");

        let mut unsigned = rows;
        for row in &mut unsigned {
            row.mac = None;
        }
        let report = verify_log(&key, None, head, unsigned);
        assert_eq!(ids(&report), [5], "with every signature removed, the head still catches it: {report}");
    }

    #[test]
    fn cutting_the_newest_rows_is_caught_by_the_head() {
        let key = AuditKey::generate();
        let rows = chain(&key, 6);
        let head = head_of(&key, &rows);
        let report = verify_log(&key, None, head, rows[..4].to_vec());
        assert_eq!(ids(&report), [5], "{report}");
        assert!(report.problems[0].reason.contains("rows 5 to 6 are missing"), "{report}");
    }

    #[test]
    fn a_wrong_key_is_named_once() {
        let rows = chain(&AuditKey::generate(), 4);
        let other = AuditKey::generate();
        let report = verify_log(&other, None, None, rows);
        assert!(report.problems.iter().any(|p| p.reason.contains("none of the 4 signed rows")), "{report}");
        assert_eq!(report.problems.len(), 2, "the key, and the head that cannot be found: {report}");
    }

    #[test]
    fn unsigned_rows_are_vouched_for_by_the_signed_rows_and_the_head_after_them() {
        let key = AuditKey::generate();
        let mut rows = chain(&key, 4);
        let head = head_of(&key, &rows);
        rows[0].mac = None;
        rows[2].mac = None;
        let report = verify_log(&key, None, head.clone(), rows.clone());
        assert!(report.is_intact(), "{report}");
        assert_eq!((report.signed, report.unsigned), (2, 2));
        // An unsigned row rewritten with the hashes after it recomputed: the next signature catches it.
        rows[2].entry.actor = "mallory".into();
        rows[2].hash = row_hash(&rows[2].prev_hash, 3, rows[2].at_ms, &rows[2].entry);
        rows[3].prev_hash = rows[2].hash.clone();
        rows[3].hash = row_hash(&rows[3].prev_hash, 4, rows[3].at_ms, &rows[3].entry);
        assert_eq!(ids(&verify_log(&key, None, head, rows)), [4, 4], "row 4's signature and the head");
    }

    #[test]
    fn a_pruned_chain_verifies_from_its_signed_anchor() {
        let key = AuditKey::generate();
        let rows = chain(&key, 6);
        let head = head_of(&key, &rows);
        let anchor = Checkpoint::signed(&key, Signed::Anchor, rows[2].id, &rows[2].hash);
        assert!(verify_log(&key, Some(anchor.clone()), head.clone(), rows[3..].to_vec()).is_intact());
        assert!(!verify_log(&key, Some(anchor.clone()), head.clone(), rows[4..].to_vec()).is_intact());

        let forged = Checkpoint::signed(&AuditKey::generate(), Signed::Anchor, rows[3].id, &rows[3].hash);
        assert!(!verify_log(&key, Some(forged), head.clone(), rows[4..].to_vec()).is_intact());
        let unsigned = Checkpoint { mac: None, ..anchor };
        assert!(!verify_log(&key, Some(unsigned), head, rows[3..].to_vec()).is_intact());
    }

    #[test]
    fn since_is_a_time_or_a_duration_back() {
        assert_eq!(parse_since("1970-01-01T00:00:01Z", 0), Ok(1_000));
        assert_eq!(parse_since("1h", 7_200_000), Ok(3_600_000));
        assert!(parse_since("yesterday", 0).is_err());
    }

    #[test]
    fn fields_are_cut_on_character_boundaries_and_marked() {
        let long = "é".repeat(10_000);
        let entry = AuditEntry::new(long.clone(), "auth.verify", "ok").target(long.clone()).detail(long).bounded();
        assert!(entry.actor.len() <= MAX_NAME_BYTES && entry.actor.ends_with(TRUNCATED_MARK));
        assert!(entry.detail.as_deref().is_some_and(|d| d.len() <= MAX_TEXT_BYTES && d.ends_with(TRUNCATED_MARK)));
        assert!(entry.target.as_deref().is_some_and(|t| t.len() <= MAX_TEXT_BYTES));
        assert_eq!(AuditEntry::new("a", "b", "ok").bounded(), AuditEntry::new("a", "b", "ok"));
    }
}
