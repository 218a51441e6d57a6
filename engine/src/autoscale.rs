//! The autoscaling policy: a pure state machine from per-window observations to worker counts.
//!
//! Every window (default 10 s): if the p95 queue latency exceeded 3 × the target for 3 windows in a row, add a
//! worker (up to the maximum); if it stayed under 0.3 × the target for 6 windows in a row while utilisation was
//! under 50 %, remove one (not below the minimum). Never go below what the headroom rule needs: headroom factor
//! × the peak arrival rate seen recently × the mean service time.

use std::collections::VecDeque;

/// Windows of high latency before scaling up.
pub const UP_AFTER: u32 = 3;
/// Windows of low latency (and low utilisation) before scaling down.
pub const DOWN_AFTER: u32 = 6;
/// How many windows the peak arrival rate is remembered.
const PEAK_WINDOWS: usize = 30;

/// The knobs (`CORE_MIN_WORKERS`, `CORE_MAX_WORKERS`, `SLO_TARGET_LATENCY`, `HEADROOM_FACTOR`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AutoscalePolicy {
    pub target_latency_ms: f64,
    pub min_workers: u32,
    pub max_workers: u32,
    /// At least 1.3.
    pub headroom: f64,
}

/// What one window showed.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WindowStats {
    /// p95 of enqueue → claim latency of the jobs claimed in the window (`None`: none claimed).
    pub p95_latency_ms: Option<f64>,
    /// Fraction of worker time spent running jobs (0-1).
    pub utilization: f64,
    /// Jobs claimed per second.
    pub arrival_rate_per_s: f64,
    /// Mean run time of the jobs finished in the window (0 if none).
    pub mean_service_ms: f64,
}

/// What to do with the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Hold,
    Up { to: u32 },
    Down { to: u32 },
}

/// The policy's memory between windows.
#[derive(Debug, Clone)]
pub struct Autoscaler {
    policy: AutoscalePolicy,
    workers: u32,
    high_windows: u32,
    low_windows: u32,
    recent_rates: VecDeque<f64>,
    recent_service_ms: f64,
}

impl Autoscaler {
    pub fn new(policy: AutoscalePolicy, workers: u32) -> Self {
        let workers = workers.clamp(policy.min_workers, policy.max_workers.max(policy.min_workers));
        Self { policy, workers, high_windows: 0, low_windows: 0, recent_rates: VecDeque::new(), recent_service_ms: 0.0 }
    }

    pub fn workers(&self) -> u32 {
        self.workers
    }

    /// Workers the headroom rule requires: headroom × peak rate × mean service time, within [min, max].
    pub fn headroom_floor(&self) -> u32 {
        let peak = self.recent_rates.iter().copied().fold(0.0, f64::max);
        let needed = (self.policy.headroom.max(1.3) * peak * self.recent_service_ms / 1_000.0).ceil();
        let needed = if needed.is_finite() && needed > 0.0 { needed as u32 } else { 0 };
        needed.clamp(self.policy.min_workers, self.policy.max_workers.max(self.policy.min_workers))
    }

    /// Takes one window's observations and decides.
    pub fn observe(&mut self, window: WindowStats) -> Decision {
        self.recent_rates.push_back(window.arrival_rate_per_s.max(0.0));
        if self.recent_rates.len() > PEAK_WINDOWS {
            self.recent_rates.pop_front();
        }
        if window.mean_service_ms > 0.0 {
            self.recent_service_ms = window.mean_service_ms;
        }
        let target = self.policy.target_latency_ms;
        let p95 = window.p95_latency_ms.unwrap_or(0.0);
        self.high_windows = if p95 > 3.0 * target { self.high_windows + 1 } else { 0 };
        self.low_windows = if p95 < 0.3 * target && window.utilization < 0.5 { self.low_windows + 1 } else { 0 };

        let floor = self.headroom_floor();
        if self.workers < floor {
            self.workers = floor;
            return Decision::Up { to: floor };
        }
        if self.high_windows >= UP_AFTER && self.workers < self.policy.max_workers {
            self.high_windows = 0;
            self.workers += 1;
            return Decision::Up { to: self.workers };
        }
        if self.low_windows >= DOWN_AFTER && self.workers > floor.max(self.policy.min_workers) {
            self.low_windows = 0;
            self.workers -= 1;
            return Decision::Down { to: self.workers };
        }
        Decision::Hold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> AutoscalePolicy {
        AutoscalePolicy { target_latency_ms: 100.0, min_workers: 2, max_workers: 5, headroom: 1.3 }
    }

    fn window(p95: f64, utilization: f64) -> WindowStats {
        WindowStats { p95_latency_ms: Some(p95), utilization, arrival_rate_per_s: 0.0, mean_service_ms: 0.0 }
    }

    #[test]
    fn three_slow_windows_in_a_row_add_one_worker() {
        let mut a = Autoscaler::new(policy(), 2);
        assert_eq!(a.observe(window(301.0, 0.9)), Decision::Hold);
        assert_eq!(a.observe(window(301.0, 0.9)), Decision::Hold);
        assert_eq!(a.observe(window(301.0, 0.9)), Decision::Up { to: 3 });
        // The streak starts over after a decision.
        assert_eq!(a.observe(window(301.0, 0.9)), Decision::Hold);
    }

    #[test]
    fn exactly_three_times_the_target_is_not_slow_and_a_fast_window_breaks_the_streak() {
        let mut a = Autoscaler::new(policy(), 2);
        for _ in 0..5 {
            assert_eq!(a.observe(window(300.0, 0.9)), Decision::Hold, "300 is not > 3 x 100");
        }
        a.observe(window(301.0, 0.9));
        a.observe(window(301.0, 0.9));
        a.observe(window(50.0, 0.9));
        assert_eq!(a.observe(window(301.0, 0.9)), Decision::Hold);
    }

    #[test]
    fn never_above_the_maximum() {
        let mut a = Autoscaler::new(policy(), 5);
        for _ in 0..12 {
            assert_eq!(a.observe(window(1_000.0, 1.0)), Decision::Hold);
        }
        assert_eq!(a.workers(), 5);
    }

    #[test]
    fn six_quiet_windows_with_low_utilisation_remove_one_worker() {
        let mut a = Autoscaler::new(policy(), 4);
        for _ in 0..5 {
            assert_eq!(a.observe(window(29.0, 0.49)), Decision::Hold);
        }
        assert_eq!(a.observe(window(29.0, 0.49)), Decision::Down { to: 3 });
    }

    #[test]
    fn quiet_but_busy_or_at_the_boundary_does_not_scale_down() {
        let mut a = Autoscaler::new(policy(), 4);
        for _ in 0..10 {
            assert_eq!(a.observe(window(29.0, 0.5)), Decision::Hold, "utilisation 50 % is not < 50 %");
        }
        for _ in 0..10 {
            assert_eq!(a.observe(window(30.0, 0.1)), Decision::Hold, "30 is not < 0.3 x 100");
        }
    }

    #[test]
    fn never_below_the_minimum() {
        let mut a = Autoscaler::new(policy(), 2);
        for _ in 0..20 {
            assert_eq!(a.observe(window(0.0, 0.0)), Decision::Hold);
        }
        assert_eq!(a.workers(), 2);
    }

    #[test]
    fn headroom_keeps_enough_workers_for_the_peak() {
        let mut a = Autoscaler::new(AutoscalePolicy { max_workers: 20, ..policy() }, 2);
        // 10 jobs/s of 500 ms each need 5 workers busy; with 1.3 headroom, 7.
        let busy = WindowStats {
            p95_latency_ms: Some(10.0),
            utilization: 0.9,
            arrival_rate_per_s: 10.0,
            mean_service_ms: 500.0,
        };
        assert_eq!(a.observe(busy), Decision::Up { to: 7 });
        // Quiet afterwards: the remembered peak keeps the floor.
        for _ in 0..12 {
            assert_eq!(a.observe(window(0.0, 0.0)), Decision::Hold);
        }
        assert_eq!(a.workers(), 7);
    }
}
