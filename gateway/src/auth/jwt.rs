//! User access tokens: HS256 JWTs signed with keys kept in `<data-dir>/keys/` (0600), selected by `kid`.
//!
//! The newest key signs; every key on disk verifies. A token with an unknown `kid` makes the ring re-read the
//! folder (at most once a second), so a key added by another process (`keys rotate`, a second gateway) is
//! picked up without a restart.

use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::AuthError;
use super::revocation::RevocationList;
use super::token_cache::{self, TokenCache};
use crate::secure_fs::{create_private_dir, write_private_file_new};

const ISSUER: &str = "flowork";
/// The audience of user access tokens.
pub const USER_AUDIENCE: &str = "flowork-api";
/// The audience of admin tokens: an admin token is not a user token, nor the other way round.
pub const ADMIN_AUDIENCE: &str = "flowork-admin";
/// The longest lifetime any token may have; a retired key is deleted once every token it signed has expired.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// The longest lifetime of an admin token, checked when it is minted and again when it is presented (a token
/// signed with a longer `exp - iat` is refused).
pub const MAX_ADMIN_TTL: Duration = Duration::from_secs(15 * 60);
const KEY_PREFIX: &str = "jwt-";
const KEY_SUFFIX: &str = ".key";

/// What a token says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The user id (or `admin` for admin tokens).
    pub sub: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub iss: String,
    pub aud: String,
    /// A unique id, recorded in the audit log for admin calls.
    pub jti: String,
    /// Space-separated capabilities of an admin token.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
}

struct SigningKey {
    kid: String,
    secret: Vec<u8>,
}

/// The signing keys of one data directory.
pub struct KeyRing {
    /// The key folder; `None` when the keys live in a shared store (PostgreSQL) and are pushed in by `replace`.
    dir: Option<PathBuf>,
    keys: RwLock<Vec<SigningKey>>,
    last_reload: RwLock<Instant>,
    verified: TokenCache,
    /// Tokens revoked before their expiry (`token revoke`), kept current by the gateway.
    revoked: RevocationList,
}

fn key_error(e: impl std::fmt::Display) -> AuthError {
    AuthError::Keys(e.to_string())
}

fn read_keys(dir: &Path) -> Result<Vec<SigningKey>, AuthError> {
    let mut keys = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(key_error)? {
        let entry = entry.map_err(key_error)?;
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(kid) = name.strip_prefix(KEY_PREFIX).and_then(|n| n.strip_suffix(KEY_SUFFIX)) else {
            continue;
        };
        let text = std::fs::read_to_string(entry.path()).map_err(key_error)?;
        let secret = hex::decode(text.trim()).map_err(|e| key_error(format!("{name}: {e}")))?;
        if secret.len() < 32 {
            return Err(key_error(format!("{name}: a signing key must be at least 32 bytes")));
        }
        keys.push(SigningKey { kid: kid.to_string(), secret });
    }
    // Kids start with a zero-padded creation time, so name order is age order; the newest signs.
    keys.sort_by(|a, b| a.kid.cmp(&b.kid));
    Ok(keys)
}

/// The signing keys kept under `<data_dir>/keys`, as `(kid, secret)` (for moving them to a shared store).
pub fn key_files(data_dir: &Path) -> Result<Vec<(String, Vec<u8>)>, AuthError> {
    let dir = data_dir.join("keys");
    if !dir.exists() {
        return Ok(Vec::new());
    }
    Ok(read_keys(&dir)?.into_iter().map(|k| (k.kid, k.secret)).collect())
}

impl KeyRing {
    /// Loads the keys under `<data_dir>/keys`, creating the first one if there is none.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, AuthError> {
        let dir = data_dir.join("keys");
        create_private_dir(&dir).map_err(key_error)?;
        let mut keys = read_keys(&dir)?;
        if keys.is_empty() {
            add_key(&dir, None)?;
            keys = read_keys(&dir)?;
        }
        Ok(Self {
            dir: Some(dir),
            keys: RwLock::new(keys),
            last_reload: RwLock::new(Instant::now()),
            verified: TokenCache::default(),
            revoked: RevocationList::default(),
        })
    }

    /// Adds a new newest key (the old ones keep verifying the tokens they signed); returns its kid.
    /// A ring of keys kept in a shared store (`(kid, secret)` pairs); the caller keeps it current with `replace`.
    pub fn shared(keys: Vec<(String, Vec<u8>)>) -> Result<Self, AuthError> {
        let ring = Self {
            dir: None,
            keys: RwLock::new(Vec::new()),
            last_reload: RwLock::new(Instant::now()),
            verified: TokenCache::default(),
            revoked: RevocationList::default(),
        };
        ring.replace(keys)?;
        Ok(ring)
    }

    /// Replaces the keys of a shared ring with the store's current ones.
    pub fn replace(&self, keys: Vec<(String, Vec<u8>)>) -> Result<(), AuthError> {
        let mut keys: Vec<SigningKey> = keys.into_iter().map(|(kid, secret)| SigningKey { kid, secret }).collect();
        if let Some(short) = keys.iter().find(|k| k.secret.len() < 32) {
            return Err(key_error(format!("{}: a signing key must be at least 32 bytes", short.kid)));
        }
        keys.sort_by(|a, b| a.kid.cmp(&b.kid));
        if let Ok(mut slot) = self.keys.write() {
            *slot = keys;
        }
        Ok(())
    }

    /// The newest key id, if any.
    pub fn newest_kid(&self) -> Option<String> {
        self.keys.read().ok()?.last().map(|k| k.kid.clone())
    }

    pub fn rotate(&self) -> Result<String, AuthError> {
        let Some(dir) = &self.dir else {
            return Err(key_error("the keys of a shared store are rotated through the store"));
        };
        self.reload()?;
        let newest = self.keys.read().map_err(key_error)?.last().map(|k| k.kid.clone());
        let kid = add_key(dir, newest.as_deref())?;
        self.reload()?;
        Ok(kid)
    }

    fn reload(&self) -> Result<(), AuthError> {
        // A shared ring is refreshed from its store by the gateway, not here.
        let Some(dir) = &self.dir else { return Ok(()) };
        let keys = read_keys(dir)?;
        if let Ok(mut slot) = self.keys.write() {
            *slot = keys;
        }
        if let Ok(mut at) = self.last_reload.write() {
            *at = Instant::now();
        }
        Ok(())
    }

    /// Signs a user access token for `user`, valid for `ttl`.
    pub fn mint(&self, user: &str, ttl: Duration, now_ms: i64) -> Result<String, AuthError> {
        self.sign(user, USER_AUDIENCE, "", ttl, now_ms)
    }

    /// Signs an admin token carrying `scopes`, valid for `ttl` (at most `MAX_ADMIN_TTL`).
    pub fn mint_admin(&self, scopes: &[String], ttl: Duration, now_ms: i64) -> Result<String, AuthError> {
        if ttl > MAX_ADMIN_TTL {
            return Err(key_error("an admin token may live at most 15 minutes"));
        }
        self.sign("admin", ADMIN_AUDIENCE, &scopes.join(" "), ttl, now_ms)
    }

    fn sign(&self, sub: &str, aud: &str, scope: &str, ttl: Duration, now_ms: i64) -> Result<String, AuthError> {
        Ok(self.sign_claims(sub, aud, scope, ttl, now_ms)?.0)
    }

    /// Signs a user access token and answers its claims too (`token mint` records its id in the audit log).
    pub fn mint_with_claims(
        &self,
        user: &str,
        ttl: Duration,
        now_ms: i64,
    ) -> Result<(String, AccessClaims), AuthError> {
        self.sign_claims(user, USER_AUDIENCE, "", ttl, now_ms)
    }

    fn sign_claims(
        &self,
        sub: &str,
        aud: &str,
        scope: &str,
        ttl: Duration,
        now_ms: i64,
    ) -> Result<(String, AccessClaims), AuthError> {
        if ttl > MAX_TOKEN_TTL {
            return Err(key_error(format!("a token may live at most {}", humantime::format_duration(MAX_TOKEN_TTL))));
        }
        let keys = self.keys.read().map_err(key_error)?;
        let key = keys.last().ok_or_else(|| key_error("no signing key"))?;
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(key.kid.clone());
        let iat = now_ms / 1000;
        let claims = AccessClaims {
            sub: sub.to_string(),
            iat,
            nbf: iat,
            exp: iat.saturating_add(ttl.as_secs() as i64),
            iss: ISSUER.to_string(),
            aud: aud.to_string(),
            jti: uuid::Uuid::new_v4().simple().to_string(),
            scope: scope.to_string(),
        };
        let token =
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&key.secret)).map_err(key_error)?;
        Ok((token, claims))
    }

    /// Deletes retired keys whose every token has expired: a key is retired when a newer key exists, and the
    /// newer key's creation time is in its kid. Returns how many were deleted.
    pub fn prune(&self, now_ms: i64) -> Result<usize, AuthError> {
        let Some(dir) = self.dir.clone() else { return Ok(0) };
        let kids: Vec<String> = self.keys.read().map_err(key_error)?.iter().map(|k| k.kid.clone()).collect();
        let mut pruned = 0;
        for pair in kids.windows(2) {
            let successor_created: i64 = pair[1].split('-').next().and_then(|t| t.parse().ok()).unwrap_or(i64::MAX);
            if successor_created.saturating_add(MAX_TOKEN_TTL.as_millis() as i64) < now_ms {
                std::fs::remove_file(dir.join(format!("{KEY_PREFIX}{}{KEY_SUFFIX}", pair[0]))).map_err(key_error)?;
                pruned += 1;
            }
        }
        self.reload()?;
        Ok(pruned)
    }

    fn has_key(&self, kid: &str) -> bool {
        self.keys.read().map(|keys| keys.iter().any(|k| k.kid == kid)).unwrap_or(false)
    }

    fn secret_for(&self, kid: &str) -> Option<Vec<u8>> {
        let keys = self.keys.read().ok()?;
        keys.iter().find(|k| k.kid == kid).map(|k| k.secret.clone())
    }

    /// Checks a user access token; returns its claims.
    pub fn verify(&self, token: &str) -> Result<AccessClaims, AuthError> {
        self.verify_for(token, USER_AUDIENCE)
    }

    /// Checks signature (HS256 only, by `kid`), issuer, audience, `exp`, `nbf`, `jti`, the admin lifetime cap and
    /// the revocation list; returns the claims.
    pub fn verify_for(&self, token: &str, audience: &str) -> Result<AccessClaims, AuthError> {
        self.verify_at(token, audience, flowork_common::clock::system_now_ms() / 1_000)
    }

    /// `verify_for` at `now_s` (Unix seconds).
    pub fn verify_at(&self, token: &str, audience: &str, now_s: i64) -> Result<AccessClaims, AuthError> {
        let claims = self.verify_signed_at(token, audience, now_s)?;
        self.revoked.check(&claims)?;
        Ok(claims)
    }

    /// The revocation list this ring checks tokens against.
    pub fn revocations(&self) -> &RevocationList {
        &self.revoked
    }

    fn verify_signed_at(&self, token: &str, audience: &str, now_s: i64) -> Result<AccessClaims, AuthError> {
        let digest = token_cache::digest(token);
        if let Some(claims) = self.verified.get(&digest, audience, now_s, |kid| self.has_key(kid)) {
            return Ok(claims);
        }
        let header = jsonwebtoken::decode_header(token).map_err(AuthError::from_jwt)?;
        if header.alg != Algorithm::HS256 {
            return Err(AuthError::InvalidToken("unexpected signing algorithm".into()));
        }
        let kid = header.kid.ok_or_else(|| AuthError::InvalidToken("no key id".into()))?;
        let secret = match self.secret_for(&kid) {
            Some(secret) => secret,
            None => {
                let stale = self.last_reload.read().map(|t| t.elapsed() > Duration::from_secs(1)).unwrap_or(true);
                if stale {
                    self.reload()?;
                }
                self.secret_for(&kid).ok_or_else(|| AuthError::InvalidToken("unknown signing key".into()))?
            }
        };
        let mut validation = Validation::new(Algorithm::HS256);
        // The times are checked below against `now_s`: the library's own check takes the system clock and lets
        // a token through in the second its `exp` names (RFC 7519 4.1.4: only *before* `exp`).
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "sub", "iss", "aud"]);
        let claims = jsonwebtoken::decode::<AccessClaims>(token, &DecodingKey::from_secret(&secret), &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::ExpiredToken,
                _ => AuthError::from_jwt(e),
            })?;
        if claims.exp <= now_s {
            return Err(AuthError::ExpiredToken);
        }
        if claims.nbf > now_s {
            return Err(AuthError::InvalidToken("the token is not valid yet".into()));
        }
        if claims.jti.is_empty() {
            return Err(AuthError::InvalidToken("no token id".into()));
        }
        if audience == ADMIN_AUDIENCE && claims.exp.saturating_sub(claims.iat) > MAX_ADMIN_TTL.as_secs() as i64 {
            return Err(AuthError::InvalidToken("an admin token may live at most 15 minutes".into()));
        }
        self.verified.put(digest, audience, &kid, &claims);
        Ok(claims)
    }
}

/// Writes a new random key file; returns its kid. Its time part is later than `newest`'s, so kids sort in the
/// order keys were made even when two are made within one millisecond (the last kid signs).
/// A new random key whose id sorts after `newest` (ids are creation times, strictly increasing).
pub fn new_key(newest: Option<&str>) -> (String, [u8; 32]) {
    let secret: [u8; 32] = rand::random();
    let suffix: [u8; 4] = rand::random();
    let after = newest.and_then(|kid| kid.split('-').next()).and_then(|t| t.parse::<i64>().ok()).unwrap_or(0);
    let created = flowork_common::clock::system_now_ms().max(after + 1);
    (format!("{created:013}-{}", hex::encode(suffix)), secret)
}

fn add_key(dir: &Path, newest: Option<&str>) -> Result<String, AuthError> {
    let (kid, secret) = new_key(newest);
    write_private_file_new(&dir.join(format!("{KEY_PREFIX}{kid}{KEY_SUFFIX}")), hex::encode(secret).as_bytes())
        .map_err(key_error)?;
    Ok(kid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowork_common::clock::system_now_ms;

    #[test]
    fn mints_and_verifies_and_rejects_tampering_and_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::load_or_create(dir.path()).unwrap();
        let token = ring.mint("alice", Duration::from_secs(60), system_now_ms()).unwrap();
        assert_eq!(ring.verify(&token).unwrap().sub, "alice");

        let mut tampered = token.clone();
        tampered.pop();
        tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert!(matches!(ring.verify(&tampered), Err(AuthError::InvalidToken(_))));

        let old = ring.mint("alice", Duration::from_secs(1), system_now_ms() - 10_000).unwrap();
        assert!(matches!(ring.verify(&old), Err(AuthError::ExpiredToken)));

        let other = KeyRing::load_or_create(tempfile::tempdir().unwrap().path()).unwrap();
        let foreign = other.mint("alice", Duration::from_secs(60), system_now_ms()).unwrap();
        assert!(ring.verify(&foreign).is_err(), "a token from another data directory must not verify");
    }

    #[test]
    fn refuses_alg_none_algorithm_confusion_and_the_wrong_audience() {
        use base64::Engine as _;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::load_or_create(dir.path()).unwrap();
        let token = ring.mint("alice", Duration::from_secs(60), system_now_ms()).unwrap();
        let payload = token.split('.').nth(1).unwrap();
        let kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();
        for alg in ["none", "None", "HS512", "RS256", "ES256"] {
            let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","typ":"JWT","kid":"{kid}"}}"#));
            for signature in ["", "AAAA"] {
                let forged = format!("{header}.{payload}.{signature}");
                assert!(ring.verify(&forged).is_err(), "alg {alg} must be refused");
            }
        }
        let admin = ring.mint_admin(&["drain".to_string()], Duration::from_secs(60), system_now_ms()).unwrap();
        assert!(ring.verify(&admin).is_err(), "an admin token is not a user token");
        assert!(ring.verify_for(&token, ADMIN_AUDIENCE).is_err(), "a user token is not an admin token");
        assert_eq!(ring.verify_for(&admin, ADMIN_AUDIENCE).unwrap().scope, "drain");
        assert!(ring.mint("alice", MAX_TOKEN_TTL + Duration::from_secs(1), system_now_ms()).is_err());
    }

    #[test]
    fn a_token_is_refused_from_the_second_its_exp_names() {
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::load_or_create(dir.path()).unwrap();
        let now_ms = 1_800_000_000_000;
        let token = ring.mint("alice", Duration::from_secs(60), now_ms).unwrap();
        let exp = now_ms / 1_000 + 60;
        // A fresh check at `exp`, then one served from the cache of verified tokens.
        assert!(matches!(ring.verify_at(&token, USER_AUDIENCE, exp), Err(AuthError::ExpiredToken)));
        assert_eq!(ring.verify_at(&token, USER_AUDIENCE, exp - 1).unwrap().sub, "alice");
        assert!(matches!(ring.verify_at(&token, USER_AUDIENCE, exp), Err(AuthError::ExpiredToken)));
        assert!(matches!(ring.verify_at(&token, USER_AUDIENCE, now_ms / 1_000 - 1), Err(AuthError::InvalidToken(_))));
    }

    #[test]
    fn an_admin_token_signed_for_longer_than_the_cap_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::load_or_create(dir.path()).unwrap();
        let scopes = ["drain".to_string()];
        assert!(ring.mint_admin(&scopes, MAX_ADMIN_TTL + Duration::from_secs(1), system_now_ms()).is_err());
        let capped = ring.mint_admin(&scopes, MAX_ADMIN_TTL, system_now_ms()).unwrap();
        assert!(ring.verify_for(&capped, ADMIN_AUDIENCE).is_ok());
        // Signed with a valid key but a longer lifetime, as a bug or a leaked key could: refused when presented.
        let long = ring.sign("admin", ADMIN_AUDIENCE, "drain", Duration::from_secs(3_600), system_now_ms()).unwrap();
        let refused = ring.verify_for(&long, ADMIN_AUDIENCE).unwrap_err();
        assert!(matches!(&refused, AuthError::InvalidToken(m) if m.contains("15 minutes")), "{refused}");
        // User tokens may live longer.
        let user = ring.mint("alice", Duration::from_secs(3_600), system_now_ms()).unwrap();
        assert!(ring.verify(&user).is_ok());
    }

    #[test]
    fn revoked_tokens_are_refused_even_once_cached() {
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::load_or_create(dir.path()).unwrap();
        let (token, claims) = ring.mint_with_claims("alice", Duration::from_secs(60), system_now_ms()).unwrap();
        let other = ring.mint("alice", Duration::from_secs(60), system_now_ms()).unwrap();
        assert!(ring.verify(&token).is_ok());
        let mut revocations = crate::store::tokens::Revocations { generation: 1, ..Default::default() };
        revocations.jtis.insert(claims.jti);
        ring.revocations().replace(revocations);
        let refused = ring.verify(&token).unwrap_err();
        assert!(matches!(refused, AuthError::Refused { code: "token_revoked", .. }), "{refused}");
        assert!(ring.verify(&other).is_ok(), "another token of the same user");
    }

    #[test]
    fn not_yet_valid_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::load_or_create(dir.path()).unwrap();
        let future = ring.mint("alice", Duration::from_secs(600), system_now_ms() + 120_000).unwrap();
        assert!(matches!(ring.verify(&future), Err(AuthError::InvalidToken(_))));
    }

    #[test]
    fn retired_keys_are_pruned_once_their_tokens_expired() {
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::load_or_create(dir.path()).unwrap();
        let old = ring.mint("bob", Duration::from_secs(60), system_now_ms()).unwrap();
        ring.rotate().unwrap();
        assert_eq!(ring.prune(system_now_ms()).unwrap(), 0, "the old key may still have live tokens");
        assert!(ring.verify(&old).is_ok());
        let later = system_now_ms() + MAX_TOKEN_TTL.as_millis() as i64 + 1_000;
        assert_eq!(ring.prune(later).unwrap(), 1);
        assert!(ring.verify(&old).is_err());
        assert!(ring.verify(&ring.mint("bob", Duration::from_secs(60), system_now_ms()).unwrap()).is_ok());
    }

    #[test]
    fn rotation_keeps_old_tokens_valid_and_signs_with_the_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::load_or_create(dir.path()).unwrap();
        let before = ring.mint("bob", Duration::from_secs(60), system_now_ms()).unwrap();
        let kid = ring.rotate().unwrap();
        let after = ring.mint("bob", Duration::from_secs(60), system_now_ms()).unwrap();
        assert_eq!(jsonwebtoken::decode_header(&after).unwrap().kid.as_deref(), Some(kid.as_str()));
        assert!(ring.verify(&before).is_ok());
        assert!(ring.verify(&after).is_ok());
    }

    #[cfg(unix)]
    #[test]
    fn key_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        KeyRing::load_or_create(dir.path()).unwrap();
        for entry in std::fs::read_dir(dir.path().join("keys")).unwrap() {
            let mode = entry.unwrap().metadata().unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }
}
