//! The worker pool: a resizable set of worker slots, and what the workers did during the current window
//! (the autoscaler's input and the report sent to the gateway).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowork_common::wire::{Lease, WorkerReport};
use tokio::sync::Semaphore;

use crate::autoscale::WindowStats;

#[derive(Default)]
struct Window {
    latencies_ms: Vec<f64>,
    claimed: u64,
    finished: u64,
    service_ms_total: f64,
}

/// Worker slots (a semaphore whose size the autoscaler changes) and the window's counters.
pub struct WorkerPool {
    pub slots: Arc<Semaphore>,
    size: AtomicU32,
    pub min: u32,
    pub max: u32,
    window: Mutex<Window>,
    window_started: Mutex<Instant>,
    /// Utilisation of the last closed window, in thousandths.
    last_utilization: AtomicU64,
    scale_ups: AtomicU64,
    scale_downs: AtomicU64,
}

impl WorkerPool {
    pub fn new(size: u32, min: u32, max: u32) -> Arc<Self> {
        Arc::new(Self {
            slots: Arc::new(Semaphore::new(size as usize)),
            size: AtomicU32::new(size),
            min,
            max,
            window: Mutex::default(),
            window_started: Mutex::new(Instant::now()),
            last_utilization: AtomicU64::new(0),
            scale_ups: AtomicU64::new(0),
            scale_downs: AtomicU64::new(0),
        })
    }

    pub fn size(&self) -> u32 {
        self.size.load(Ordering::SeqCst)
    }

    /// Grows or shrinks the pool. Shrinking waits for workers to finish their job before their slot goes.
    pub fn resize(&self, to: u32) {
        let from = self.size.swap(to, Ordering::SeqCst);
        if to > from {
            self.scale_ups.fetch_add(1, Ordering::SeqCst);
        } else if to < from {
            self.scale_downs.fetch_add(1, Ordering::SeqCst);
        }
        if to > from {
            self.slots.add_permits((to - from) as usize);
        } else {
            for _ in to..from {
                let slots = self.slots.clone();
                tokio::spawn(async move {
                    if let Ok(permit) = slots.acquire_owned().await {
                        permit.forget();
                    }
                });
            }
        }
    }

    /// Records claimed jobs and how long each waited in the queue (from the job's own timestamps).
    pub fn claimed(&self, leases: &[Lease]) {
        let Ok(mut window) = self.window.lock() else { return };
        for lease in leases {
            let job = &lease.job;
            let runnable =
                [&job.enqueued_at, &job.run_at].iter().filter_map(|t| flowork_common::timefmt::parse_ms(t)).max();
            let claimed = job.claimed_at.as_deref().and_then(flowork_common::timefmt::parse_ms);
            if let (Some(runnable), Some(claimed)) = (runnable, claimed) {
                window.latencies_ms.push((claimed - runnable).max(0) as f64);
            }
            window.claimed += 1;
        }
    }

    /// Records a finished job's run time.
    pub fn finished(&self, ran: Duration) {
        if let Ok(mut window) = self.window.lock() {
            window.finished += 1;
            window.service_ms_total += ran.as_secs_f64() * 1_000.0;
        }
    }

    /// Closes the current window and summarises it.
    pub fn close_window(&self) -> WindowStats {
        let elapsed = self
            .window_started
            .lock()
            .map(|mut started| {
                let elapsed = started.elapsed();
                *started = Instant::now();
                elapsed
            })
            .unwrap_or(Duration::from_secs(1));
        let window = self.window.lock().map(|mut w| std::mem::take(&mut *w)).unwrap_or_default();
        let seconds = elapsed.as_secs_f64().max(0.001);
        let mut latencies = window.latencies_ms;
        latencies.sort_by(f64::total_cmp);
        let p95 = (!latencies.is_empty())
            .then(|| latencies[((0.95 * (latencies.len() - 1) as f64).round() as usize).min(latencies.len() - 1)]);
        let capacity_ms = f64::from(self.size().max(1)) * seconds * 1_000.0;
        let utilization = (window.service_ms_total / capacity_ms).clamp(0.0, 1.0);
        self.last_utilization.store((utilization * 1_000.0) as u64, Ordering::SeqCst);
        WindowStats {
            p95_latency_ms: p95,
            utilization,
            arrival_rate_per_s: window.claimed as f64 / seconds,
            mean_service_ms: if window.finished > 0 { window.service_ms_total / window.finished as f64 } else { 0.0 },
        }
    }

    /// What the engine tells the gateway with each claim.
    pub fn report(&self) -> WorkerReport {
        let size = self.size();
        WorkerReport {
            workers: size,
            min_workers: self.min,
            max_workers: self.max,
            busy: size.saturating_sub(self.slots.available_permits() as u32),
            utilization: self.last_utilization.load(Ordering::SeqCst) as f64 / 1_000.0,
            scale_ups: self.scale_ups.load(Ordering::SeqCst),
            scale_downs: self.scale_downs.load(Ordering::SeqCst),
        }
    }
}
