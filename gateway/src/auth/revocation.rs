//! Tokens revoked before their expiry (`token revoke`): token ids denied until they would have expired, and per-user
//! watermarks (every token issued to a user up to a time). Held in memory, so the check on every request is two
//! hash lookups; the gateway reloads it from the store whenever the store's revocation generation moves, which
//! it polls once a second (`store::open::Stores::watch_revocations`).

use std::sync::RwLock;

use super::AuthError;
use super::jwt::AccessClaims;
use crate::store::tokens::Revocations;

/// The revocations a key ring checks tokens against.
#[derive(Default)]
pub struct RevocationList {
    current: RwLock<Option<Revocations>>,
}

/// The refusal of a revoked token.
fn revoked() -> AuthError {
    AuthError::Refused {
        code: "token_revoked",
        message: "this token was revoked by an operator; sign in again or ask for a new token".into(),
    }
}

impl RevocationList {
    /// The generation of the revocations held, if any were loaded.
    pub fn generation(&self) -> Option<i64> {
        self.current.read().ok()?.as_ref().map(|r| r.generation)
    }

    /// Replaces the revocations held with the store's current ones.
    pub fn replace(&self, revocations: Revocations) {
        if let Ok(mut slot) = self.current.write() {
            *slot = Some(revocations);
        }
    }

    /// Refuses a token whose id was revoked, or that was issued to its user at or before the user's watermark
    /// (`iat` has whole seconds, so a token issued within the second of a `--user` revocation is revoked too).
    pub fn check(&self, claims: &AccessClaims) -> Result<(), AuthError> {
        let Ok(current) = self.current.read() else { return Err(revoked()) };
        let Some(revocations) = current.as_ref() else { return Ok(()) };
        if revocations.jtis.contains(&claims.jti) {
            return Err(revoked());
        }
        match revocations.users.get(&claims.sub) {
            Some(through_ms) if claims.iat.saturating_mul(1_000) <= *through_ms => Err(revoked()),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(sub: &str, jti: &str, iat: i64) -> AccessClaims {
        AccessClaims {
            sub: sub.into(),
            iat,
            nbf: iat,
            exp: iat + 60,
            iss: "flowork".into(),
            aud: "flowork-api".into(),
            jti: jti.into(),
            scope: String::new(),
        }
    }

    #[test]
    fn refuses_revoked_ids_and_tokens_issued_up_to_a_users_watermark() {
        let list = RevocationList::default();
        assert!(list.check(&claims("alice", "j1", 100)).is_ok(), "nothing loaded yet");
        let mut revocations = Revocations { generation: 3, ..Revocations::default() };
        revocations.jtis.insert("j1".into());
        revocations.users.insert("bob".into(), 200_500);
        list.replace(revocations);
        assert_eq!(list.generation(), Some(3));
        assert!(list.check(&claims("alice", "j1", 100)).is_err());
        assert!(list.check(&claims("alice", "j2", 100)).is_ok());
        assert!(list.check(&claims("bob", "j3", 199)).is_err());
        assert!(list.check(&claims("bob", "j3", 200)).is_err(), "issued within the second of the revocation");
        assert!(list.check(&claims("bob", "j4", 201)).is_ok(), "issued after the revocation");
    }
}
