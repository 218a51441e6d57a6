//! Network rules: which addresses may reach the public API and the engine API (CIDR allow/deny lists), and
//! which peers are trusted proxies.

use std::net::IpAddr;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;

use crate::http::client_ip::{ClientIp, ProxyTrust};
use crate::http::error::ApiError;
use crate::state::AppState;

/// An allow list and a deny list. Deny wins; an empty allow list allows everyone not denied.
#[derive(Debug, Clone, Default)]
pub struct CidrRules {
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
}

impl CidrRules {
    pub fn permits(&self, ip: &IpAddr) -> bool {
        !self.deny.iter().any(|net| net.contains(ip))
            && (self.allow.is_empty() || self.allow.iter().any(|n| n.contains(ip)))
    }
}

/// All network rules of a gateway.
#[derive(Debug, Clone, Default)]
pub struct NetworkPolicy {
    /// Whose forwarding header is believed, and which header.
    pub proxy: ProxyTrust,
    /// For everything but `/internal/`.
    pub public: CidrRules,
    /// For the engine API under `/internal/`.
    pub internal: CidrRules,
}

/// Middleware: refuses requests from addresses the rules for their API do not permit (403 `ip_denied`).
pub async fn enforce_cidr_rules(State(state): State<AppState>, ip: ClientIp, request: Request, next: Next) -> Response {
    let rules =
        if request.uri().path().starts_with("/internal/") { &state.network.internal } else { &state.network.public };
    if !rules.permits(&ip.0) {
        return ApiError::forbidden("ip_denied", "requests from this address are not allowed").into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_wins_and_an_empty_allow_list_allows_the_rest() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let open = CidrRules::default();
        assert!(open.permits(&ip("203.0.113.1")));
        let rules = CidrRules {
            allow: vec!["10.0.0.0/8".parse().unwrap(), "2001:db8::/32".parse().unwrap()],
            deny: vec!["10.6.0.0/16".parse().unwrap()],
        };
        assert!(rules.permits(&ip("10.1.1.1")));
        assert!(rules.permits(&ip("2001:db8::1")));
        assert!(!rules.permits(&ip("10.6.1.1")));
        assert!(!rules.permits(&ip("192.168.1.1")));
        assert!(!rules.permits(&ip("2001:db9::1")));
    }
}
