//! Running the gateway: the listener, the app (`app.rs`) on it, and graceful shutdown.

use std::time::Duration;

use crate::app::{App, OpenedStores};
use crate::audit::AuditEntry;
use crate::config::ServeArgs;
use crate::http::connections::{ConnectionLimits, Protocols};
use crate::http::tls::TlsFiles;
use crate::state::AppState;

/// Runs `flowork-gateway serve` until SIGINT/SIGTERM.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // First, before the databases take descriptors.
    let open_files = crate::http::open_files::raise_open_file_limit();
    crate::background::retention::check(args.upkeep.retention).map_err(anyhow::Error::msg)?;
    let connection_limits = ConnectionLimits {
        header_read_timeout: args.http.header_read_timeout,
        idle_timeout: args.http.idle_timeout,
        max_connections: crate::http::open_files::connection_cap(
            args.http.max_connections,
            open_files.map(|(_, now)| now),
        ),
    };
    match open_files {
        Some((before, now)) => {
            tracing::info!(
                before,
                open_files = now,
                max_connections = connection_limits.max_connections,
                "open-file limit"
            )
        }
        None => tracing::info!(max_connections = connection_limits.max_connections, "open-file limit"),
    }
    // A certificate that cannot be served is refused before the store is opened.
    let tls_stop = tokio_util::sync::CancellationToken::new();
    let _stop_tls_reload = tls_stop.clone().drop_guard();
    let tls = match (&args.http.tls_cert, &args.http.tls_key) {
        (Some(cert), Some(key)) => {
            let files = TlsFiles { cert: cert.clone(), key: key.clone() };
            Some(crate::http::tls::acceptor(files, tls_stop.clone()).await?)
        }
        _ => None,
    };
    if tls.is_none() {
        // `systemctl reload` (SIGHUP) must not end a gateway that has nothing to reload.
        tokio::spawn(async {
            let mut reloads = flowork_common::signal::ReloadRequests::new();
            loop {
                reloads.next().await;
                tracing::info!("SIGHUP: nothing to reload without TLS");
            }
        });
    }
    let protocols = Protocols { tls, h2c: args.http.h2c };
    // The store first: one this build cannot run on is refused before anything listens.
    let opened = OpenedStores::open(&args).await?;
    let listener = crate::http::listener::bind(args.http.listen, args.http.reuse_port)?;
    let addr = listener.local_addr()?;
    match &args.data.store {
        Some(url) => tracing::info!(addr = %addr, store = %crate::connection_string::redact(url), "listening"),
        None => tracing::info!(addr = %addr, data_dir = %args.data.data_dir.display(), "listening"),
    }
    tracing::info!(tls = protocols.tls.is_some(), h2c = protocols.h2c, "protocols");
    let app = App::assemble(&args, opened, addr).await?;
    app.start_background(&args);
    let App { state, router, live, .. } = app;
    let stopping = state.clone();
    let grace = args.admission.drain_grace;
    let control = state.control.clone();
    // Listened for before readiness is announced: a stop right after it drains.
    let stop_requests = flowork_common::signal::StopRequests::new();
    flowork_common::service::ready();
    let served = crate::http::connections::serve(listener, router, connection_limits, protocols, async move {
        stop_requests.wait().await;
        flowork_common::service::stopping();
        drain_then_stop(&stopping, grace).await;
        // Open Socket.IO connections would hold the server open.
        live.close().await;
    })
    .await;
    // The head of the audit log covers every row up to the stop, so none of them can be cut unnoticed.
    if let Err(error) = control.checkpoint_audit().await {
        tracing::error!(%error, "could not checkpoint the head of the audit log");
    }
    served?;
    Ok(())
}

/// SIGTERM: refuse new jobs (503, `/readyz` failing), hand out no more work, let engines finish what runs, and
/// return when nothing runs or `grace` is over. Queued jobs stay in their shards for the next start.
async fn drain_then_stop(state: &AppState, grace: Duration) {
    state.admission.drain.stop();
    state.shutdown.cancel();
    state.audit(AuditEntry::new("signal", "gateway.drain", "ok").detail("SIGTERM")).await;
    tracing::info!(grace_ms = grace.as_millis() as u64, "draining: waiting for running jobs");
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        let running = match state.admission.queue_totals().await {
            Ok(totals) => totals.running,
            Err(error) => {
                tracing::warn!(%error, "could not count running jobs");
                0
            }
        };
        if running == 0 {
            tracing::info!("no job running; shutting down");
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(running, "grace period over; shutting down (their leases will lapse)");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
