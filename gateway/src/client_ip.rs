//! Which address a request comes from: the TCP peer, or — only when that peer is a trusted proxy — the address
//! the proxy reports in `CF-Connecting-IP` or `X-Forwarded-For`.
//!
//! Trusting forwarding headers from anyone would let a client pick its own address and dodge per-IP limits and
//! CIDR rules, so they are ignored unless the peer is in `--trusted-proxy`.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use ipnet::IpNet;

use crate::error::ApiError;
use crate::server::AppState;

/// The client's address as far as the gateway can trust it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// Resolves the client address from the peer and the headers.
pub fn resolve(peer: IpAddr, headers: &HeaderMap, trusted_proxies: &[IpNet]) -> IpAddr {
    if !trusted_proxies.iter().any(|net| net.contains(&peer)) {
        return peer;
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(ip) = header("cf-connecting-ip").and_then(|v| v.trim().parse().ok()) {
        return ip;
    }
    // X-Forwarded-For lists client, proxy1, proxy2...: walk from the right past our own trusted proxies; the
    // first untrusted address is the client (anything further left could be forged by the client).
    if let Some(list) = header("x-forwarded-for") {
        for hop in list.rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) if trusted_proxies.iter().any(|net| net.contains(&ip)) => continue,
                Ok(ip) => return ip,
                Err(_) => break,
            }
        }
    }
    peer
}

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip())
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        Ok(Self(resolve(peer, &parts.headers, &state.network.trusted_proxies)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn forwarding_headers_count_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        let spoof = headers(&[("x-forwarded-for", "1.2.3.4"), ("cf-connecting-ip", "5.6.7.8")]);
        let stranger: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(resolve(stranger, &spoof, &trusted), stranger, "an untrusted peer cannot claim another address");

        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(
            resolve(proxy, &headers(&[("cf-connecting-ip", "5.6.7.8")]), &trusted),
            "5.6.7.8".parse::<IpAddr>().unwrap()
        );
        let chain = headers(&[("x-forwarded-for", "9.9.9.9, 198.51.100.7, 10.0.0.5")]);
        assert_eq!(resolve(proxy, &chain, &trusted), "198.51.100.7".parse::<IpAddr>().unwrap());
        assert_eq!(resolve(proxy, &headers(&[("x-forwarded-for", "garbage")]), &trusted), proxy);
        assert_eq!(resolve(proxy, &HeaderMap::new(), &trusted), proxy);
    }
}
