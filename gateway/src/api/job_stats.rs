//! `GET /jobs/stats`: per-minute figures of the caller's jobs (stored, succeeded, failed, dead; queue and run
//! time percentiles) over a window of up to a day, from counters kept as jobs move (not a scan of the jobs).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use flowork_common::wire::{ErrorBody, JobStats};
use serde::Deserialize;
use utoipa::IntoParams;

use super::extract::QueryParams;
use super::job_filter::FilterFields;
use crate::auth::extract::AuthUser;
use crate::http::error::ApiError;
use crate::state::AppState;
use crate::store::core::stats::{KEPT_MS, MINUTE_MS, Window, summarize};

/// The window when none is asked for.
const DEFAULT_WINDOW: Duration = Duration::from_secs(3_600);

/// `GET /jobs/stats` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsParams {
    /// Only jobs of this engine.
    #[param(pattern = "^[a-z0-9][a-z0-9-]{0,62}$")]
    engine: Option<String>,
    /// How far back: whole minutes, from `1m` to `24h` (default `1h`).
    #[param(example = "1h")]
    window: Option<String>,
}

/// The window's length in minutes.
fn window_minutes(window: Option<&str>) -> Result<i64, ApiError> {
    let refuse = |why: &str| ApiError::bad_request("invalid_window", format!("window: {why}; say e.g. 15m, 1h or 24h"));
    let length = match window {
        None => DEFAULT_WINDOW,
        Some(text) => humantime::parse_duration(text.trim()).map_err(|_| refuse("not a duration"))?,
    };
    let ms = i64::try_from(length.as_millis()).map_err(|_| refuse("longer than 24h"))?;
    if ms < MINUTE_MS || ms % MINUTE_MS != 0 {
        return Err(refuse("must be a whole number of minutes, at least 1m"));
    }
    if ms > KEPT_MS {
        return Err(refuse("longer than 24h, the time figures are kept"));
    }
    Ok(ms / MINUTE_MS)
}

/// `GET /jobs/stats`: the caller's jobs per minute over the window, oldest minute first, every minute present.
#[utoipa::path(get, path = "/jobs/stats", tag = "jobs", operation_id = "job_stats", params(StatsParams),
    responses(
        (status = 200, description = "per-minute figures of the caller's jobs", body = JobStats),
        (status = 400, description = "`invalid_engine` or `invalid_window`", body = ErrorBody),
    ))]
pub async fn stats(
    State(state): State<AppState>,
    user: AuthUser,
    QueryParams(params): QueryParams<StatsParams>,
) -> Result<Json<JobStats>, ApiError> {
    let minutes = window_minutes(params.window.as_deref())?;
    let filter = FilterFields { engine: params.engine, ..FilterFields::default() }.to_filter()?;
    let window = Window::ending_at(state.clock.now_ms(), minutes);
    let rows = state.jobs.job_stats(&user.id, filter.engine.as_deref(), window.from_ms).await?;
    Ok(Json(summarize(filter.engine, window, &rows)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_whole_minutes_up_to_a_day() {
        assert_eq!(window_minutes(None).ok(), Some(60));
        assert_eq!(window_minutes(Some("15m")).ok(), Some(15));
        assert_eq!(window_minutes(Some("24h")).ok(), Some(1_440));
        for bad in ["", "soon", "30s", "90s", "25h", "-1h", "1h 30s"] {
            let error = window_minutes(Some(bad)).expect_err(bad);
            assert_eq!(error.status_and_body().1.error, "invalid_window", "{bad}");
        }
    }
}
