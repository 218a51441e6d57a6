//! Serving the router on the listener (HTTP/1, HTTP/2, upgrades; TLS when configured) with what `axum::serve`
//! lacks: a deadline for a new connection's TLS handshake and first request, an idle timeout, and a cap on open
//! connections, so clients that never finish a request cannot hold the gateway's sockets.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service;

/// The limits on each connection and on their number.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// How long a new connection may take to deliver its first request's headers.
    pub header_read_timeout: Duration,
    /// How long a connection may stay open with no request in flight, after its first request.
    pub idle_timeout: Duration,
    /// Connections open at once; further ones wait in the listen backlog.
    pub max_connections: usize,
}

/// What the listen port speaks.
#[derive(Clone, Default)]
pub struct Protocols {
    /// TLS (HTTPS, WSS) with HTTP/2 and HTTP/1.1 by ALPN; plain HTTP when absent.
    pub tls: Option<TlsAcceptor>,
    /// On plain HTTP, HTTP/2 without TLS (prior knowledge) as well as HTTP/1.1.
    pub h2c: bool,
}

/// Serves `app` on `listener` until `stop` completes (the requests keep being served while it runs: it is the
/// drain), then stops accepting, asks every connection to close after its request in flight, and waits for them.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    protocols: Protocols,
    stop: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let connections = TaskTracker::new();
    let closing = CancellationToken::new();
    let server = Arc::new(HttpServer::new(protocols.tls.is_some() || protocols.h2c));
    tokio::pin!(stop);
    loop {
        // A slot first: past the cap, new connections wait in the kernel's backlog instead of taking a descriptor.
        let slot = tokio::select! {
            () = &mut stop => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    pause_after_accept_error(error).await;
                    continue;
                }
            },
        };
        // Answers are small and latency matters (a woken long-poll claim): do not let Nagle hold them back.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        let connection = Connection { peer, app: app.clone(), limits, closing: closing.clone(), _slot: slot };
        connections.spawn(connection.serve(server.clone(), tcp, protocols.tls.clone()));
    }
    drop(listener);
    closing.cancel();
    connections.close();
    connections.wait().await;
    Ok(())
}

/// Out of descriptors (or another accept failure that is not the peer's): wait a little for some to be freed
/// rather than spin.
async fn pause_after_accept_error(error: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(error.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset) {
        return;
    }
    tracing::error!(%error, "accept failed");
    tokio::time::sleep(Duration::from_millis(250)).await;
}

/// How a connection's bytes are read as HTTP.
enum HttpServer {
    /// HTTP/1.1 or HTTP/2, told apart by the client's first bytes (the preface), with upgrades.
    Auto(auto::Builder<TokioExecutor>),
    /// HTTP/1.1 only (with upgrades): a clear-text HTTP/2 preface is refused. hyper-util's `auto` builder ignores its
    /// own `http1_only` when upgrades are on, so this is hyper's HTTP/1 server itself.
    Http1(http1::Builder),
}

impl HttpServer {
    /// Our own watchdog bounds the wait for a request head (before the first request, and between requests by the
    /// idle timeout), so hyper's header timer, which would also cut keep-alive at the header deadline, is off.
    fn new(http2: bool) -> Self {
        if http2 {
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder.http1().header_read_timeout(None);
            Self::Auto(builder)
        } else {
            let mut builder = http1::Builder::new();
            builder.header_read_timeout(None);
            Self::Http1(builder)
        }
    }
}

/// Drives a served connection (`$connection`, either server's) until the peer closes it, it idles past its
/// deadline, or the gateway stops (then it finishes the requests in flight). A macro, as the two servers'
/// connection types share these methods but no trait.
macro_rules! watch_connection {
    ($connection:expr, $peer:expr, $limits:expr, $closing:expr, $activity:expr) => {{
        let connection = $connection;
        tokio::pin!(connection);
        let mut asked_to_close = false;
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%error, peer = %$peer, "connection ended with an error");
                    }
                    return;
                }
                () = $closing.cancelled(), if !asked_to_close => {
                    asked_to_close = true;
                    connection.as_mut().graceful_shutdown();
                }
                // Nothing in flight to lose: drop the socket.
                () = $activity.idled_out($limits) => {
                    tracing::debug!(peer = %$peer, "closing an idle connection");
                    return;
                }
            }
        }
    }};
}

/// One accepted connection and what it is served with.
struct Connection {
    peer: SocketAddr,
    app: Router,
    limits: ConnectionLimits,
    closing: CancellationToken,
    /// Its place under the connection cap, freed when the connection ends.
    _slot: OwnedSemaphorePermit,
}

impl Connection {
    /// Serves the connection, after its TLS handshake when there is TLS.
    async fn serve(self, server: Arc<HttpServer>, tcp: TcpStream, tls: Option<TlsAcceptor>) {
        let activity = Arc::new(Activity::new());
        let Some(tls) = tls else {
            return self.serve_http(&server, TokioIo::new(tcp), activity).await;
        };
        // The handshake counts against the deadline for the first request's headers: a client that stalls in it
        // is dropped like one that stalls before its request.
        let stream = tokio::select! {
            accepted = tls.accept(tcp) => match accepted {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::debug!(%error, peer = %self.peer, "TLS handshake failed");
                    return;
                }
            },
            () = activity.idled_out(self.limits) => {
                tracing::debug!(peer = %self.peer, "closing a connection stuck in its TLS handshake");
                return;
            }
            () = self.closing.cancelled() => return,
        };
        self.serve_http(&server, TokioIo::new(stream), activity).await;
    }

    /// HTTP on the connection, until the peer closes it, it idles past its deadline, or the gateway stops.
    async fn serve_http<I>(self, server: &HttpServer, io: I, activity: Arc<Activity>)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let Self { peer, app, limits, closing, _slot } = self;
        let service = {
            let activity = activity.clone();
            hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                let busy = Busy::begin(&activity);
                request.extensions_mut().insert(ConnectInfo(peer));
                let mut app = app.clone();
                async move {
                    let response = app.call(request).await?;
                    // The request counts as in flight until its answer is written out.
                    Ok::<_, Infallible>(response.map(|body| Body::new(TrackedBody { inner: body, _busy: busy })))
                }
            })
        };
        match server {
            HttpServer::Auto(builder) => {
                watch_connection!(builder.serve_connection_with_upgrades(io, service), peer, limits, closing, activity)
            }
            HttpServer::Http1(builder) => {
                watch_connection!(
                    builder.serve_connection(io, service).with_upgrades(),
                    peer,
                    limits,
                    closing,
                    activity
                )
            }
        }
    }
}

/// What a connection is doing, for its watchdog.
struct Activity(Mutex<ActivityState>);

struct ActivityState {
    in_flight: usize,
    /// When the connection last had no request in flight (its opening, or the end of its last answer).
    idle_since: Instant,
    /// Whether any request head has arrived yet.
    had_request: bool,
}

impl Activity {
    fn new() -> Self {
        Self(Mutex::new(ActivityState { in_flight: 0, idle_since: Instant::now(), had_request: false }))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ActivityState> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Completes once the connection has had no request in flight for its deadline: the header-read timeout
    /// before its first request, the idle timeout after.
    async fn idled_out(&self, limits: ConnectionLimits) {
        loop {
            let wake_at = {
                let state = self.state();
                let deadline = if state.had_request { limits.idle_timeout } else { limits.header_read_timeout };
                if state.in_flight > 0 {
                    Instant::now() + deadline
                } else if state.idle_since.elapsed() >= deadline {
                    return;
                } else {
                    state.idle_since + deadline
                }
            };
            tokio::time::sleep_until(wake_at).await;
        }
    }
}

/// A request in flight on its connection; dropped when its answer is written (or abandoned).
struct Busy(Arc<Activity>);

impl Busy {
    fn begin(activity: &Arc<Activity>) -> Self {
        let mut state = activity.state();
        state.in_flight += 1;
        state.had_request = true;
        drop(state);
        Self(activity.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.in_flight = state.in_flight.saturating_sub(1);
        state.idle_since = Instant::now();
    }
}

/// A response body that keeps its request counted as in flight until it is dropped.
struct TrackedBody {
    inner: Body,
    _busy: Busy,
}

impl HttpBody for TrackedBody {
    type Data = <Body as HttpBody>::Data;
    type Error = <Body as HttpBody>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
