//! The change feed: jobs that committed writes created or changed, as a backend reports them for live events.
//!
//! A backend publishes only after its commit, so a listener never sees a change that was rolled back. Reading
//! the changed rows costs the writer time, so it publishes only while someone listens (`set_live`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use flowork_common::wire::Job;
use tokio::sync::broadcast;

/// How many committed batches may wait for the listener before it misses some (and says so).
const FEED_CAPACITY: usize = 4_096;

/// One job a committed write created (`created`), changed, or deleted (`deleted`: the job as it was).
#[derive(Debug, Clone)]
pub struct JobChange {
    pub created: bool,
    pub deleted: bool,
    pub job: Job,
}

impl JobChange {
    pub fn created(job: Job) -> Self {
        Self { created: true, deleted: false, job }
    }

    pub fn changed(job: Job) -> Self {
        Self { created: false, deleted: false, job }
    }

    pub fn deleted(job: Job) -> Self {
        Self { created: false, deleted: true, job }
    }
}

/// Where every shard of a store reports its committed job changes.
pub struct ChangeFeed {
    live: AtomicBool,
    sender: broadcast::Sender<Arc<[JobChange]>>,
}

impl Default for ChangeFeed {
    fn default() -> Self {
        Self { live: AtomicBool::new(false), sender: broadcast::channel(FEED_CAPACITY).0 }
    }
}

impl ChangeFeed {
    /// Whether a listener wants changes now; writers skip reading rows when not.
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::SeqCst)
    }

    /// Turns publishing on (someone listens) or off.
    pub fn set_live(&self, live: bool) {
        self.live.store(live, Ordering::SeqCst);
    }

    /// Publishes the changes of one commit.
    pub fn publish(&self, changes: Vec<JobChange>) {
        if !changes.is_empty() {
            // No receiver is not an error: nobody listens right now.
            let _ = self.sender.send(changes.into());
        }
    }

    /// A new listener, receiving what is published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<[JobChange]>> {
        self.sender.subscribe()
    }
}
