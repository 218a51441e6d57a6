//! Which of a user's jobs a request means: the filter fields shared by `GET /jobs`, `GET /jobs/counts` and
//! `POST /jobs/bulk`, checked into the store's `JobFilter` (every bad field a 400 naming it).

use flowork_common::ids::{validate_engine_id, validate_kind};
use flowork_common::timefmt::parse_ms;
use flowork_common::wire::JobStatus;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::http::error::ApiError;
use crate::store::JobFilter;

/// The filter fields, as a query string or as the `filter` of `POST /jobs/bulk`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams, ToSchema)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FilterFields {
    /// Only jobs in these states, comma-separated: `dead,cancelled`.
    #[param(example = "dead,cancelled")]
    #[schema(example = "dead,cancelled")]
    pub status: Option<String>,
    /// Only jobs of this engine.
    #[param(pattern = "^[a-z0-9][a-z0-9-]{0,62}$")]
    #[schema(pattern = "^[a-z0-9][a-z0-9-]{0,62}$")]
    pub engine: Option<String>,
    /// Only jobs of this kind.
    #[param(pattern = "^[a-z0-9._-]{1,64}$")]
    #[schema(pattern = "^[a-z0-9._-]{1,64}$")]
    pub kind: Option<String>,
    /// Only jobs enqueued at or after this time (RFC 3339).
    #[param(format = DateTime)]
    #[schema(format = DateTime)]
    pub after: Option<String>,
    /// Only jobs enqueued before this time (RFC 3339).
    #[param(format = DateTime)]
    #[schema(format = DateTime)]
    pub before: Option<String>,
    /// Only jobs whose id starts with this (1-36 characters of a UUID).
    #[param(pattern = "^[0-9a-f-]{1,36}$")]
    #[schema(pattern = "^[0-9a-f-]{1,36}$")]
    pub id_prefix: Option<String>,
}

/// Parses a comma-separated list of states.
pub fn parse_statuses(text: &str) -> Result<Vec<JobStatus>, ApiError> {
    let mut statuses = Vec::new();
    for name in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let status = JobStatus::parse(name).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_status",
                format!("status {name:?} is not one of queued, running, succeeded, dead, cancelled"),
            )
        })?;
        if !statuses.contains(&status) {
            statuses.push(status);
        }
    }
    if statuses.is_empty() {
        return Err(ApiError::bad_request("invalid_status", "status names no state"));
    }
    Ok(statuses)
}

fn parse_time(field: &'static str, code: &'static str, text: &str) -> Result<i64, ApiError> {
    parse_ms(text).ok_or_else(|| {
        ApiError::bad_request(code, format!("{field} {text:?} is not an RFC 3339 time such as 2026-12-03T10:00:00Z"))
    })
}

impl FilterFields {
    /// The store's filter, or a 400 naming the first bad field.
    pub fn to_filter(&self) -> Result<JobFilter, ApiError> {
        let statuses = self.status.as_deref().map(parse_statuses).transpose()?.unwrap_or_default();
        if let Some(engine) = &self.engine {
            validate_engine_id(engine).map_err(|e| ApiError::bad_request("invalid_engine", e.to_string()))?;
        }
        if let Some(kind) = &self.kind {
            validate_kind(kind).map_err(|e| ApiError::bad_request("invalid_kind", e.to_string()))?;
        }
        let after = self.after.as_deref().map(|t| parse_time("after", "invalid_after", t)).transpose()?;
        let before = self.before.as_deref().map(|t| parse_time("before", "invalid_before", t)).transpose()?;
        if let Some(prefix) = &self.id_prefix {
            let valid = (1..=36).contains(&prefix.len()) && prefix.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
            if !valid {
                return Err(ApiError::bad_request(
                    "invalid_id_prefix",
                    "id_prefix must be 1-36 characters of a job id (hex digits and -)",
                ));
            }
        }
        Ok(JobFilter {
            statuses,
            engine: self.engine.clone(),
            kind: self.kind.clone(),
            enqueued_from_ms: after,
            enqueued_before_ms: before,
            id_prefix: self.id_prefix.as_ref().map(|p| p.to_ascii_lowercase()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(fields: FilterFields) -> String {
        fields.to_filter().unwrap_err().status_and_body().1.error
    }

    #[test]
    fn every_bad_field_is_refused_by_name_and_good_ones_become_the_filter() {
        let filter = FilterFields {
            status: Some("dead, cancelled,dead".into()),
            engine: Some("alpha".into()),
            kind: Some("echo".into()),
            after: Some("2026-12-03T10:00:00Z".into()),
            before: Some("2026-12-03T11:00:00.500Z".into()),
            id_prefix: Some("019A".into()),
        }
        .to_filter()
        .unwrap();
        assert_eq!(filter.statuses, vec![JobStatus::Dead, JobStatus::Cancelled]);
        assert_eq!(filter.enqueued_before_ms.unwrap() - filter.enqueued_from_ms.unwrap(), 3_600_500);
        assert_eq!(filter.id_prefix.as_deref(), Some("019a"));
        assert_eq!(code(FilterFields { status: Some("done".into()), ..Default::default() }), "invalid_status");
        assert_eq!(code(FilterFields { status: Some(",".into()), ..Default::default() }), "invalid_status");
        assert_eq!(code(FilterFields { engine: Some("Bad!".into()), ..Default::default() }), "invalid_engine");
        assert_eq!(code(FilterFields { kind: Some("A B".into()), ..Default::default() }), "invalid_kind");
        assert_eq!(code(FilterFields { after: Some("yesterday".into()), ..Default::default() }), "invalid_after");
        assert_eq!(code(FilterFields { before: Some("1".into()), ..Default::default() }), "invalid_before");
        assert_eq!(code(FilterFields { id_prefix: Some("xyz".into()), ..Default::default() }), "invalid_id_prefix");
        assert_eq!(code(FilterFields { id_prefix: Some(String::new()), ..Default::default() }), "invalid_id_prefix");
    }
}
