//! Recent behaviour of one engine's queue, kept in memory per gateway process: how fast engines take jobs
//! (the drain rate) and how long jobs waited between becoming runnable and being claimed.

use std::collections::VecDeque;
use std::sync::Mutex;

/// Seconds of history kept for latency percentiles.
const LATENCY_WINDOW_S: i64 = 60;
/// Seconds over which the drain rate is averaged.
const RATE_WINDOW_S: i64 = 10;
/// Latency samples kept per second (bounds memory under very high rates).
const MAX_SAMPLES_PER_SECOND: usize = 2_000;

struct Second {
    at_s: i64,
    claimed: u64,
    latencies_ms: Vec<i64>,
}

/// A summary of the recent window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct QueueWindow {
    pub drain_rate_per_s: f64,
    pub latency_p50_ms: Option<i64>,
    pub latency_p95_ms: Option<i64>,
}

/// Per-second buckets of claims and queue latencies.
#[derive(Default)]
pub struct QueueMetrics {
    seconds: Mutex<VecDeque<Second>>,
}

fn percentile(sorted: &[i64], p: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted.get(rank).copied()
}

impl QueueMetrics {
    /// Records jobs claimed at `now_ms` with how long each waited (ms).
    pub fn record_claims(&self, now_ms: i64, latencies_ms: &[i64]) {
        if latencies_ms.is_empty() {
            return;
        }
        let Ok(mut seconds) = self.seconds.lock() else { return };
        let at_s = now_ms.div_euclid(1_000);
        if seconds.back().is_none_or(|s| s.at_s != at_s) {
            seconds.push_back(Second { at_s, claimed: 0, latencies_ms: Vec::new() });
        }
        while seconds.front().is_some_and(|s| s.at_s <= at_s - LATENCY_WINDOW_S) {
            seconds.pop_front();
        }
        if let Some(second) = seconds.back_mut() {
            second.claimed += latencies_ms.len() as u64;
            let room = MAX_SAMPLES_PER_SECOND.saturating_sub(second.latencies_ms.len());
            second.latencies_ms.extend(latencies_ms.iter().take(room).map(|l| (*l).max(0)));
        }
    }

    /// The drain rate over the last `RATE_WINDOW_S` seconds and latency percentiles over the last minute.
    ///
    /// The rate divides by the part of the window claims have been seen in (from the first second with claims,
    /// at least one second): an engine that started 2 s ago and takes 9 jobs/s drains 9 jobs/s, not the 1.8 a
    /// window still mostly empty would say. An engine that stopped claiming is still averaged over its window.
    pub fn window(&self, now_ms: i64) -> QueueWindow {
        let Ok(seconds) = self.seconds.lock() else { return QueueWindow::default() };
        let now_s = now_ms.div_euclid(1_000);
        let in_rate_window = || seconds.iter().filter(|s| s.at_s > now_s - RATE_WINDOW_S);
        let recent: u64 = in_rate_window().map(|s| s.claimed).sum();
        let observed_ms = in_rate_window()
            .next()
            .map_or(RATE_WINDOW_S * 1_000, |first| now_ms.saturating_sub(first.at_s * 1_000))
            .clamp(1_000, RATE_WINDOW_S * 1_000);
        let mut latencies: Vec<i64> = seconds
            .iter()
            .filter(|s| s.at_s > now_s - LATENCY_WINDOW_S)
            .flat_map(|s| s.latencies_ms.iter().copied())
            .collect();
        latencies.sort_unstable();
        QueueWindow {
            drain_rate_per_s: recent as f64 * 1_000.0 / observed_ms as f64,
            latency_p50_ms: percentile(&latencies, 50.0),
            latency_p95_ms: percentile(&latencies, 95.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_and_percentiles_cover_their_windows() {
        let metrics = QueueMetrics::default();
        let t0 = 1_000_000_000;
        for s in 0..10 {
            metrics.record_claims(t0 + s * 1_000, &(1..=20).collect::<Vec<_>>());
        }
        let w = metrics.window(t0 + 10_000);
        assert_eq!(w.drain_rate_per_s, 20.0);
        assert_eq!((w.latency_p50_ms, w.latency_p95_ms), (Some(11), Some(19)));
        // Half a minute later the rate window is empty but latencies are still in the minute.
        let later = metrics.window(t0 + 40_000);
        assert_eq!(later.drain_rate_per_s, 0.0);
        assert!(later.latency_p95_ms.is_some());
        assert_eq!(metrics.window(t0 + 120_000), QueueWindow::default());
    }

    #[test]
    fn an_engine_that_just_started_is_measured_over_the_time_it_has_run() {
        let metrics = QueueMetrics::default();
        let t0 = 1_000_000_000;
        metrics.record_claims(t0, &[0; 9]);
        metrics.record_claims(t0 + 1_000, &[0; 9]);
        // 18 jobs in its first 2 s: 9 jobs/s, not 18 over a 10 s window still mostly empty.
        assert_eq!(metrics.window(t0 + 2_000).drain_rate_per_s, 9.0);
        // Less than a second in: counted over one second, not over a few milliseconds.
        let fresh = QueueMetrics::default();
        fresh.record_claims(t0, &[0; 3]);
        assert_eq!(fresh.window(t0 + 10).drain_rate_per_s, 3.0);
        // It stops claiming: the rate falls over the rest of the window.
        assert_eq!(metrics.window(t0 + 9_000).drain_rate_per_s, 2.0);
    }
}
