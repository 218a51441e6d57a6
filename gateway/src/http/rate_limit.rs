//! Token-bucket rate limits (governor): one bucket per client address and one per user.
//!
//! An IPv4 client has one address, but an IPv6 client is handed a whole /64 (or more) and can pick a new address
//! for every request, so IPv6 addresses share a bucket per network prefix (`--rate-ip-v6-prefix`, default /64).
//!
//! Over the limit the answer is 429 with `Retry-After` and the IETF `RateLimit-Policy` / `RateLimit` headers
//! (draft-ietf-httpapi-ratelimit-headers). Buckets live in this process's memory: two gateways each allow the
//! full rate.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{Quota, RateLimiter};
use ipnet::Ipv6Net;

use crate::http::client_ip::ClientIp;
use crate::http::error::ApiError;
use crate::state::AppState;

/// A rate like `100/s`, `6000/m` or `100` (per second); `0` switches the limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (count, unit) = text.split_once('/').unwrap_or((text, "s"));
        let count: u32 = count.trim().parse().map_err(|_| format!("{text:?} is not a rate like 100/s"))?;
        let per = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            other => return Err(format!("unknown rate unit {other:?}: use s, m or h")),
        };
        Ok(Self { count, per })
    }
}

type Keyed<K> = RateLimiter<K, governor::state::keyed::DefaultKeyedStateStore<K>, DefaultClock>;

/// One keyed bucket set with its policy name for the headers.
pub struct Limit<K: Hash + Eq + Clone> {
    name: &'static str,
    rate: Rate,
    limiter: Keyed<K>,
}

impl<K: Hash + Eq + Clone> Limit<K> {
    /// A limit, or `None` when the rate is 0 (off). The burst equals one period's worth of requests.
    pub fn new(name: &'static str, rate: Rate) -> Option<Self> {
        let count = NonZeroU32::new(rate.count)?;
        let quota = Quota::with_period(rate.per / count.get())?.allow_burst(count);
        Some(Self { name, rate, limiter: RateLimiter::keyed(quota) })
    }

    /// Takes one token for `key`, or says when to come back.
    pub fn check(&self, key: &K) -> Result<(), ApiError> {
        self.limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::RateLimited {
                policy: self.name,
                limit: self.rate.count,
                window_s: self.rate.per.as_secs().max(1),
                retry_after_s: wait.as_secs_f64().ceil().max(1.0) as u64,
            }
        })
    }

    /// Forgets idle buckets so memory does not grow with every address ever seen.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// The limits of a gateway.
pub struct RateLimits {
    /// Keyed by [`ip_bucket`], not by the bare address.
    pub per_ip: Option<Limit<IpAddr>>,
    /// The prefix length IPv6 clients are bucketed by (`--rate-ip-v6-prefix`).
    pub ipv6_prefix: u8,
    pub per_user: Option<Limit<String>>,
    /// Sign-in nonces per client address: each one is a row in the control database, asked for without a token.
    pub nonce_per_ip: Option<Limit<IpAddr>>,
}

/// The bucket of a client address: the address itself for IPv4 (and IPv4-mapped IPv6), its network of
/// `ipv6_prefix` bits for IPv6.
pub fn ip_bucket(ip: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Net::new_assert(v6, ipv6_prefix.min(128)).trunc().addr()),
        },
    }
}

/// Middleware: the per-address limit, before any other work is done for the request.
pub async fn limit_per_ip(State(state): State<AppState>, ip: ClientIp, request: Request, next: Next) -> Response {
    let limits = &state.rate_limits;
    if let Some(limit) = &limits.per_ip
        && let Err(refused) = limit.check(&ip_bucket(ip.0, limits.ipv6_prefix))
    {
        return refused.into_response();
    }
    next.run(request).await
}

/// The IETF headers of a refusal.
pub fn headers(policy: &str, limit: u32, window_s: u64, retry_after_s: u64) -> [(header::HeaderName, HeaderValue); 2] {
    let policy_value = format!("\"{policy}\";q={limit};w={window_s}");
    let state_value = format!("\"{policy}\";r=0;t={retry_after_s}");
    [
        (
            header::HeaderName::from_static("ratelimit-policy"),
            HeaderValue::from_str(&policy_value).unwrap_or(HeaderValue::from_static("")),
        ),
        (
            header::HeaderName::from_static("ratelimit"),
            HeaderValue::from_str(&state_value).unwrap_or(HeaderValue::from_static("")),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        assert_eq!("100/s".parse::<Rate>().unwrap(), Rate { count: 100, per: Duration::from_secs(1) });
        assert_eq!("60/m".parse::<Rate>().unwrap().per, Duration::from_secs(60));
        assert_eq!("5".parse::<Rate>().unwrap().count, 5);
        assert!("fast".parse::<Rate>().is_err());
        assert!("5/d".parse::<Rate>().is_err());
    }

    #[test]
    fn a_bucket_refuses_past_its_burst_with_a_wait() {
        let limit = Limit::new("per-user", Rate { count: 3, per: Duration::from_secs(60) }).unwrap();
        let key = "alice".to_string();
        for _ in 0..3 {
            assert!(limit.check(&key).is_ok());
        }
        match limit.check(&key) {
            Err(ApiError::RateLimited { retry_after_s, limit: 3, .. }) => assert!((1..=20).contains(&retry_after_s)),
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert!(limit.check(&"bob".to_string()).is_ok(), "buckets are per key");
        assert!(Limit::<String>::new("off", Rate { count: 0, per: Duration::from_secs(1) }).is_none());
    }

    #[test]
    fn ipv6_clients_share_a_bucket_per_prefix() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(ip_bucket(ip("2001:db8:1:2:aaaa::1"), 64), ip("2001:db8:1:2::"));
        assert_eq!(ip_bucket(ip("2001:db8:1:2:ffff:1:2:3"), 64), ip_bucket(ip("2001:db8:1:2::9"), 64));
        assert_ne!(ip_bucket(ip("2001:db8:1:2::1"), 64), ip_bucket(ip("2001:db8:1:3::1"), 64));
        assert_eq!(ip_bucket(ip("2001:db8:1:2::1"), 48), ip_bucket(ip("2001:db8:1:3::1"), 48));
        assert_ne!(ip_bucket(ip("2001:db8::1"), 128), ip_bucket(ip("2001:db8::2"), 128));
        assert_eq!(ip_bucket(ip("2001:db8::1"), 200), ip("2001:db8::1"), "past 128 means the whole address");
        assert_eq!(ip_bucket(ip("203.0.113.7"), 64), ip("203.0.113.7"), "IPv4 is per address");
        assert_eq!(ip_bucket(ip("::ffff:203.0.113.7"), 64), ip("203.0.113.7"), "IPv4-mapped is IPv4");
    }
}
