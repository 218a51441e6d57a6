//! `GET /openapi.json`: the public API described from the handlers' own annotations, so it cannot drift from the
//! code. Each handler lists the answers its own code gives; the errors of the layers a request passes before it
//! (network rules, rate limits, authentication, the JSON body and query extractors, the store) are added here
//! from what each operation is: which security it takes, whether it has a body or a query.

use axum::Json;
use flowork_common::wire::ErrorBody;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::response::Response;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, HeaderBuilder, ObjectBuilder, RefOr, ResponseBuilder, Type};
use utoipa::{Modify, OpenApi, ToSchema};

use super::{admin, audit, auth, engines, internal, job_ops, job_stats, jobs, keys, schedules, status};

#[derive(OpenApi)]
#[openapi(
    info(title = "Flowork gateway", description = "Self-hosted job queue gateway: jobs, sign-in, engines, status."),
    servers((url = "/", description = "this gateway")),
    paths(
        jobs::create, jobs::list, jobs::get, jobs::cancel, jobs::create_batch,
        job_ops::retry, job_ops::delete, job_ops::attempts, job_ops::counts, job_ops::bulk, job_stats::stats,
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
    components(schemas(ErrorBody)),
    modifiers(&SharedAnswers),
    security(("user" = [])),
    tags(
        (name = "jobs", description = "Submit, list, follow, cancel, retry and delete your jobs, one or many at a time."),
        (name = "auth", description = "Wallet sign-in (EIP-4361), access and refresh tokens, and API keys for scripts."),
        (name = "schedules", description = "Cron schedules that submit a job at each tick."),
        (name = "engines", description = "An engine's settings, for its owner (or an operator with an admin token)."),
        (name = "admin", description = "The operator's API: admin tokens `fwa_…` with scopes, every call audited."),
        (name = "engine", description = "The engine protocol (`X-Engine-Token`): claim, heartbeat and finish jobs."),
        (name = "status", description = "Probes, gateway status, drain state, metrics and this document."),
    ),
)]
pub struct ApiDoc;

/// The error answers of one layer: a status, and its codes with what they mean.
type Failure = (&'static str, &'static str);

/// The network rules and the per-address rate limit, which every route but the probes passes.
const EDGE: &[Failure] = &[
    ("403", "`ip_denied`: requests from this address are not allowed"),
    ("429", "`rate_limited`: too many requests from this address or user; see `Retry-After` and `RateLimit`"),
];
/// A user's access token or API key (`Authorization: Bearer`).
const USER: &[Failure] = &[
    (
        "401",
        "`missing_token`, `malformed_authorization`, `token_expired`, `token_revoked`, `invalid_token`, \
         `invalid_key`, `key_expired`: no valid access token or API key",
    ),
    ("403", "`key_not_allowed`, `missing_scope`: an API key that may not do this"),
];
/// An admin token, whose scope each operation checks.
const ADMIN: &[Failure] = &[
    ("401", "`missing_token`, `malformed_authorization`, `token_expired`, `token_revoked`, `invalid_token`"),
    ("403", "`missing_scope`: the admin token lacks this operation's scope"),
];
/// An engine token, and the engine-protocol version check before it.
const ENGINE: &[Failure] = &[
    ("400", "`unsupported_protocol`: the `Flowork-Protocol` major is not one this gateway speaks"),
    ("401", "`missing_engine_token`, `invalid_engine_token`"),
];
/// A JSON request body.
const BODY: &[Failure] = &[
    ("400", "`malformed_json`: the body is not JSON"),
    ("413", "`payload_too_large`: the body is larger than 4 MiB"),
    ("415", "`unsupported_media_type`: the body is not sent as `application/json`"),
    ("422", "`invalid_body`: a field is missing, unknown or of the wrong type"),
];
/// A query string.
const QUERY: &[Failure] = &[("400", "`invalid_query`: the query string does not parse")];
/// The databases behind nearly every operation.
const STORE: &[Failure] = &[(
    "503",
    "`store_unavailable`, `storage_full`, `storage_read_only`, `storage_io_error`, `shard_quarantined`, \
     `schema_too_new`: the store cannot serve this now; see `Retry-After`",
)];

/// Operations that pass neither the network rules nor the rate limits (the probes) or touch no store.
const PROBES: &[&str] = &["/healthz", "/readyz"];
const STORELESS: &[&str] = &["/healthz", "/openapi.json"];

/// Adds the security schemes, and to every operation the errors of the layers in front of its handler, with the
/// headers those answers carry.
struct SharedAnswers;

impl Modify for SharedAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "user",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT or fwk_ API key")
                    .description(Some(
                        "a user access token (a JWT from wallet sign-in or `token mint`), or an API key `fwk_…` with \
                         the route's scope",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "admin",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("fwa_ admin token")
                    .description(Some(
                        "an admin token `fwa_<token>.<checksum>` from `flowork-gateway admin token --scope ...`: \
                         opaque to clients, short-lived, with scopes (`drain`, `engines:read`, `engines:write`, \
                         `audit:read`)",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "engine",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Engine-Token",
                "an engine token `fwe_…` (`engine add`); the engine protocol (docs/engine-protocol.md)",
            ))),
        );
        let global = security_names(openapi.security.as_ref());
        for (path, item) in openapi.paths.paths.iter_mut() {
            for operation in [&mut item.get, &mut item.post, &mut item.put, &mut item.delete].into_iter().flatten() {
                let security = operation.security.as_ref().map_or_else(|| global.clone(), |s| security_names(Some(s)));
                for (status, meaning) in shared_failures(path, operation, &security) {
                    add_failure(operation, status, meaning);
                }
                add_retry_headers(operation);
                if path.starts_with("/internal/") {
                    add_protocol_header(operation);
                }
            }
        }
    }
}

/// The scheme names of a security requirement list.
fn security_names(security: Option<&Vec<utoipa::openapi::security::SecurityRequirement>>) -> Vec<String> {
    let requirements = serde_json::to_value(security).unwrap_or_default();
    let objects = requirements.as_array().cloned().unwrap_or_default();
    objects.iter().filter_map(|r| r.as_object()).flat_map(|r| r.keys().cloned()).collect()
}

/// The errors an operation gets from the layers in front of its handler.
fn shared_failures(path: &str, operation: &Operation, security: &[String]) -> Vec<Failure> {
    let mut failures = Vec::new();
    if !PROBES.contains(&path) {
        failures.extend_from_slice(EDGE);
    }
    let has = |name: &str| security.iter().any(|s| s == name);
    if has("engine") {
        failures.extend_from_slice(ENGINE);
    }
    if has("user") {
        failures.extend_from_slice(USER);
    }
    if has("admin") {
        failures.extend_from_slice(ADMIN);
    }
    if operation.request_body.is_some() {
        failures.extend_from_slice(BODY);
    }
    let parameters = operation.parameters.iter().flatten();
    if parameters.into_iter().any(|p| p.parameter_in == ParameterIn::Query) {
        failures.extend_from_slice(QUERY);
    }
    if !STORELESS.contains(&path) {
        failures.extend_from_slice(STORE);
    }
    failures
}

/// Adds one error answer, or its codes to the answer of that status the handler already lists.
fn add_failure(operation: &mut Operation, status: &str, meaning: &str) {
    let responses = &mut operation.responses.responses;
    match responses.get_mut(status) {
        Some(RefOr::T(response)) => {
            if !response.description.contains(meaning) {
                response.description = format!("{}; {meaning}", response.description);
            }
        }
        Some(RefOr::Ref(_)) => {}
        None => {
            let body = ContentBuilder::new().schema(Some(RefOr::Ref(error_body_ref()))).build();
            let response = ResponseBuilder::new().description(meaning).content("application/json", body).build();
            responses.insert(status.to_string(), RefOr::T(response));
        }
    }
}

fn error_body_ref() -> utoipa::openapi::Ref {
    utoipa::openapi::Ref::from_schema_name(ErrorBody::name())
}

/// `Retry-After` on every 429 and 503, and the IETF `RateLimit` headers on a 429 that can be `rate_limited`.
fn add_retry_headers(operation: &mut Operation) {
    for (status, response) in operation.responses.responses.iter_mut() {
        let RefOr::T(response) = response else { continue };
        if status == "429" || status == "503" {
            add_header(response, "Retry-After", integer_header("seconds to wait before retrying"));
        }
        if status == "429" && response.description.contains("`rate_limited`") {
            add_header(
                response,
                "RateLimit-Policy",
                string_header("with `rate_limited`: the limit that refused it, e.g. `\"ip\";q=100;w=1`"),
            );
            add_header(
                response,
                "RateLimit",
                string_header("with `rate_limited`: what is left of it, e.g. `\"ip\";r=0;t=1`"),
            );
        }
    }
}

/// The engine-protocol version the gateway names on every answer of the engine API.
fn add_protocol_header(operation: &mut Operation) {
    for response in operation.responses.responses.values_mut() {
        if let RefOr::T(response) = response {
            add_header(
                response,
                PROTOCOL,
                string_header("the engine-protocol version this gateway speaks, `MAJOR.MINOR`"),
            );
        }
    }
}

/// The engine-protocol header, as the API names it.
const PROTOCOL: &str = "Flowork-Protocol";

fn add_header(response: &mut Response, name: &str, header: utoipa::openapi::Header) {
    response.headers.entry(name.to_string()).or_insert(header);
}

fn integer_header(description: &str) -> utoipa::openapi::Header {
    let schema = ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0)).build();
    HeaderBuilder::new().schema(schema).description(Some(description)).build()
}

fn string_header(description: &str) -> utoipa::openapi::Header {
    HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(Type::String).build())
        .description(Some(description))
        .build()
}

/// `GET /openapi.json`: this document.
#[utoipa::path(get, path = "/openapi.json", tag = "status", operation_id = "openapi_document", security(()),
    responses((status = 200, description = "the OpenAPI 3.1 description of the public API", body = Object)))]
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::admission::enqueue::JobLimits;

    fn document() -> Value {
        serde_json::to_value(ApiDoc::openapi()).expect("the document serialises")
    }

    fn number(value: &Value) -> f64 {
        value.as_f64().unwrap_or_else(|| panic!("not a number: {value}"))
    }

    /// `(minimum, maximum)` of a property of a schema.
    fn bounds(document: &Value, schema: &str, property: &str) -> (f64, f64) {
        let property = &document["components"]["schemas"][schema]["properties"][property];
        (number(&property["minimum"]), number(&property["maximum"]))
    }

    /// `(minimum, maximum)` of a query parameter of an operation.
    fn query_bounds(document: &Value, path: &str, name: &str) -> (f64, f64) {
        let parameters = document["paths"][path]["get"]["parameters"].as_array().expect("parameters");
        let parameter = parameters.iter().find(|p| p["name"] == name).expect("the parameter");
        (number(&parameter["schema"]["minimum"]), number(&parameter["schema"]["maximum"]))
    }

    #[test]
    fn documented_bounds_are_the_ones_the_handlers_enforce() {
        let document = document();
        let limits = JobLimits::default();
        for schema in ["EnqueueRequest", "ScheduleRequest", "BatchJob"] {
            assert_eq!(bounds(&document, schema, "max_attempts"), (1.0, f64::from(limits.max_attempts_limit)));
            assert_eq!(bounds(&document, schema, "timeout_ms"), (1.0, limits.max_timeout_ms as f64));
        }
        assert_eq!(query_bounds(&document, "/jobs", "limit"), (1.0, super::jobs::MAX_PAGE as f64));
        assert_eq!(query_bounds(&document, "/admin/audit", "limit"), (1.0, super::audit::MAX_PAGE as f64));
        let lease = (*internal::LEASE_MS.start() as f64, *internal::LEASE_MS.end() as f64);
        assert_eq!(bounds(&document, "ClaimRequest", "lease_ms"), lease);
        assert_eq!(bounds(&document, "HeartbeatRequest", "lease_ms"), lease);
        assert_eq!(bounds(&document, "ClaimRequest", "max"), (1.0, f64::from(internal::MAX_CLAIM)));
        let schemas = &document["components"]["schemas"];
        assert_eq!(number(&schemas["BatchBody"]["properties"]["jobs"]["maxItems"]), jobs::MAX_BATCH as f64);
        let finishes = &schemas["FinishBatchRequest"]["properties"]["finishes"];
        assert_eq!(number(&finishes["maxItems"]), internal::MAX_FINISH_BATCH as f64);
        // A batch item is a `POST /jobs` body and its key, whatever fields that body gains.
        let fields = |schema: &str| -> std::collections::BTreeSet<String> {
            schemas[schema]["properties"].as_object().expect("fields").keys().cloned().collect()
        };
        let mut expected = fields("EnqueueRequest");
        expected.insert("idempotency_key".into());
        assert_eq!(fields("BatchJob"), expected);
    }

    #[test]
    fn every_operation_has_its_own_id_and_answers_with_typed_bodies() {
        let document = document();
        let mut ids = std::collections::BTreeSet::new();
        for (path, item) in document["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("operations") {
                let id = operation["operationId"].as_str().expect("an operationId");
                assert!(ids.insert(id.to_string()), "{method} {path}: operationId {id} is used twice");
                for (status, response) in operation["responses"].as_object().expect("responses") {
                    let Some(json) = response["content"].get("application/json") else { continue };
                    assert_ne!(json["schema"], serde_json::json!({}), "{method} {path} {status}: an empty schema");
                    if status.starts_with('4') || status.starts_with('5') {
                        assert_eq!(
                            json["schema"]["$ref"], "#/components/schemas/ErrorBody",
                            "{method} {path} {status}"
                        );
                    }
                }
            }
        }
        let health = &document["paths"]["/healthz"]["get"]["responses"];
        assert_eq!(health.as_object().map(|r| r.keys().collect::<Vec<_>>()), Some(vec![&"200".to_string()]));
        let admin = &document["components"]["securitySchemes"]["admin"];
        assert_ne!(admin["bearerFormat"], "JWT", "an admin token is fwa_…, no JWT to its holder");
    }
}
