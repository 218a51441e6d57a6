//! Whether a fleet's live events may have been lost: with `--redis`, every gateway writes a heartbeat to Redis
//! each second (a beat counter, how many job events it failed to publish, and a goodbye when it stops cleanly).
//! A gateway that vanished without a goodbye (killed between a commit and its publish) or that failed to publish
//! makes every other gateway send its clients `live.reset` (reload the list), so a live client never misses an
//! event without being told.
//!
//! Staleness is judged by each watcher's own clock (a beat counter that stopped moving), never by comparing the
//! clocks of different hosts.

use std::collections::HashMap;
use std::time::Duration;

/// The Redis hash holding every gateway's heartbeat (field: the gateway's boot id).
pub const KEY: &str = "flowork:live:gateways";
/// How often a gateway beats and looks at the others.
pub const EVERY: Duration = Duration::from_secs(1);
/// A gateway whose beat has not moved for this long (by the watcher's clock) is taken for dead.
pub const STALE_MS: i64 = 10_000;
/// Heartbeats of gateways gone this long are removed from the hash.
pub const FORGET_MS: i64 = 3_600_000;

/// One gateway's heartbeat as stored: `"<beat> <lost> <stopped 0|1>"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    pub beat: u64,
    /// Job events this gateway could not publish since it started.
    pub lost: u64,
    /// Said goodbye: stopped after publishing everything it committed.
    pub stopped: bool,
}

impl Heartbeat {
    pub fn encode(&self) -> String {
        format!("{} {} {}", self.beat, self.lost, u8::from(self.stopped))
    }

    /// `None` for a value this build does not understand (ignored, like a gateway that is not there).
    pub fn decode(text: &str) -> Option<Self> {
        let mut parts = text.split(' ');
        let beat = parts.next()?.parse().ok()?;
        let lost = parts.next()?.parse().ok()?;
        let stopped = match parts.next()? {
            "0" => false,
            "1" => true,
            _ => return None,
        };
        Some(Self { beat, lost, stopped })
    }
}

/// Why this gateway's clients must reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResetReason {
    /// A gateway stopped beating without a goodbye; what it committed last may not have been published.
    GatewayLost(String),
    /// A gateway failed to publish some of its job events.
    EventsLost(String),
    /// Redis could not be read: events from other gateways may be missing.
    RedisUnreachable,
}

impl ResetReason {
    pub fn code(&self) -> &'static str {
        match self {
            Self::GatewayLost(_) => "gateway_lost",
            Self::EventsLost(_) => "events_lost",
            Self::RedisUnreachable => "redis_unreachable",
        }
    }
}

/// What this gateway knows of one other gateway.
#[derive(Debug)]
struct Peer {
    beat: u64,
    lost: u64,
    /// When (by this watcher's clock) the beat last moved.
    moved_at_ms: i64,
    /// Its beat moved while this watcher looked: it was alive, so its silence means something.
    seen_alive: bool,
    /// Already reported dead (reported again only after it beats again and dies again).
    reported_dead: bool,
}

/// The other gateways as seen by one watcher, fed each look's heartbeats; plain data, no I/O.
#[derive(Debug)]
pub struct PeerWatch {
    me: String,
    peers: HashMap<String, Peer>,
    unreachable: bool,
}

impl PeerWatch {
    pub fn new(me: impl Into<String>) -> Self {
        Self { me: me.into(), peers: HashMap::new(), unreachable: false }
    }

    /// Takes one look's heartbeats (`None`: Redis could not be read) at `now_ms` of this watcher's clock; the
    /// reasons this gateway's clients must reload now (empty: nothing can have been missed).
    pub fn observe(&mut self, now_ms: i64, seen: Option<&HashMap<String, Heartbeat>>) -> Vec<ResetReason> {
        let Some(seen) = seen else {
            let first = !self.unreachable;
            self.unreachable = true;
            return if first { vec![ResetReason::RedisUnreachable] } else { Vec::new() };
        };
        self.unreachable = false;
        let mut reasons = Vec::new();
        for (boot, heartbeat) in seen {
            if *boot == self.me {
                continue;
            }
            match self.peers.get_mut(boot) {
                None => {
                    // Not alive until its beat moves: one that died before this watcher looked lost nothing that
                    // this gateway's clients (who reloaded when they connected) could have missed.
                    if !heartbeat.stopped {
                        let peer = Peer {
                            beat: heartbeat.beat,
                            lost: heartbeat.lost,
                            moved_at_ms: now_ms,
                            seen_alive: false,
                            reported_dead: false,
                        };
                        self.peers.insert(boot.clone(), peer);
                    }
                }
                Some(peer) => {
                    if heartbeat.lost > peer.lost {
                        reasons.push(ResetReason::EventsLost(boot.clone()));
                        peer.lost = heartbeat.lost;
                    }
                    if heartbeat.beat != peer.beat {
                        peer.beat = heartbeat.beat;
                        peer.moved_at_ms = now_ms;
                        peer.seen_alive = true;
                        peer.reported_dead = false;
                    }
                    if heartbeat.stopped {
                        self.peers.remove(boot);
                    } else if peer.seen_alive && !peer.reported_dead && now_ms - peer.moved_at_ms >= STALE_MS {
                        peer.reported_dead = true;
                        reasons.push(ResetReason::GatewayLost(boot.clone()));
                    }
                }
            }
        }
        // A heartbeat that disappeared (removed by hand, or Redis lost its data) without a goodbye.
        let gone: Vec<String> = self.peers.keys().filter(|boot| !seen.contains_key(*boot)).cloned().collect();
        for boot in gone {
            if let Some(peer) = self.peers.remove(&boot)
                && peer.seen_alive
                && !peer.reported_dead
            {
                reasons.push(ResetReason::GatewayLost(boot));
            }
        }
        reasons
    }
}

/// Heartbeats of other gateways that stopped this long ago (by their beat) can be forgotten: the fields to delete.
pub fn forgettable(seen: &HashMap<String, Heartbeat>, watch: &PeerWatch, now_ms: i64) -> Vec<String> {
    seen.iter()
        .filter(|(boot, heartbeat)| {
            **boot != watch.me
                && match watch.peers.get(*boot) {
                    Some(peer) => now_ms - peer.moved_at_ms >= FORGET_MS,
                    // A goodbye already taken into account, or a gateway dead before this one started.
                    None => heartbeat.stopped,
                }
        })
        .map(|(boot, _)| boot.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look(entries: &[(&str, u64, u64, bool)]) -> HashMap<String, Heartbeat> {
        entries
            .iter()
            .map(|(boot, beat, lost, stopped)| {
                (boot.to_string(), Heartbeat { beat: *beat, lost: *lost, stopped: *stopped })
            })
            .collect()
    }

    #[test]
    fn heartbeats_round_trip_and_refuse_garbage() {
        let heartbeat = Heartbeat { beat: 7, lost: 2, stopped: true };
        assert_eq!(Heartbeat::decode(&heartbeat.encode()), Some(heartbeat));
        for garbage in ["", "1", "1 2", "1 2 3", "x 2 0", "1 -2 0"] {
            assert_eq!(Heartbeat::decode(garbage), None, "{garbage:?}");
        }
    }

    #[test]
    fn a_gateway_that_stops_beating_without_a_goodbye_is_reported_once() {
        let mut watch = PeerWatch::new("me");
        assert!(watch.observe(0, Some(&look(&[("me", 1, 0, false), ("b", 1, 0, false)]))).is_empty());
        assert!(watch.observe(1_000, Some(&look(&[("b", 2, 0, false)]))).is_empty());
        // b's beat stays at 2: dead once STALE_MS have passed since it last moved.
        assert!(watch.observe(1_000 + STALE_MS - 1, Some(&look(&[("b", 2, 0, false)]))).is_empty());
        assert_eq!(
            watch.observe(1_000 + STALE_MS, Some(&look(&[("b", 2, 0, false)]))),
            [ResetReason::GatewayLost("b".into())]
        );
        assert!(watch.observe(2_000 + STALE_MS, Some(&look(&[("b", 2, 0, false)]))).is_empty(), "once");
        // It beats again (a long pause, not a death) and then dies for real: reported again.
        assert!(watch.observe(3_000 + STALE_MS, Some(&look(&[("b", 3, 0, false)]))).is_empty());
        assert_eq!(
            watch.observe(3_000 + 2 * STALE_MS, Some(&look(&[("b", 3, 0, false)]))),
            [ResetReason::GatewayLost("b".into())]
        );
    }

    #[test]
    fn a_goodbye_is_not_a_loss() {
        let mut watch = PeerWatch::new("me");
        watch.observe(0, Some(&look(&[("b", 1, 0, false)])));
        assert!(watch.observe(1_000, Some(&look(&[("b", 2, 0, true)]))).is_empty());
        assert!(watch.observe(10 * STALE_MS, Some(&look(&[("b", 2, 0, true)]))).is_empty());
        assert_eq!(forgettable(&look(&[("b", 2, 0, true)]), &watch, 10 * STALE_MS), ["b"]);
    }

    #[test]
    fn lost_events_and_vanished_heartbeats_are_reported() {
        let mut watch = PeerWatch::new("me");
        watch.observe(0, Some(&look(&[("b", 1, 0, false), ("c", 1, 5, false)])));
        watch.observe(500, Some(&look(&[("b", 1, 0, false), ("c", 2, 5, false)])));
        assert_eq!(
            watch.observe(1_000, Some(&look(&[("b", 2, 1, false), ("c", 3, 5, false)]))),
            [ResetReason::EventsLost("b".into())]
        );
        assert_eq!(watch.observe(2_000, Some(&look(&[("b", 3, 1, false)]))), [ResetReason::GatewayLost("c".into())]);
    }

    #[test]
    fn an_unreadable_redis_is_reported_once_per_outage() {
        let mut watch = PeerWatch::new("me");
        assert_eq!(watch.observe(0, None), [ResetReason::RedisUnreachable]);
        assert!(watch.observe(1_000, None).is_empty());
        assert!(watch.observe(2_000, Some(&look(&[]))).is_empty());
        assert_eq!(watch.observe(3_000, None), [ResetReason::RedisUnreachable]);
    }

    #[test]
    fn gateways_never_seen_alive_are_not_reported() {
        let mut watch = PeerWatch::new("me");
        assert!(watch.observe(0, Some(&look(&[("dead-before-me", 9, 3, false)]))).is_empty());
        assert!(watch.observe(STALE_MS * 2, Some(&look(&[("dead-before-me", 9, 3, false)]))).is_empty());
        assert!(watch.observe(STALE_MS * 3, Some(&look(&[]))).is_empty(), "its heartbeat removed");
    }
}
