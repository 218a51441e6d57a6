//! Per-minute job statistics: what a transaction adds up (`Tally`) and how stored counters become the answer of
//! `GET /jobs/stats` (`summarize`). Both drivers store the same rows: (user, minute, series, bucket) → count.

use std::collections::BTreeMap;

use flowork_common::timefmt::format_ms;
use flowork_common::wire::{AttemptEnd, JobStats, JobStatus, Percentiles, StatsBucket, StatsFigures};

/// One minute, in milliseconds.
pub const MINUTE_MS: i64 = 60_000;
/// How long counters are kept, and the longest window asked for.
pub const KEPT_MS: i64 = 24 * 60 * MINUTE_MS;

/// Upper bounds (inclusive, ms) of the duration histograms' buckets; a last bucket holds everything longer.
pub const BOUNDS_MS: [i64; 18] =
    [1, 2, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000, 900_000, 3_600_000];

/// What a counter row counts: its `series` column (stored: never renumber).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Series {
    Enqueued = 0,
    Succeeded = 1,
    Failed = 2,
    Dead = 3,
    /// Histogram of due → claimed; the row's bucket is an index into `BOUNDS_MS`.
    QueueMs = 4,
    /// Histogram of claimed → finished.
    RunMs = 5,
}

impl Series {
    fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            0 => Self::Enqueued,
            1 => Self::Succeeded,
            2 => Self::Failed,
            3 => Self::Dead,
            4 => Self::QueueMs,
            5 => Self::RunMs,
            _ => return None,
        })
    }
}

/// The histogram bucket of a duration.
pub fn bucket_of(ms: i64) -> usize {
    BOUNDS_MS.iter().position(|bound| ms <= *bound).unwrap_or(BOUNDS_MS.len())
}

/// One stored counter: `count` events of `series` (in histogram `bucket`) by `user` in the minute starting at
/// `minute_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatRow {
    pub user: String,
    pub minute_ms: i64,
    pub series: i64,
    pub bucket: i64,
    pub count: i64,
}

/// The counters one transaction adds, summed per row so each is written once.
#[derive(Debug, Default)]
pub struct Tally {
    counts: BTreeMap<(String, i64, Series, usize), i64>,
}

impl Tally {
    fn add(&mut self, user: &str, now: i64, series: Series, bucket: usize, n: i64) {
        if n != 0 {
            *self.counts.entry((user.to_string(), now - now.rem_euclid(MINUTE_MS), series, bucket)).or_default() += n;
        }
    }

    /// `n` jobs of `user` stored.
    pub fn enqueued(&mut self, user: &str, now: i64, n: i64) {
        self.add(user, now, Series::Enqueued, 0, n);
    }

    /// A job of `user` claimed after waiting `waited_ms` since it was due.
    pub fn claimed(&mut self, user: &str, now: i64, waited_ms: i64) {
        self.add(user, now, Series::QueueMs, bucket_of(waited_ms), 1);
    }

    /// An attempt of `user`'s job that ended as `end` after running `ran_ms`, leaving the job `status`.
    pub fn finished(&mut self, user: &str, now: i64, ran_ms: i64, end: AttemptEnd, status: JobStatus) {
        self.add(user, now, Series::RunMs, bucket_of(ran_ms), 1);
        match end {
            AttemptEnd::Succeeded => self.add(user, now, Series::Succeeded, 0, 1),
            AttemptEnd::Failed | AttemptEnd::TimedOut | AttemptEnd::LeaseExpired => {
                self.add(user, now, Series::Failed, 0, 1)
            }
            AttemptEnd::Cancelled => {}
        }
        if status == JobStatus::Dead {
            self.add(user, now, Series::Dead, 0, 1);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// The rows to add, each once.
    pub fn rows(&self) -> impl Iterator<Item = StatRow> + '_ {
        self.counts.iter().map(|((user, minute_ms, series, bucket), count)| StatRow {
            user: user.clone(),
            minute_ms: *minute_ms,
            series: *series as i64,
            bucket: *bucket as i64,
            count: *count,
        })
    }
}

/// A window of whole minutes ending with the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub minutes: i64,
    /// The first minute's start.
    pub from_ms: i64,
}

impl Window {
    /// The `minutes` minutes up to and including the one `now` is in.
    pub fn ending_at(now: i64, minutes: i64) -> Self {
        let minutes = minutes.clamp(1, KEPT_MS / MINUTE_MS);
        let current = now - now.rem_euclid(MINUTE_MS);
        Self { minutes, from_ms: current - (minutes - 1) * MINUTE_MS }
    }
}

/// Counts and histograms of one span.
#[derive(Debug, Clone, Default)]
struct Sums {
    counts: [u64; 4],
    queue: [u64; BOUNDS_MS.len() + 1],
    run: [u64; BOUNDS_MS.len() + 1],
}

impl Sums {
    fn add(&mut self, series: Series, bucket: usize, count: u64) {
        match series {
            Series::Enqueued | Series::Succeeded | Series::Failed | Series::Dead => {
                self.counts[series as usize] += count
            }
            Series::QueueMs => self.queue[bucket.min(BOUNDS_MS.len())] += count,
            Series::RunMs => self.run[bucket.min(BOUNDS_MS.len())] += count,
        }
    }

    fn merge(&mut self, other: &Sums) {
        for (sum, add) in self.counts.iter_mut().zip(other.counts) {
            *sum += add;
        }
        for (sum, add) in self.queue.iter_mut().zip(other.queue).chain(self.run.iter_mut().zip(other.run)) {
            *sum += add;
        }
    }

    fn figures(&self) -> StatsFigures {
        StatsFigures {
            enqueued: self.counts[0],
            succeeded: self.counts[1],
            failed: self.counts[2],
            dead: self.counts[3],
            queue_ms: percentiles(&self.queue),
            run_ms: percentiles(&self.run),
        }
    }
}

/// p50 and p95 of a histogram, interpolated linearly inside the bucket that holds them (as Prometheus'
/// `histogram_quantile` does); a quantile in the open last bucket is its lower bound.
fn percentiles(histogram: &[u64]) -> Percentiles {
    Percentiles { p50: quantile(histogram, 0.5), p95: quantile(histogram, 0.95) }
}

fn quantile(histogram: &[u64], q: f64) -> Option<f64> {
    let total: u64 = histogram.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (index, count) in histogram.iter().enumerate() {
        if *count > 0 && (below + count) as f64 >= rank {
            let lower = if index == 0 { 0 } else { BOUNDS_MS[index - 1] } as f64;
            let Some(upper) = BOUNDS_MS.get(index) else { return Some(lower) };
            let within = ((rank - below as f64) / *count as f64).clamp(0.0, 1.0);
            return Some(lower + (*upper as f64 - lower) * within);
        }
        below += count;
    }
    None
}

/// The answer of `GET /jobs/stats` from the stored rows of `window` (rows outside it are ignored).
pub fn summarize(engine: Option<String>, window: Window, rows: &[StatRow]) -> JobStats {
    let mut minutes = vec![Sums::default(); window.minutes as usize];
    for row in rows {
        let offset = (row.minute_ms - window.from_ms).div_euclid(MINUTE_MS);
        let (Ok(offset), Some(series), Ok(bucket), Ok(count)) = (
            usize::try_from(offset),
            Series::from_code(row.series),
            usize::try_from(row.bucket),
            u64::try_from(row.count),
        ) else {
            continue;
        };
        if let Some(sums) = minutes.get_mut(offset) {
            sums.add(series, bucket, count);
        }
    }
    let mut totals = Sums::default();
    let buckets = minutes
        .iter()
        .enumerate()
        .map(|(offset, sums)| {
            totals.merge(sums);
            StatsBucket { start: format_ms(window.from_ms + offset as i64 * MINUTE_MS), figures: sums.figures() }
        })
        .collect();
    JobStats {
        engine,
        window_seconds: (window.minutes * MINUTE_MS / 1_000) as u64,
        bucket_seconds: (MINUTE_MS / 1_000) as u64,
        buckets,
        totals: totals.figures(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(minute_ms: i64, series: Series, bucket: usize, count: i64) -> StatRow {
        StatRow { user: "u".into(), minute_ms, series: series as i64, bucket: bucket as i64, count }
    }

    #[test]
    fn durations_fall_in_the_bucket_of_their_upper_bound() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(1), 0);
        assert_eq!(bucket_of(2), 1);
        assert_eq!(bucket_of(3), 2);
        assert_eq!(bucket_of(3_600_000), BOUNDS_MS.len() - 1);
        assert_eq!(bucket_of(3_600_001), BOUNDS_MS.len());
    }

    #[test]
    fn a_tally_sums_each_row_once_per_user_minute_series_and_bucket() {
        let mut tally = Tally::default();
        tally.enqueued("a", 60_000, 3);
        tally.enqueued("a", 119_999, 2);
        tally.enqueued("a", 120_000, 1);
        tally.enqueued("b", 60_001, 1);
        tally.claimed("a", 60_000, 7);
        tally.finished("a", 60_000, 30, AttemptEnd::TimedOut, JobStatus::Dead);
        tally.finished("a", 60_000, 30, AttemptEnd::Succeeded, JobStatus::Succeeded);
        tally.finished("a", 60_000, 30, AttemptEnd::Cancelled, JobStatus::Cancelled);
        let rows: Vec<StatRow> = tally.rows().collect();
        let count = |user: &str, minute: i64, series: Series| -> i64 {
            rows.iter()
                .filter(|r| r.user == user && r.minute_ms == minute && r.series == series as i64)
                .map(|r| r.count)
                .sum()
        };
        assert_eq!(count("a", 60_000, Series::Enqueued), 5);
        assert_eq!(count("a", 120_000, Series::Enqueued), 1);
        assert_eq!(count("b", 60_000, Series::Enqueued), 1);
        assert_eq!(count("a", 60_000, Series::QueueMs), 1);
        assert_eq!(count("a", 60_000, Series::RunMs), 3);
        assert_eq!(count("a", 60_000, Series::Succeeded), 1);
        assert_eq!(count("a", 60_000, Series::Failed), 1);
        assert_eq!(count("a", 60_000, Series::Dead), 1);
        let run_rows = rows.iter().filter(|r| r.series == Series::RunMs as i64).count();
        assert_eq!(run_rows, 1, "three attempts of 30 ms are one row of count 3");
    }

    #[test]
    fn a_window_has_every_minute_oldest_first_and_totals() {
        let now = 10 * MINUTE_MS + 5_000;
        let window = Window::ending_at(now, 3);
        assert_eq!(window.from_ms, 8 * MINUTE_MS);
        let rows = vec![
            row(8 * MINUTE_MS, Series::Enqueued, 0, 4),
            row(10 * MINUTE_MS, Series::Enqueued, 0, 1),
            row(10 * MINUTE_MS, Series::Failed, 0, 2),
            // Outside the window: ignored.
            row(7 * MINUTE_MS, Series::Enqueued, 0, 100),
            row(11 * MINUTE_MS, Series::Enqueued, 0, 100),
        ];
        let stats = summarize(Some("e".into()), window, &rows);
        assert_eq!((stats.window_seconds, stats.bucket_seconds), (180, 60));
        let enqueued: Vec<u64> = stats.buckets.iter().map(|b| b.figures.enqueued).collect();
        assert_eq!(enqueued, vec![4, 0, 1]);
        assert_eq!(stats.buckets[0].start, format_ms(8 * MINUTE_MS));
        assert_eq!((stats.totals.enqueued, stats.totals.failed), (5, 2));
        assert_eq!(stats.totals.run_ms, Percentiles { p50: None, p95: None });
    }

    #[test]
    fn percentiles_interpolate_inside_their_bucket() {
        // 100 claims: 50 in (5, 10] ms, 50 in (100, 250] ms.
        let window = Window::ending_at(0, 1);
        let rows = vec![row(0, Series::QueueMs, bucket_of(8), 50), row(0, Series::QueueMs, bucket_of(200), 50)];
        let stats = summarize(None, window, &rows);
        assert_eq!(stats.totals.queue_ms.p50, Some(10.0));
        let p95 = stats.totals.queue_ms.p95.expect("a p95");
        assert!((100.0..=250.0).contains(&p95), "p95 {p95}");
        assert!((p95 - 235.0).abs() < 1e-9, "90% of the way through (100, 250]: {p95}");
        // Everything beyond the last bound: its lower bound.
        let rows = vec![row(0, Series::RunMs, BOUNDS_MS.len(), 3)];
        assert_eq!(summarize(None, window, &rows).totals.run_ms.p95, Some(3_600_000.0));
    }
}
