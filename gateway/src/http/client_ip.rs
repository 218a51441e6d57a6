//! Which address a request comes from: the TCP peer, or — only when that peer is a trusted proxy — the address
//! the proxy reports in the one header the operator named (`--client-ip-header`).
//!
//! Trusting forwarding headers from anyone would let a client pick its own address and dodge per-IP limits and
//! CIDR rules, so they are ignored unless the peer is in `--trusted-proxy`. Even then only one header counts: a
//! proxy passes on whatever headers it does not set itself, so believing `CF-Connecting-IP` from an nginx that
//! never sets it would let any client behind that nginx name its own address.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use ipnet::IpNet;

use crate::http::error::ApiError;
use crate::state::AppState;

/// The client's address as far as the gateway can trust it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// The header a trusted proxy reports the client's address in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientIpHeader {
    /// `X-Forwarded-For`, as nginx, HAProxy, Caddy and most load balancers set it: its right-most address that is
    /// not itself a trusted proxy.
    #[default]
    XForwardedFor,
    /// `CF-Connecting-IP`, set by Cloudflare (and only by it): choose this only when the trusted proxies are
    /// Cloudflare's, which overwrite the header on every request.
    CfConnectingIp,
}

/// Whose forwarding headers are believed, and which one.
#[derive(Debug, Clone, Default)]
pub struct ProxyTrust {
    /// `--trusted-proxy`: peers whose header is believed.
    pub proxies: Vec<IpNet>,
    /// `--client-ip-header`: the one header read from them.
    pub header: ClientIpHeader,
}

impl ProxyTrust {
    fn trusts(&self, ip: &IpAddr) -> bool {
        self.proxies.iter().any(|net| net.contains(ip))
    }
}

/// Resolves the client address from the peer and the headers.
pub fn resolve(peer: IpAddr, headers: &HeaderMap, trust: &ProxyTrust) -> IpAddr {
    if !trust.trusts(&peer) {
        return peer;
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    match trust.header {
        ClientIpHeader::CfConnectingIp => {
            header("cf-connecting-ip").and_then(|v| v.trim().parse().ok()).unwrap_or(peer)
        }
        // X-Forwarded-For lists client, proxy1, proxy2...: walk from the right past our own trusted proxies; the
        // first untrusted address is the client (anything further left could be forged by the client).
        ClientIpHeader::XForwardedFor => {
            let Some(list) = header("x-forwarded-for") else { return peer };
            for hop in list.rsplit(',') {
                match hop.trim().parse::<IpAddr>() {
                    Ok(ip) if trust.trusts(&ip) => continue,
                    Ok(ip) => return ip,
                    Err(_) => break,
                }
            }
            peer
        }
    }
}

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip())
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        Ok(Self(resolve(peer, &parts.headers, &state.network.proxy)))
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

    fn trust(header: ClientIpHeader) -> ProxyTrust {
        ProxyTrust { proxies: vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()], header }
    }

    #[test]
    fn forwarding_headers_count_only_from_trusted_proxies() {
        let trusted = trust(ClientIpHeader::XForwardedFor);
        let spoof = headers(&[("x-forwarded-for", "1.2.3.4"), ("cf-connecting-ip", "5.6.7.8")]);
        let stranger: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(resolve(stranger, &spoof, &trusted), stranger, "an untrusted peer cannot claim another address");
        let cloudflare = trust(ClientIpHeader::CfConnectingIp);
        assert_eq!(resolve(stranger, &spoof, &cloudflare), stranger);

        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        let chain = headers(&[("x-forwarded-for", "9.9.9.9, 198.51.100.7, 10.0.0.5")]);
        assert_eq!(resolve(proxy, &chain, &trusted), "198.51.100.7".parse::<IpAddr>().unwrap());
        assert_eq!(resolve(proxy, &headers(&[("x-forwarded-for", "garbage")]), &trusted), proxy);
        assert_eq!(resolve(proxy, &HeaderMap::new(), &trusted), proxy);
    }

    #[test]
    fn cf_connecting_ip_counts_only_when_the_proxies_are_named_cloudflare() {
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        // A client behind an nginx that passes the header through unchanged picks its own address...
        let forged = headers(&[("cf-connecting-ip", "5.6.7.8"), ("x-forwarded-for", "198.51.100.7")]);
        assert_eq!(
            resolve(proxy, &forged, &trust(ClientIpHeader::XForwardedFor)),
            "198.51.100.7".parse::<IpAddr>().unwrap(),
            "CF-Connecting-IP is not read unless --client-ip-header says so"
        );
        // ...unless the operator says the proxies are Cloudflare's, which set it themselves.
        let cloudflare = trust(ClientIpHeader::CfConnectingIp);
        assert_eq!(resolve(proxy, &forged, &cloudflare), "5.6.7.8".parse::<IpAddr>().unwrap());
        assert_eq!(resolve(proxy, &headers(&[("x-forwarded-for", "198.51.100.7")]), &cloudflare), proxy);
        assert_eq!(resolve(proxy, &headers(&[("cf-connecting-ip", "garbage")]), &cloudflare), proxy);
    }
}
