//! Capabilities: what an admin token may do, and what a user's API key (`fwk_`) may do, one scope per kind of
//! action. A user's access JWT carries no scopes: it may do everything the user may.

use axum::http::Method;

/// The scopes an admin token can carry.
pub const KNOWN_SCOPES: &[&str] = &["drain", "engines:read", "engines:write", "audit:read"];

/// Parses `drain,engines:write` (commas or spaces) into known scopes.
pub fn parse_scopes(text: &str) -> Result<Vec<String>, String> {
    let scopes: Vec<String> =
        text.split([',', ' ']).map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect();
    if scopes.is_empty() {
        return Err(format!("give at least one scope: {}", KNOWN_SCOPES.join(", ")));
    }
    if let Some(unknown) = scopes.iter().find(|s| !KNOWN_SCOPES.contains(&s.as_str())) {
        return Err(format!("unknown scope {unknown:?}; known: {}", KNOWN_SCOPES.join(", ")));
    }
    Ok(scopes)
}

/// The scopes an API key can carry: `<resource>:read` for GET on a resource's routes, `<resource>:write` for
/// every other method on them.
pub const KEY_SCOPES: &[&str] =
    &["jobs:read", "jobs:write", "schedules:read", "schedules:write", "engines:read", "engines:write"];

/// The resources API keys may reach: the first segment of the path.
const KEY_RESOURCES: &[&str] = &["jobs", "schedules", "engines"];

/// The scope an API key needs for `method` on `path`; `None` for routes no key may use (`/auth/keys` itself,
/// anything not listed): a key reaches only what a scope names.
pub fn key_scope_for(method: &Method, path: &str) -> Option<String> {
    let resource = path.trim_start_matches('/').split('/').next()?;
    if !KEY_RESOURCES.contains(&resource) {
        return None;
    }
    let access = if method == Method::GET || method == Method::HEAD { "read" } else { "write" };
    Some(format!("{resource}:{access}"))
}

/// Parses the scopes of an API key request: known key scopes, each once, at least one.
pub fn parse_key_scopes(scopes: &[String]) -> Result<Vec<String>, String> {
    if scopes.is_empty() {
        return Err(format!("give at least one scope: {}", KEY_SCOPES.join(", ")));
    }
    let mut parsed: Vec<String> = Vec::new();
    for scope in scopes {
        if !KEY_SCOPES.contains(&scope.as_str()) {
            return Err(format!("unknown scope {scope:?}; known: {}", KEY_SCOPES.join(", ")));
        }
        if !parsed.contains(scope) {
            parsed.push(scope.clone());
        }
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_scope_names_a_resource_and_an_access() {
        for resource in KEY_RESOURCES {
            for (method, access) in [(Method::GET, "read"), (Method::POST, "write"), (Method::DELETE, "write")] {
                let scope = key_scope_for(&method, &format!("/{resource}/x")).unwrap();
                assert_eq!(scope, format!("{resource}:{access}"));
                assert!(KEY_SCOPES.contains(&scope.as_str()), "{scope}");
            }
        }
        assert_eq!(key_scope_for(&Method::PUT, "/jobs").as_deref(), Some("jobs:write"));
        assert_eq!(key_scope_for(&Method::POST, "/auth/keys"), None, "a key does not make keys");
        assert_eq!(key_scope_for(&Method::GET, "/admin/engines"), None);
        assert_eq!(key_scope_for(&Method::GET, "/jobsx"), None);
        assert_eq!(parse_key_scopes(&["jobs:read".into(), "jobs:read".into()]).unwrap(), vec!["jobs:read"]);
        assert!(parse_key_scopes(&[]).is_err());
        assert!(parse_key_scopes(&["drain".into()]).is_err());
    }

    #[test]
    fn parses_known_scopes_only() {
        assert_eq!(parse_scopes("drain,engines:write").unwrap(), vec!["drain", "engines:write"]);
        assert_eq!(parse_scopes("audit:read drain").unwrap(), vec!["audit:read", "drain"]);
        assert!(parse_scopes("").is_err());
        assert!(parse_scopes("drain,root").is_err());
    }
}
