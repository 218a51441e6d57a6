//! Circuit breakers of job kinds, decided once for every store: which outcomes count, when a breaker opens, and
//! whose jobs it holds back. The drivers (`sqlite/breakers.rs`, `postgres/breakers.rs`) only read and write rows.
//!
//! A failure counts only when another attempt might have worked (`retryable`: a timeout, a 503, an engine-side
//! error), and so does a lease that lapsed (the engine stopped heartbeating: it may have crashed on the job). A
//! job the engine refuses for its own input (a permanent failure) says nothing about its kind and is dead at
//! once, so it burns no further attempts to save. A failure counts first against its *user's* breaker of
//! the kind, which holds back only that user's jobs of the kind; the kind's breaker on the engine, which holds
//! back everyone's, opens only when the failures come from several users: each user counts for at most
//! `1 / KIND_MIN_USERS` of `--breaker-failures`. So however many bad jobs one tenant sends, another tenant's jobs
//! of the same kind keep their place in the fair order.

use std::collections::HashSet;

use super::{BreakerPolicy, Finish};

pub const CLOSED: &str = "closed";
pub const OPEN: &str = "open";
pub const HALF_OPEN: &str = "half_open";

/// How many users' failures it takes, at least, to open a kind's breaker for everyone on an engine.
pub const KIND_MIN_USERS: usize = 2;

/// What an attempt tells the breakers of its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal<'a> {
    /// It worked: the kind works.
    Worked,
    /// It failed in a way another attempt might not (the error, for `/status`).
    Failed(&'a str),
}

impl Finish {
    /// What the attempt tells its kind's breakers, if anything: a cancellation says nothing about whether the
    /// kind works, and neither does a permanent failure (the job's own input).
    pub fn breaker_signal(&self) -> Option<Signal<'_>> {
        match self {
            Self::Succeeded { .. } => Some(Signal::Worked),
            Self::Failed { error, retryable: true } | Self::TimedOut { error } => Some(Signal::Failed(error)),
            Self::Failed { retryable: false, .. } | Self::Cancelled => None,
        }
    }
}

/// What a lapsed lease tells the breakers of its job's kind: a retryable failure.
pub const LAPSED: Signal<'static> = Signal::Failed("lease expired: the engine stopped heartbeating");

/// A breaker as the stores keep it (a user's of a kind, or a kind's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerRow {
    pub state: String,
    /// Failures in the current window (a kind's: the failures its users count for).
    pub failures: i64,
    pub window_start: i64,
    /// The one job let through while half-open.
    pub probe: Option<String>,
}

impl BreakerRow {
    /// A breaker that has seen nothing yet.
    pub fn new(now: i64) -> Self {
        Self { state: CLOSED.into(), failures: 0, window_start: now, probe: None }
    }
}

/// A breaker's state after a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tripped {
    pub state: &'static str,
    pub failures: i64,
    pub window_start: i64,
    /// Whether it opened now.
    pub opened: bool,
}

/// A user's breaker of a kind after one of their attempts failed: a failed probe reopens a half-open breaker; a
/// closed one counts failures in its window and opens at the policy's count; an open (or half-open, for another
/// job) one does not change (`None`).
pub fn user_after_failure(row: &BreakerRow, job_id: &str, now: i64, policy: BreakerPolicy) -> Option<Tripped> {
    if let Some(reopened) = failed_probe(row, job_id) {
        return reopened;
    }
    let window = window_ms(policy);
    let (failures, window_start) =
        if now - row.window_start > window { (1, now) } else { (row.failures + 1, row.window_start) };
    let opened = failures >= i64::from(policy.failures);
    Some(Tripped { state: if opened { OPEN } else { CLOSED }, failures, window_start, opened })
}

/// The failures the kind's breaker counts, and from how many users: each user's failures in their window, at
/// most `ceil(failures / KIND_MIN_USERS)` each.
pub fn spread_failures(per_user: &[i64], policy: BreakerPolicy) -> (i64, usize) {
    let share = i64::from(policy.failures.div_ceil(KIND_MIN_USERS as u32)).max(1);
    let failing = per_user.iter().filter(|f| **f > 0);
    (failing.clone().map(|f| (*f).min(share)).sum(), failing.count())
}

/// A kind's breaker after an attempt of it failed, given the failures in their window of every user of the kind
/// (this one included): it opens only when they reach the policy's count and come from `KIND_MIN_USERS` users or
/// more. A failed probe reopens it; an open one does not change (`None`).
pub fn kind_after_failure(
    row: &BreakerRow,
    per_user: &[i64],
    job_id: &str,
    now: i64,
    policy: BreakerPolicy,
) -> Option<Tripped> {
    if let Some(reopened) = failed_probe(row, job_id) {
        return reopened;
    }
    let (failures, users) = spread_failures(per_user, policy);
    let opened = failures >= i64::from(policy.failures) && users >= KIND_MIN_USERS;
    Some(Tripped { state: if opened { OPEN } else { CLOSED }, failures, window_start: now, opened })
}

/// `Some(answer)` for a breaker that is not closed: a half-open one whose probe this was opens again; any other
/// stays as it is (`None`). `None` for a closed breaker, which counts the failure.
fn failed_probe(row: &BreakerRow, job_id: &str) -> Option<Option<Tripped>> {
    if row.state == CLOSED {
        return None;
    }
    let reopened = row.state == HALF_OPEN && row.probe.as_deref() == Some(job_id);
    Some(reopened.then_some(Tripped {
        state: OPEN,
        failures: row.failures,
        window_start: row.window_start,
        opened: true,
    }))
}

/// The start of the window a user's failures still count in.
pub fn window_floor(now: i64, policy: BreakerPolicy) -> i64 {
    now.saturating_sub(window_ms(policy))
}

fn window_ms(policy: BreakerPolicy) -> i64 {
    policy.window_ms.min(i64::MAX as u64) as i64
}

/// What the breakers hold back from claims: whole kinds, and kinds of single users.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeldBack {
    pub kinds: HashSet<String>,
    /// (kind, user)
    pub users: HashSet<(String, String)>,
}

impl HeldBack {
    /// Whether a job of `kind` submitted by `user` waits.
    pub fn holds(&self, kind: &str, user: &str) -> bool {
        // Allocation-free for the common case of no breaker open at all.
        self.kinds.contains(kind)
            || (!self.users.is_empty() && self.users.contains(&(kind.to_string(), user.to_string())))
    }
}

/// The breakers whose probe a claim hands out, in order: every kind's, then users' of kinds not held back as a
/// whole (while the kind's own probe decides, a user's would only add a second job of a failing kind).
/// `wanting` holds (kind, `None`) for a kind's breaker and (kind, `Some(user)`) for a user's.
pub fn probes_to_claim(wanting: Vec<(String, Option<String>)>, held: &HeldBack) -> Vec<(String, Option<String>)> {
    let (kinds, users): (Vec<_>, Vec<_>) = wanting.into_iter().partition(|(_, user)| user.is_none());
    kinds.into_iter().chain(users.into_iter().filter(|(kind, _)| !held.kinds.contains(kind))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: BreakerPolicy = BreakerPolicy { failures: 20, window_ms: 60_000, cooldown_ms: 30_000 };

    fn row(state: &str, failures: i64, window_start: i64, probe: Option<&str>) -> BreakerRow {
        BreakerRow { state: state.into(), failures, window_start, probe: probe.map(str::to_string) }
    }

    #[test]
    fn only_retryable_failures_and_successes_reach_the_breakers() {
        let failed = |retryable| Finish::Failed { error: "boom".into(), retryable };
        assert_eq!(failed(true).breaker_signal(), Some(Signal::Failed("boom")));
        assert_eq!(failed(false).breaker_signal(), None, "a job's own bad input is not the kind's failure");
        assert_eq!(Finish::Succeeded { result: None }.breaker_signal(), Some(Signal::Worked));
        assert_eq!(Finish::Cancelled.breaker_signal(), None);
    }

    #[test]
    fn a_users_breaker_counts_in_its_window_and_opens_at_the_threshold() {
        let one = user_after_failure(&BreakerRow::new(0), "j", 10, POLICY).unwrap();
        assert_eq!((one.state, one.failures, one.window_start, one.opened), (CLOSED, 1, 0, false));
        let last = user_after_failure(&row(CLOSED, 19, 0, None), "j", 10, POLICY).unwrap();
        assert_eq!((last.state, last.failures, last.opened), (OPEN, 20, true));
        let stale = user_after_failure(&row(CLOSED, 19, 0, None), "j", 60_001, POLICY).unwrap();
        assert_eq!((stale.state, stale.failures, stale.window_start), (CLOSED, 1, 60_001), "a new window");
        assert_eq!(user_after_failure(&row(OPEN, 20, 0, None), "j", 10, POLICY), None, "open stays open");
        assert_eq!(user_after_failure(&row(HALF_OPEN, 20, 0, Some("p")), "other", 10, POLICY), None);
        let probe = user_after_failure(&row(HALF_OPEN, 20, 0, Some("p")), "p", 10, POLICY).unwrap();
        assert_eq!((probe.state, probe.opened), (OPEN, true), "a failed probe reopens");
    }

    #[test]
    fn one_user_alone_never_opens_the_kind_for_everyone() {
        let closed = BreakerRow::new(0);
        for failures in [1, 20, 1_000] {
            let kind = kind_after_failure(&closed, &[failures], "j", 10, POLICY).unwrap();
            assert_eq!((kind.state, kind.opened), (CLOSED, false), "{failures} failures of one user");
            assert_eq!(kind.failures, failures.min(10), "one user counts for half the threshold at most");
        }
        // Nor does one flooding user plus a single failure of another.
        assert!(!kind_after_failure(&closed, &[1_000, 1], "j", 10, POLICY).unwrap().opened);
        assert!(!kind_after_failure(&closed, &[1_000, 0, 0], "j", 10, POLICY).unwrap().opened);
    }

    #[test]
    fn failures_from_several_users_open_the_kind() {
        let closed = BreakerRow::new(0);
        assert!(kind_after_failure(&closed, &[10, 10], "j", 10, POLICY).unwrap().opened);
        assert!(kind_after_failure(&closed, &[500, 10], "j", 10, POLICY).unwrap().opened);
        assert!(kind_after_failure(&closed, &[1; 20], "j", 10, POLICY).unwrap().opened, "twenty users, once each");
        assert!(!kind_after_failure(&closed, &[1; 19], "j", 10, POLICY).unwrap().opened);
        assert_eq!(spread_failures(&[3, 0, 30], POLICY), (13, 2));
        // A threshold of one still takes two users.
        let one = BreakerPolicy { failures: 1, ..POLICY };
        assert!(!kind_after_failure(&closed, &[5], "j", 10, one).unwrap().opened);
        assert!(kind_after_failure(&closed, &[1, 1], "j", 10, one).unwrap().opened);
        // A kind's breaker reopens on its failed probe and otherwise stays open.
        assert!(kind_after_failure(&row(HALF_OPEN, 20, 0, Some("p")), &[1], "p", 10, POLICY).unwrap().opened);
        assert_eq!(kind_after_failure(&row(OPEN, 20, 0, None), &[10, 10], "j", 10, POLICY), None);
    }

    #[test]
    fn held_back_jobs_and_probes() {
        let mut held = HeldBack::default();
        held.users.insert(("flaky".into(), "alice".into()));
        assert!(held.holds("flaky", "alice"));
        assert!(!held.holds("flaky", "bob"), "another user's jobs of the kind go on");
        assert!(!held.holds("echo", "alice"), "and the user's jobs of other kinds");
        held.kinds.insert("broken".into());
        assert!(held.holds("broken", "bob"));
        let wanting = vec![
            ("flaky".to_string(), Some("alice".to_string())),
            ("broken".to_string(), Some("carol".to_string())),
            ("broken".to_string(), None),
        ];
        assert_eq!(
            probes_to_claim(wanting, &held),
            vec![("broken".to_string(), None), ("flaky".to_string(), Some("alice".to_string()))]
        );
    }
}
