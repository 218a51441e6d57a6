//! Who is calling: users by access JWT, engines by engine token.

pub mod api_key;
pub mod engine_cache;
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

impl AuthError {
    /// A token jsonwebtoken refused, in words: its own text (`Base64 error: Invalid symbol 46`) is for the log.
    pub fn from_jwt(error: jsonwebtoken::errors::Error) -> Self {
        use jsonwebtoken::errors::ErrorKind;
        tracing::debug!(%error, "token refused");
        let reason = match error.kind() {
            ErrorKind::ExpiredSignature => return Self::ExpiredToken,
            ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
                "it is not a well-formed JWT (three base64url parts: header, claims, signature)"
            }
            ErrorKind::InvalidSignature => "its signature does not match",
            ErrorKind::ImmatureSignature => "it is not valid yet",
            ErrorKind::InvalidAudience => "it is not meant for this endpoint",
            ErrorKind::InvalidIssuer | ErrorKind::InvalidSubject => "it was not issued by this service",
            ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidClaimFormat(_) => {
                "its claims are missing or malformed"
            }
            ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm | ErrorKind::InvalidAlgorithmName => {
                "it is signed with an unexpected algorithm"
            }
            _ => "it could not be verified",
        };
        Self::InvalidToken(reason.into())
    }
}
