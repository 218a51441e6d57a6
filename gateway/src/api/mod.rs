//! The HTTP API: one module per resource, assembled into one router here.

pub mod admin;
pub mod audit;
pub mod auth;
pub mod engines;
pub mod extract;
pub mod input_error;
pub mod internal;
pub mod job_filter;
pub mod job_ops;
pub mod job_stats;
pub mod jobs;
pub mod keys;
pub mod openapi;
pub mod schedules;
pub mod status;

use std::any::Any;

use crate::live::LiveLayer;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method, Uri, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::http::error::ApiError;
use crate::http::{network, rate_limit, request_log};
use crate::state::AppState;

/// Request bodies above this are refused with 413 before they are read in full.
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// All routes of the gateway; Socket.IO under `/socket.io/`, and the built GUI for any other path when given.
pub fn router(state: AppState, socket_io: LiveLayer, gui: Option<Router>) -> Router {
    let cors = cors_layer(&state.sign_in.origins);
    // Probes answer whatever the rate limits say, so a load balancer never takes a busy gateway for a dead one.
    let probes = Router::new().route("/healthz", get(status::healthz)).route("/readyz", get(status::readyz));
    let api = Router::new()
        .route("/status", get(status::status))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/jobs", post(jobs::create).get(jobs::list))
        .route("/jobs/batch", post(jobs::create_batch))
        .route("/jobs/bulk", post(job_ops::bulk))
        .route("/jobs/counts", get(job_ops::counts))
        .route("/jobs/stats", get(job_stats::stats))
        .route("/jobs/{id}", get(jobs::get).delete(job_ops::delete))
        .route("/jobs/{id}/cancel", post(jobs::cancel))
        .route("/jobs/{id}/retry", post(job_ops::retry))
        .route("/jobs/{id}/attempts", get(job_ops::attempts))
        .route("/auth/nonce", get(auth::nonce))
        .route("/auth/verify", post(auth::verify))
        .route("/auth/refresh", post(auth::refresh))
        .route("/auth/logout", post(auth::logout))
        .route("/auth/keys", post(keys::create).get(keys::list))
        .route("/auth/keys/{id}", delete(keys::delete))
        .route("/engines/{id}/pause", post(engines::pause))
        .route("/engines/{id}/resume", post(engines::resume))
        .route("/engines/{id}/users", get(engines::list_users))
        .route("/engines/{id}/scheduling", get(engines::scheduling))
        .route("/engines/{id}/breakers", get(engines::breakers))
        .route("/engines/{id}/weights/{user}", put(engines::set_weight))
        .route("/engines/{id}/concurrency", put(engines::set_default_key_limit))
        .route("/engines/{id}/concurrency/{key}", put(engines::set_key_limit).delete(engines::remove_key_limit))
        .route("/schedules", post(schedules::create).get(schedules::list))
        .route("/schedules/{id}", delete(schedules::delete))
        .route("/engines/{id}/users/{user}", put(engines::allow_user).delete(engines::disallow_user))
        .route("/drain", get(status::drain))
        .route("/metrics", get(status::metrics))
        .route("/admin/drain", post(admin::start_drain).delete(admin::stop_drain))
        .route("/admin/engines", get(admin::list_engines))
        .route("/admin/engines/{id}/users/{user}", put(admin::allow_user).delete(admin::disallow_user))
        .route("/admin/audit", get(audit::list))
        .route("/admin/audit/verify", get(admin::verify_audit))
        .merge(engine_api());
    let api = match gui {
        Some(gui) => api.fallback_service(gui),
        None => api.fallback(not_found),
    };
    let api = api.method_not_allowed_fallback(method_not_allowed);
    // Inside the network rules and rate limits, which apply to Socket.IO handshakes and polls too.
    let api = match socket_io {
        LiveLayer::Local(layer) => api.layer(layer),
        LiveLayer::Redis(layer) => api.layer(layer),
    };
    api.layer(middleware::from_fn_with_state(state.clone(), rate_limit::limit_per_ip))
        .layer(middleware::from_fn_with_state(state.clone(), network::enforce_cidr_rules))
        .merge(probes)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), request_log::log_requests))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(cors)
        // Every answer, errors and 404s included: a browser must not guess a JSON error is HTML or script.
        .layer(SetResponseHeaderLayer::overriding(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .with_state(state)
}

/// The engine protocol (`docs/engine-protocol.md`), behind its version check.
fn engine_api() -> Router<AppState> {
    Router::new()
        .route("/internal/whoami", get(internal::whoami))
        .route("/internal/claim", post(internal::claim))
        .route("/internal/jobs/{id}/heartbeat", post(internal::heartbeat))
        .route("/internal/jobs/{id}/finish", post(internal::finish))
        .route("/internal/finish", post(internal::finish_batch))
        .route_layer(middleware::from_fn(internal::check_protocol))
}

/// CORS for the GUI origins only (and none of the engine API's headers).
fn cors_layer(origins: &[String]) -> CorsLayer {
    let origins: Vec<HeaderValue> = origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("traceparent"),
        ])
        .expose_headers([
            header::LOCATION,
            header::RETRY_AFTER,
            HeaderName::from_static("idempotent-replayed"),
            HeaderName::from_static("ratelimit"),
            HeaderName::from_static("ratelimit-policy"),
        ])
        .max_age(std::time::Duration::from_secs(600))
}

/// The JSON 404 of a path nothing serves (also the built GUI's answer for a missing file).
pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found("route_not_found", format!("no route for {}", uri.path()))
}

async fn method_not_allowed(uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed { message: format!("{} does not support this method", uri.path()) }
}

fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into());
    ApiError::Internal(format!("handler panicked: {detail}")).into_response()
}
