//! CPU time used by processes, so a run can report CPU per job: on a shared, noisy machine that varies far less
//! than throughput does.

/// Processor seconds (user + system, all threads, exited ones included) `pid` has used so far; `None` where the
/// platform does not say (this reads Linux's `/proc`).
pub fn seconds(pid: u32) -> Option<f64> {
    #[cfg(target_os = "linux")]
    {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        parse_stat(&stat)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pid;
        None
    }
}

/// Linux reports these in clock ticks of 1/100 s (`USER_HZ`, fixed at 100 for user space on every architecture).
const TICKS_PER_SECOND: f64 = 100.0;

/// User + system seconds from the text of `/proc/PID/stat` (fields 14 and 15, counted after the command name,
/// which may itself hold spaces and parentheses).
fn parse_stat(stat: &str) -> Option<f64> {
    let (_, after_name) = stat.rsplit_once(')')?;
    let mut fields = after_name.split_whitespace().skip(11);
    let user: f64 = fields.next()?.parse().ok()?;
    let system: f64 = fields.next()?.parse().ok()?;
    Some((user + system) / TICKS_PER_SECOND)
}

/// CPU seconds a set of processes uses between `start` and `stop`.
pub struct Meter {
    pids: Vec<u32>,
    at_start: Option<f64>,
}

impl Meter {
    pub fn start(pids: Vec<u32>) -> Self {
        let at_start = total(&pids);
        Self { pids, at_start }
    }

    /// A meter over processes started during the phase (they had used nothing before it).
    pub fn from_zero(pids: Vec<u32>) -> Self {
        Self { pids, at_start: Some(0.0) }
    }

    /// Microseconds of CPU per unit of work (`units` jobs or requests) since `start`.
    pub fn micros_per(&self, units: usize) -> Option<f64> {
        let used = total(&self.pids)? - self.at_start?;
        (units > 0).then(|| used * 1e6 / units as f64)
    }
}

fn total(pids: &[u32]) -> Option<f64> {
    pids.iter().map(|pid| seconds(*pid)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_user_and_system_ticks_after_an_awkward_name() {
        let stat = "4242 (tokio (rt) worker) S 1 4242 4242 0 -1 4194560 2913 0 0 0 1234 56 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_stat(stat), Some(12.9));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_count_grows_while_this_process_works() {
        let pid = std::process::id();
        let before = seconds(pid).expect("this process's /proc/PID/stat is readable");
        let started = std::time::Instant::now();
        while seconds(pid).expect("still readable") < before + 0.02 {
            assert!(started.elapsed() < std::time::Duration::from_secs(10), "no CPU counted after 10 s of work");
        }
        let meter = Meter::start(vec![pid]);
        assert!(meter.micros_per(0).is_none(), "no units, no figure");
    }
}
