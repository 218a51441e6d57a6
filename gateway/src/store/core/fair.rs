//! The fair claim order both drivers follow: stride scheduling across users, each user's pass advanced by
//! `1 / weight` per job served.

use std::collections::HashMap;

use flowork_common::wire::Lease;

/// Passes are sums of 1/weight steps; this absorbs their rounding when two turns fall on the same pass.
pub const EPSILON: f64 = 1e-9;

/// A user's place in the fair order.
#[derive(Debug, Clone)]
pub struct Share {
    pub user: String,
    pub pass: f64,
    pub weight: i64,
}

/// How many jobs the first user in the fair order gets this turn: until their pass reaches the next user's (at
/// least one), at most `remaining`.
pub fn turn_length(first: &Share, second: Option<&Share>, remaining: usize) -> usize {
    match second {
        Some(second) => {
            (((second.pass - first.pass) * first.weight as f64 - EPSILON).ceil().max(0.0) as usize).clamp(1, remaining)
        }
        None => remaining,
    }
}

/// What a claim hands out: the leases in claim order, and how long each job waited since it became runnable.
#[derive(Debug, Default)]
pub struct Claimed {
    pub leases: Vec<Lease>,
    pub waited_ms: Vec<i64>,
}

/// Who claims, for how long, and how many.
pub struct ClaimBy<'a> {
    pub engine: &'a str,
    pub worker: &'a str,
    pub max: u32,
    pub lease_ms: u64,
    pub now: i64,
}

/// Users with runnable jobs: pass, weight and how many they have.
pub struct Shares(pub HashMap<String, (f64, i64, i64)>);

impl Shares {
    /// Jobs of other users claimed before the job of `user` that has `own_ahead` of its own jobs ahead of it.
    pub fn others_before(&self, user: &str, own_ahead: i64) -> i64 {
        let Some((my_pass, my_weight, _)) = self.0.get(user) else { return 0 };
        // The job's turn comes when its user's pass reaches `turn`; on a tie the lower user id goes first, as
        // the claim orders them.
        let turn = my_pass + own_ahead as f64 / (*my_weight).max(1) as f64;
        self.0
            .iter()
            .filter(|(other, _)| other.as_str() != user)
            .map(|(other, (pass, weight, runnable))| {
                let span = (turn - pass) * (*weight).max(1) as f64;
                let before = if other.as_str() < user {
                    (span + EPSILON).floor() as i64 + 1
                } else {
                    (span - EPSILON).ceil() as i64
                };
                before.clamp(0, *runnable)
            })
            .sum()
    }
}
