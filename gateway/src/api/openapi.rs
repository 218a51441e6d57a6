//! `GET /openapi.json`: the public API described from the handlers' own annotations, so it cannot drift from the
//! code. Every operation also lists the error answers any request may get (the JSON error body).

use axum::Json;
use flowork_common::wire::{EnqueueRequest, ErrorBody, Job, JobPage, JobStatus};
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::keys::{ApiKeyInfo, ApiKeyList, CreatedApiKey, DeletedApiKey};
use super::{admin, audit, auth, engines, internal, jobs, keys, schedules, status};

/// Error answers every operation may give, with what they mean.
const ERRORS: &[(&str, &str)] = &[
    ("400", "malformed request (bad JSON, header or query)"),
    ("401", "missing, invalid or expired token"),
    ("403", "not allowed (whitelist, scope, address rules)"),
    ("404", "no such resource (or another user's)"),
    ("405", "method not allowed on this path"),
    ("409", "conflict (request in progress, lease lost, not cancellable)"),
    ("413", "body too large"),
    ("415", "body is not JSON"),
    ("422", "well-formed but not acceptable"),
    ("429", "rate limit or admission cap; see Retry-After"),
    ("503", "draining, or storage unavailable; see Retry-After"),
];

#[derive(OpenApi)]
#[openapi(
    info(title = "Flowork gateway", description = "Self-hosted job queue gateway: jobs, sign-in, engines, status."),
    paths(
        jobs::create, jobs::list, jobs::get, jobs::cancel, jobs::create_batch,
        auth::nonce, auth::verify, auth::refresh, auth::logout,
        keys::create, keys::list, keys::delete,
        status::healthz, status::readyz, status::status, status::drain, status::metrics,
        schedules::create, schedules::list, schedules::delete,
        engines::pause, engines::resume, engines::list_users, engines::scheduling, engines::breakers, engines::set_weight,
        engines::set_default_key_limit, engines::set_key_limit, engines::remove_key_limit,
        engines::allow_user, engines::disallow_user,
        admin::start_drain, admin::stop_drain, admin::list_engines, admin::allow_user, admin::disallow_user,
        admin::verify_audit, audit::list,
        internal::whoami, internal::claim, internal::heartbeat, internal::finish, internal::finish_batch,
        openapi_json,
    ),
    components(schemas(EnqueueRequest, Job, JobPage, JobStatus, ErrorBody, ApiKeyInfo, ApiKeyList, CreatedApiKey, DeletedApiKey)),
    modifiers(&CommonAnswers),
    security(("user" = [])),
)]
pub struct ApiDoc;

/// Adds the bearer schemes and the error answers to every operation.
struct CommonAnswers;

impl Modify for CommonAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |what: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(what.to_string()))
                    .build(),
            )
        };
        components.add_security_scheme(
            "user",
            bearer(
                "a user access token (wallet sign-in or `token mint`), or an API key `fwk_…` with the route's scope",
            ),
        );
        components.add_security_scheme("admin", bearer("an admin token `fwa_…` (`admin token --scope ...`)"));
        components.add_security_scheme(
            "engine",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Engine-Token",
                "an engine token `fwe_…` (`engine add`); the engine protocol (docs/engine-protocol.md)",
            ))),
        );
        for item in openapi.paths.paths.values_mut() {
            for operation in [&mut item.get, &mut item.post, &mut item.put, &mut item.delete].into_iter().flatten() {
                add_errors(operation);
            }
        }
    }
}

fn add_errors(operation: &mut Operation) {
    for (status, meaning) in ERRORS {
        operation.responses.responses.entry((*status).to_string()).or_insert_with(|| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(*meaning)
                    .content("application/json", ContentBuilder::new().schema(Some(ErrorBody::schema_ref())).build())
                    .build(),
            )
        });
    }
}

trait SchemaRef {
    fn schema_ref() -> RefOr<utoipa::openapi::schema::Schema>;
}

impl SchemaRef for ErrorBody {
    fn schema_ref() -> RefOr<utoipa::openapi::schema::Schema> {
        RefOr::Ref(utoipa::openapi::Ref::from_schema_name("ErrorBody"))
    }
}

/// `GET /openapi.json`: this document.
#[utoipa::path(get, path = "/openapi.json", tag = "status", security(()),
    responses((status = 200, description = "the OpenAPI 3.1 description of the public API", body = serde_json::Value)))]
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
