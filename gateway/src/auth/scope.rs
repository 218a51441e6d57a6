//! Admin capabilities: what an admin token may do, one scope per kind of action.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_scopes_only() {
        assert_eq!(parse_scopes("drain,engines:write").unwrap(), vec!["drain", "engines:write"]);
        assert_eq!(parse_scopes("audit:read drain").unwrap(), vec!["audit:read", "drain"]);
        assert!(parse_scopes("").is_err());
        assert!(parse_scopes("drain,root").is_err());
    }
}
