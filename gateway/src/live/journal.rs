//! The replay journal: the latest live events, numbered, so a client that reconnects gets what it missed.
//!
//! A cursor is `<boot>.<seq>`: `boot` names this process, `seq` the last event the client saw. A replay is
//! either complete or refused (`None`: the client reloads its list instead); it never silently skips events.
//! Refused: a cursor of another process (a restart), one older than what the journal still holds, or one from
//! before a gap (the journal missed events while nobody listened or while the feed overflowed).

use std::collections::VecDeque;
use std::sync::Arc;

use serde_json::value::RawValue;

/// The most events kept for replay.
pub const MAX_EVENTS: usize = 10_000;
/// The most bytes of event data kept for replay.
pub const MAX_BYTES: usize = 32 * 1024 * 1024;

/// One journaled event.
#[derive(Debug, Clone)]
pub struct Entry {
    pub seq: u64,
    pub user: Arc<str>,
    pub name: &'static str,
    pub data: Arc<RawValue>,
}

/// The numbered events still held, and where continuous history begins.
#[derive(Debug)]
pub struct Journal {
    boot: String,
    /// The last number given out.
    head: u64,
    /// Cursors at or after this number replay completely.
    floor: u64,
    entries: VecDeque<Entry>,
    bytes: usize,
    max_events: usize,
    max_bytes: usize,
}

impl Journal {
    pub fn new(boot: String) -> Self {
        Self::with_limits(boot, MAX_EVENTS, MAX_BYTES)
    }

    pub fn with_limits(boot: String, max_events: usize, max_bytes: usize) -> Self {
        Self { boot, head: 0, floor: 0, entries: VecDeque::new(), bytes: 0, max_events, max_bytes }
    }

    /// The cursor of the newest event.
    pub fn cursor(&self) -> String {
        format!("{}.{}", self.boot, self.head)
    }

    /// The cursor the next appended event will get.
    pub fn next_cursor(&self) -> String {
        format!("{}.{}", self.boot, self.head + 1)
    }

    /// Numbers and keeps an event; returns its cursor.
    pub fn append(&mut self, user: Arc<str>, name: &'static str, data: Arc<RawValue>) -> String {
        self.head += 1;
        self.bytes += data.get().len();
        self.entries.push_back(Entry { seq: self.head, user, name, data });
        while self.entries.len() > self.max_events || (self.bytes > self.max_bytes && self.entries.len() > 1) {
            if let Some(old) = self.entries.pop_front() {
                self.bytes -= old.data.get().len();
                self.floor = old.seq;
            }
        }
        self.cursor()
    }

    /// Events were missed (nobody listened, or the feed overflowed): no earlier cursor replays completely.
    pub fn gap(&mut self) {
        self.head += 1;
        self.floor = self.head;
        self.entries.clear();
        self.bytes = 0;
    }

    /// The user's events after `cursor`, oldest first, or `None` when the journal cannot tell them all.
    pub fn since(&self, cursor: &str, user: &str) -> Option<Vec<Entry>> {
        let (boot, seq) = cursor.rsplit_once('.')?;
        let seq: u64 = seq.parse().ok()?;
        if boot != self.boot || seq < self.floor || seq > self.head {
            return None;
        }
        Some(self.entries.iter().filter(|e| e.seq > seq && &*e.user == user).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(text: &str) -> Arc<RawValue> {
        Arc::from(RawValue::from_string(text.to_string()).expect("valid JSON"))
    }

    #[test]
    fn replays_only_the_users_events_after_the_cursor() {
        let mut journal = Journal::new("b1".into());
        let start = journal.cursor();
        journal.append("alice".into(), "job.created", data("1"));
        let middle = journal.append("bob".into(), "job.created", data("2"));
        journal.append("alice".into(), "job.updated", data("3"));
        let alice: Vec<_> =
            journal.since(&start, "alice").expect("complete").iter().map(|e| e.data.get().to_string()).collect();
        assert_eq!(alice, ["1", "3"]);
        let after_middle = journal.since(&middle, "alice").expect("complete");
        assert_eq!(after_middle.len(), 1);
        assert_eq!(after_middle[0].name, "job.updated");
        assert!(journal.since(&journal.cursor(), "alice").expect("complete").is_empty());
    }

    #[test]
    fn refuses_what_it_cannot_replay_completely() {
        let mut journal = Journal::with_limits("b1".into(), 2, 1_000);
        let start = journal.cursor();
        for n in 0..3 {
            journal.append("alice".into(), "job.updated", data(&n.to_string()));
        }
        assert!(journal.since(&start, "alice").is_none(), "the first event was dropped");
        assert!(journal.since("other.1", "alice").is_none(), "another process");
        assert!(journal.since("b1.99", "alice").is_none(), "a cursor from the future");
        assert!(journal.since("garbage", "alice").is_none());
        let before_gap = journal.cursor();
        journal.gap();
        assert!(journal.since(&before_gap, "alice").is_none(), "events may have been missed in the gap");
        let after_gap = journal.cursor();
        journal.append("alice".into(), "job.updated", data("9"));
        assert_eq!(journal.since(&after_gap, "alice").expect("complete").len(), 1);
    }

    #[test]
    fn byte_limit_drops_the_oldest() {
        let mut journal = Journal::with_limits("b1".into(), 100, 10);
        let start = journal.cursor();
        journal.append("alice".into(), "job.updated", data("\"123456\""));
        let second = journal.append("alice".into(), "job.updated", data("\"abcdef\""));
        assert!(journal.since(&start, "alice").is_none());
        assert!(journal.since(&second, "alice").expect("complete").is_empty());
    }
}
