//! One log line and one metrics update per HTTP request, with the fixed fields of `flowork_common::logging`.
//!
//! Handlers and extractors that learn who or what a request is about (the user, the engine, the job) note it
//! in the request's `RequestLog`, so the line written after the response carries it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use flowork_common::logging::REQUEST_TARGET;
use flowork_common::wire::ErrorBody;
use tracing::Instrument;

use crate::observability::metrics::{HttpLabels, RefusalLabels, UNMATCHED_ROUTE, method_label};
use crate::state::AppState;

#[derive(Debug, Default)]
struct Subjects {
    user_id: Option<String>,
    engine_id: Option<String>,
    job_id: Option<String>,
}

/// What a request turned out to be about.
#[derive(Debug, Clone, Default)]
pub struct RequestLog(Arc<Mutex<Subjects>>);

impl RequestLog {
    pub fn user(&self, id: &str) {
        if let Ok(mut s) = self.0.lock() {
            s.user_id = Some(id.to_string());
        }
    }

    pub fn engine(&self, id: &str) {
        if let Ok(mut s) = self.0.lock() {
            s.engine_id = Some(id.to_string());
        }
    }

    pub fn job(&self, id: &str) {
        if let Ok(mut s) = self.0.lock() {
            s.job_id = Some(id.to_string());
        }
    }
}

/// Notes the job a request is about, if the request is being logged.
pub fn note_job(log: Option<&RequestLog>, id: &str) {
    if let Some(log) = log {
        log.job(id);
    }
}

/// The trace id of a W3C `traceparent` header.
fn trace_id(request: &Request) -> Option<String> {
    let header = request.headers().get("traceparent")?.to_str().ok()?;
    crate::admission::enqueue::parse_traceparent(Some(header)).and_then(|t| t.split('-').nth(1).map(str::to_string))
}

/// Middleware: logs and counts every request.
pub async fn log_requests(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let log = RequestLog::default();
    request.extensions_mut().insert(log.clone());
    // Both from closed sets (the route templates, the standard methods): they become metric labels and span
    // names, which must not grow with what callers send.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| UNMATCHED_ROUTE.into());
    let method = method_label(request.method());
    // The log line keeps the method as sent: one line per request, read by the operator.
    let sent_method = request.method().to_string();
    let trace_id = trace_id(&request);
    let ip = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| {
        crate::http::client_ip::resolve(addr.ip(), request.headers(), &state.network.proxy).to_string()
    });
    // The request's span: a child of the caller's traceparent, so a trace runs from the client on.
    let span = tracing::info_span!(
        "http.request",
        otel.name = %format!("{method} {route}"),
        http.route = %route,
        http.status_code = tracing::field::Empty
    );
    flowork_common::telemetry::set_parent(&span, request.headers().get("traceparent").and_then(|v| v.to_str().ok()));
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    span.record("http.status_code", status);
    let latency_ms = started.elapsed().as_secs_f64() * 1_000.0;
    state.metrics.http_requests.get_or_create(&HttpLabels { route: route.clone(), method, status }).inc();
    if status == 429 || status == 503 {
        let code = response.extensions().get::<ErrorBody>().map(|b| b.error.clone()).unwrap_or_default();
        state.metrics.refusals.get_or_create(&RefusalLabels { status, code }).inc();
    }
    let subjects = log.0.lock().map(|s| (s.user_id.clone(), s.engine_id.clone(), s.job_id.clone())).unwrap_or_default();
    tracing::info!(
        target: REQUEST_TARGET,
        trace_id,
        user_id = subjects.0,
        engine_id = subjects.1,
        job_id = subjects.2,
        ip,
        route,
        method = sent_method,
        status,
        latency_ms,
        "request"
    );
    response
}
