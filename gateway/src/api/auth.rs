//! Wallet sign-in and the token lifecycle: `GET /auth/nonce`, `POST /auth/verify`, `POST /auth/refresh`,
//! `POST /auth/logout`. Every outcome is audited; every failure is a 401 with its own code.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use flowork_common::secret::{self, TokenShape};
use flowork_common::wire::ErrorBody;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::extract::JsonBody;
use crate::audit::AuditEntry;
use crate::auth::AuthError;
use crate::auth::signin::check_sign_in;
use crate::http::client_ip::ClientIp;
use crate::http::error::ApiError;
use crate::state::AppState;
use crate::store::{NonceCheck, RefreshCheck, RefreshTokenRecord};

fn refusal(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::Auth(AuthError::Refused { code, message: message.into() })
}

fn refresh_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// `GET /auth/nonce` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Nonce {
    /// 32 hexadecimal digits, for the `Nonce:` line of the sign-in message; single-use.
    #[schema(pattern = "^[0-9a-f]{32}$")]
    nonce: String,
    /// When the nonce stops being accepted.
    #[schema(format = DateTime)]
    expires_at: String,
}

/// `GET /auth/nonce`: a fresh single-use nonce (128 random bits) for the next sign-in message. Each one is a row
/// in the control database, asked for without a token: limited per client address, and in total.
#[utoipa::path(get, path = "/auth/nonce", tag = "auth", operation_id = "get_sign_in_nonce", security(()),
    responses(
        (status = 200, description = "a single-use nonce for the sign-in message", body = Nonce),
        (status = 429, description = "too many nonces asked for from this address (`rate_limited`) or outstanding (`too_many_nonces`); see `Retry-After`", body = ErrorBody),
    ))]
pub async fn nonce(State(state): State<AppState>, ip: ClientIp) -> Result<Json<Nonce>, ApiError> {
    if let Some(limit) = &state.rate_limits.nonce_per_ip {
        limit.check(&crate::http::rate_limit::ip_bucket(ip.0, state.rate_limits.ipv6_prefix))?;
    }
    let nonce = hex::encode(rand::random::<[u8; 16]>());
    let ttl = state.sign_in.nonce_ttl;
    let expires = state.clock.now_ms() + ttl.as_millis() as i64;
    if !state.control.insert_nonce(&nonce, expires, state.sign_in.max_nonces).await? {
        return Err(ApiError::Overloaded {
            code: "too_many_nonces",
            message: "too many sign-ins are under way; try again shortly".into(),
            // Room is made as the outstanding nonces expire.
            retry_after_s: ttl.as_secs().clamp(1, 60),
        });
    }
    Ok(Json(Nonce { nonce, expires_at: flowork_common::timefmt::format_ms(expires) }))
}

/// `POST /auth/verify` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The EIP-4361 message, with a nonce from `GET /auth/nonce`.
    message: String,
    /// Its `personal_sign` signature: `0x` and 130 hexadecimal digits.
    signature: String,
}

/// The tokens of a sign-in (`POST /auth/verify`) or of a refresh.
#[derive(Debug, Serialize, ToSchema)]
pub struct Tokens {
    /// A JWT for `Authorization: Bearer`.
    access_token: String,
    /// `fwr_…`: exchanged at `POST /auth/refresh` for new tokens, once.
    refresh_token: String,
    #[schema(value_type = TokenType)]
    token_type: &'static str,
    /// Seconds the access token is valid for.
    expires_in: u64,
    /// The signed-in user: the wallet's lowercase `0x` address.
    user: String,
}

/// How the access token is sent.
#[derive(ToSchema)]
#[allow(dead_code)]
pub enum TokenType {
    Bearer,
}

/// `POST /auth/logout` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoggedOut {
    /// Always `true`: the refresh token's sign-in no longer works, whether or not it did before.
    revoked: bool,
}

/// Why a sign-in is refused (401), each with its own code.
const SIGN_IN_REFUSED: &str = "`malformed_message`, `invalid_address`, `origin_mismatch` (no `Origin` header, or not an \
    allowed GUI origin), `scheme_mismatch`, `domain_mismatch`, `uri_mismatch`, `chain_id_not_allowed`, \
    `issued_in_future`, `expired_message`, `message_not_yet_valid`, `bad_signature`, `nonce_reused`, \
    `nonce_expired`, `nonce_unknown`";

/// `POST /auth/verify`: checks a signed EIP-4361 message and answers with an access and a refresh token.
#[utoipa::path(post, path = "/auth/verify", tag = "auth", operation_id = "verify_sign_in", security(()), request_body = VerifyRequest,
    params(("Origin" = String, Header, description = "the GUI origin the message was signed for (browsers send it): one of \
        the gateway's `--allowed-origin`s, by default the gateway's own")),
    responses(
        (status = 200, description = "access and refresh tokens", body = Tokens),
        (status = 401, description = SIGN_IN_REFUSED, body = ErrorBody),
    ))]
pub async fn verify(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    JsonBody(request): JsonBody<VerifyRequest>,
) -> Result<Json<Tokens>, ApiError> {
    let origin = headers.get("origin").and_then(|v| v.to_str().ok());
    let now = state.clock.now_ms();
    let audit = |actor: &str, outcome: &str| {
        AuditEntry::new(actor, "auth.verify", outcome).ip(Some(ip.0.to_string())).target(origin.unwrap_or("-"))
    };
    let message = match check_sign_in(&request.message, &request.signature, origin, &state.sign_in, now) {
        Ok(message) => message,
        Err(refused) => {
            state.audit(audit("anonymous", refused.code).detail(refused.message.clone())).await;
            return Err(refusal(refused.code, refused.message));
        }
    };
    let user = message.address.to_ascii_lowercase();
    let nonce_code = match state.control.consume_nonce(&message.nonce).await? {
        NonceCheck::Consumed => None,
        NonceCheck::Reused => Some(("nonce_reused", "this nonce was already used; ask for a new one")),
        NonceCheck::Expired => Some(("nonce_expired", "this nonce has expired; ask for a new one")),
        NonceCheck::Unknown => Some(("nonce_unknown", "this nonce was not issued by this gateway")),
    };
    if let Some((code, text)) = nonce_code {
        state.audit(audit(&user, code)).await;
        return Err(refusal(code, text));
    }
    let tokens = issue_tokens(&state, &user, None).await?;
    state.audit(audit(&user, "ok")).await;
    Ok(Json(tokens))
}

/// Mints an access token and stores a new refresh token (a new family, or the given rotation target).
async fn issue_tokens(
    state: &AppState,
    user: &str,
    rotated: Option<(String, RefreshTokenRecord)>,
) -> Result<Tokens, ApiError> {
    let access = state.keys.mint(user, state.access_ttl, state.clock.now_ms())?;
    let refresh = match rotated {
        Some((token, _)) => token,
        None => {
            let token = secret::mint(secret::REFRESH_PREFIX);
            state.control.insert_refresh_token(new_refresh_record(state, &token, user)).await?;
            token
        }
    };
    Ok(Tokens {
        access_token: access,
        refresh_token: refresh,
        token_type: "Bearer",
        expires_in: state.access_ttl.as_secs(),
        user: user.to_string(),
    })
}

fn new_refresh_record(state: &AppState, token: &str, user: &str) -> RefreshTokenRecord {
    let now = state.clock.now_ms();
    RefreshTokenRecord {
        token_hash: refresh_hash(token),
        family_id: uuid::Uuid::new_v4().to_string(),
        user_id: user.to_string(),
        created_at: now,
        expires_at: now + state.refresh_ttl.as_millis() as i64,
    }
}

/// `POST /auth/refresh` and `POST /auth/logout` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The `refresh_token` of a sign-in or of the latest refresh.
    refresh_token: String,
}

/// `POST /auth/refresh`: exchanges a refresh token for new tokens; the old refresh token stops working, and
/// presenting it again revokes every token of its family.
#[utoipa::path(post, path = "/auth/refresh", tag = "auth", operation_id = "refresh_tokens", security(()), request_body = RefreshRequest,
    responses(
        (status = 200, description = "new access and refresh tokens", body = Tokens),
        (status = 401, description = "`invalid_refresh_token`, `refresh_reused` (every token of the sign-in is now revoked), `refresh_revoked`, `refresh_expired`", body = ErrorBody),
    ))]
pub async fn refresh(
    State(state): State<AppState>,
    ip: ClientIp,
    JsonBody(request): JsonBody<RefreshRequest>,
) -> Result<Json<Tokens>, ApiError> {
    let ip = Some(ip.0.to_string());
    if secret::shape(&request.refresh_token, secret::REFRESH_PREFIX) == TokenShape::Invalid {
        // A mistyped or forged token: refused before any database lookup.
        let code = "invalid_refresh_token";
        state.audit(AuditEntry::new("anonymous", "auth.refresh", code).ip(ip)).await;
        return Err(refusal(code, "this refresh token is not valid"));
    }
    let next_token = secret::mint(secret::REFRESH_PREFIX);
    let next = new_refresh_record(&state, &next_token, "");
    let check = state.control.rotate_refresh_token(&refresh_hash(&request.refresh_token), next.clone()).await?;
    let (code, message, actor) = match check {
        RefreshCheck::Rotated { user } => {
            let tokens = issue_tokens(&state, &user, Some((next_token, next))).await?;
            state.audit(AuditEntry::new(&user, "auth.refresh", "ok").ip(ip)).await;
            return Ok(Json(tokens));
        }
        RefreshCheck::Reused { user } => (
            "refresh_reused",
            "this refresh token was already used: every token of its sign-in is now revoked; sign in again",
            user,
        ),
        RefreshCheck::Revoked => {
            ("refresh_revoked", "this refresh token was revoked; sign in again", "anonymous".into())
        }
        RefreshCheck::Expired => {
            ("refresh_expired", "this refresh token has expired; sign in again", "anonymous".into())
        }
        RefreshCheck::Unknown => ("invalid_refresh_token", "this refresh token is not valid", "anonymous".into()),
    };
    state.audit(AuditEntry::new(actor, "auth.refresh", code).ip(ip)).await;
    Err(refusal(code, message))
}

/// `POST /auth/logout`: revokes the refresh token's whole family. Idempotent.
#[utoipa::path(post, path = "/auth/logout", tag = "auth", operation_id = "log_out", security(()), request_body = RefreshRequest,
    responses((status = 200, description = "the sign-in is revoked", body = LoggedOut)))]
pub async fn logout(
    State(state): State<AppState>,
    ip: ClientIp,
    JsonBody(request): JsonBody<RefreshRequest>,
) -> Result<Json<LoggedOut>, ApiError> {
    let user = state.control.revoke_refresh_family(&refresh_hash(&request.refresh_token)).await?;
    let actor = user.unwrap_or_else(|| "anonymous".into());
    state.audit(AuditEntry::new(actor, "auth.logout", "ok").ip(Some(ip.0.to_string()))).await;
    Ok(Json(LoggedOut { revoked: true }))
}
