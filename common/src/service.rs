//! Telling a service manager how the process is doing: systemd's `sd_notify` (`Type=notify`) on Linux; nothing on
//! other systems (macOS, Windows) or when not started by systemd (no `NOTIFY_SOCKET`).

/// The process serves: systemd marks the unit started (and `systemctl start` returns).
pub fn ready() {
    notify(Status::Ready);
}

/// The process is draining and will exit: systemd shows the unit as deactivating.
pub fn stopping() {
    notify(Status::Stopping);
}

enum Status {
    Ready,
    Stopping,
}

#[cfg(target_os = "linux")]
fn notify(status: Status) {
    let state = match status {
        Status::Ready => sd_notify::NotifyState::Ready,
        Status::Stopping => sd_notify::NotifyState::Stopping,
    };
    // Not under systemd, the socket is absent and this does nothing; a failure to tell it is only logged, since
    // the process works all the same (systemd then times the start out, which says why).
    if let Err(error) = sd_notify::notify(false, &[state]) {
        tracing::warn!(%error, "could not notify the service manager");
    }
}

#[cfg(not(target_os = "linux"))]
fn notify(_status: Status) {}
