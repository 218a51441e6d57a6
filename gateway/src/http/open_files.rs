//! The open-file limit: raised at start as far as the OS allows, and the connection cap kept under it, so
//! connections alone can never make the gateway fail with "Too many open files".

/// How far the soft limit is raised (below Linux's default `nr_open`); the hard limit caps it anyway.
const WANTED_OPEN_FILES: u64 = 1 << 20;

/// The soft limit of open files before and after raising it towards the hard limit; `None` where the OS has no
/// such limit (Windows) or it cannot be read.
pub fn raise_open_file_limit() -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        let (before, _hard) = match rlimit::Resource::NOFILE.get() {
            Ok(limits) => limits,
            Err(error) => {
                tracing::warn!(%error, "could not read the open-file limit");
                return None;
            }
        };
        match rlimit::increase_nofile_limit(WANTED_OPEN_FILES) {
            Ok(after) => Some((before, after.max(before))),
            Err(error) => {
                tracing::warn!(%error, before, "could not raise the open-file limit");
                Some((before, before))
            }
        }
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The connection cap: as configured, but within three quarters of the open-file limit, leaving the rest to the
/// databases, logs and outgoing connections.
pub fn connection_cap(configured: usize, open_files: Option<u64>) -> usize {
    let cap = match open_files {
        Some(limit) => configured.min(usize::try_from(limit / 4 * 3).unwrap_or(usize::MAX)),
        None => configured,
    };
    cap.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_stays_under_the_open_file_limit() {
        assert_eq!(connection_cap(10_000, Some(1_048_576)), 10_000);
        assert_eq!(connection_cap(10_000, Some(1_024)), 768);
        assert_eq!(connection_cap(10_000, None), 10_000);
        assert_eq!(connection_cap(0, Some(1_024)), 1);
    }
}
