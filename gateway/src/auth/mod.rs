//! Who is calling: users by access JWT, engines by engine token.

pub mod api_key;
pub mod engine_token;
pub mod extract;
pub mod jwt;
pub mod revocation;
pub mod scope;
pub mod signin;
pub mod token_cache;

use thiserror::Error;

use crate::store::StoreError;

/// Why a caller was not let in. Each variant has its own machine-readable code (see `error.rs`).
#[derive(Debug, Error)]
pub enum AuthError {
    #[error("this endpoint needs an `Authorization: Bearer <access token>` header")]
    MissingToken,
    #[error("the Authorization header must be `Bearer <access token>`")]
    MalformedAuthorization,
    #[error("the access token has expired; sign in again or refresh it")]
    ExpiredToken,
    #[error("the access token is not valid: {0}")]
    InvalidToken(String),
    #[error("engine calls need an `X-Engine-Token` header")]
    MissingEngineToken,
    #[error("the engine token is unknown or revoked")]
    InvalidEngineToken,
    /// A sign-in or refresh refused for a specific reason (`nonce_reused`, `domain_mismatch`, ...).
    #[error("{message}")]
    Refused { code: &'static str, message: String },
    #[error("signing keys: {0}")]
    Keys(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}
