//! What this gateway process last heard from each engine: when, and the worker numbers it reported.
//!
//! In memory and per process: with two gateways, each knows the engines that talk to it.

use std::collections::HashMap;
use std::sync::RwLock;

use flowork_common::wire::WorkerReport;

/// An engine is shown online if it called within this time (a long-poll claim calls at least every 20 s).
pub const ONLINE_WITHIN_MS: i64 = 60_000;

/// Last contact and report of one engine.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Presence {
    pub last_contact_ms: i64,
    pub report: Option<WorkerReport>,
}

/// Presence of every engine that called this process.
#[derive(Debug, Default)]
pub struct EnginePresence(RwLock<HashMap<String, Presence>>);

impl EnginePresence {
    /// Records a call; keeps the previous report when this call carries none.
    pub fn seen(&self, engine: &str, now_ms: i64, report: Option<WorkerReport>) {
        if let Ok(mut map) = self.0.write() {
            let entry = map.entry(engine.to_string()).or_default();
            entry.last_contact_ms = now_ms;
            if report.is_some() {
                entry.report = report;
            }
        }
    }

    pub fn get(&self, engine: &str) -> Option<Presence> {
        self.0.read().ok()?.get(engine).cloned()
    }
}
