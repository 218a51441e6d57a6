//! `http`: POSTs `{"url", "body"}` to a URL under one of the `[http] allow` prefixes; the response is the result.
//!
//! The allowlist is checked on the parsed, normalised URL (scheme, host, port, then path by whole decoded
//! segments), and redirects are not followed, so a payload cannot reach a host or path the operator did not allow.
//! The `url` crate resolves `..` and `%2e%2e` segments but keeps `%2f` as is, and many servers decode it into a
//! `/` after routing: `/hooks/..%2fadmin` would pass a check of `/hooks/` and reach `/admin`. So a path with an
//! encoded `/`, `\` or `.` is refused outright, and what remains is compared segment by decoded segment.

use std::time::Duration;

use async_trait::async_trait;
use percent_encoding::percent_decode_str;
use reqwest::Url;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{JobFailure, JobHandler, ProgressSink, parse_payload, to_result};
use crate::config::{ConfigError, HttpConfig};

/// Largest response body kept as a result.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpPayload {
    url: String,
    #[serde(default)]
    body: Option<Box<RawValue>>,
}

pub struct HttpPost {
    client: reqwest::Client,
    allow: Vec<Url>,
}

impl HttpPost {
    pub fn new(config: &HttpConfig) -> Result<Self, ConfigError> {
        let allow = config
            .allow
            .iter()
            .map(|prefix| {
                Url::parse(prefix).map_err(|e| ConfigError::Invalid(format!("[http] allow entry {prefix:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ConfigError::Invalid(format!("http client: {e}")))?;
        Ok(Self { client, allow })
    }
}

/// Why a URL is refused before any allowlist is looked at: it could mean another place to the server than to us.
pub fn ambiguity(url: &Url) -> Option<&'static str> {
    if !url.username().is_empty() || url.password().is_some() {
        return Some("the URL carries credentials (user:password@); put them in the payload's headers instead");
    }
    let path = url.path().to_ascii_lowercase();
    if ["%2f", "%5c", "%2e"].iter().any(|encoded| path.contains(encoded)) {
        return Some(
            "the URL's path has an encoded '/', '\\' or '.' (%2F, %5C, %2E), which a server may decode into another \
             path; write the path plainly",
        );
    }
    None
}

/// The path's segments, percent-decoded (the URL has passed [`ambiguity`], so none holds a separator).
fn decoded_segments(url: &Url) -> Vec<String> {
    url.path_segments()
        .map(|segments| segments.map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned()).collect())
        .unwrap_or_default()
}

/// Whether `url` lies under `prefix`: same scheme, host and port, and the prefix's path is a whole-segment
/// prefix of the URL's path (compared decoded); a prefix ending in `/` needs something after it.
pub fn is_allowed(url: &Url, prefix: &Url) -> bool {
    if url.scheme() != prefix.scheme()
        || url.host_str() != prefix.host_str()
        || url.port_or_known_default() != prefix.port_or_known_default()
        || ambiguity(url).is_some()
    {
        return false;
    }
    let path = decoded_segments(url);
    let mut base = decoded_segments(prefix);
    let open_ended = base.last().is_some_and(String::is_empty);
    if open_ended {
        base.pop();
    }
    let long_enough = if open_ended { path.len() > base.len() } else { path.len() >= base.len() };
    long_enough && path[..base.len()] == base[..]
}

/// A URL for a message: without its password.
fn redacted(url: &Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("***"));
    }
    shown.to_string()
}

#[async_trait]
impl JobHandler for HttpPost {
    async fn run(&self, payload: &RawValue, _progress: &ProgressSink) -> Result<Box<RawValue>, JobFailure> {
        let payload: HttpPayload = parse_payload("http", payload)?;
        let url = Url::parse(&payload.url).map_err(|e| JobFailure::permanent(format!("invalid url: {e}")))?;
        if let Some(reason) = ambiguity(&url) {
            return Err(JobFailure::permanent(format!("{reason}: {}", redacted(&url))));
        }
        if !self.allow.iter().any(|prefix| is_allowed(&url, prefix)) {
            return Err(JobFailure::permanent(format!(
                "{url} is not under any [http] allow prefix of this engine's config"
            )));
        }
        let body = payload.body.map(|b| b.get().to_string()).unwrap_or_else(|| "null".into());
        let response = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| JobFailure::retryable(format!("request failed: {e}")))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| JobFailure::retryable(format!("reading the response: {e}")))?;
        if !status.is_success() {
            let text = super::text_prefix(&bytes, 500);
            let message = format!("the endpoint answered {status}: {text}");
            // Overload and server errors may pass; other client errors will not.
            let retryable = status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408;
            return Err(JobFailure { message, retryable });
        }
        if bytes.len() > MAX_RESPONSE_BYTES {
            return Err(JobFailure::permanent(format!("the response is larger than {MAX_RESPONSE_BYTES} bytes")));
        }
        // A JSON response is the result as is; anything else becomes a JSON string.
        match serde_json::from_slice::<Box<RawValue>>(&bytes) {
            Ok(json) => Ok(json),
            Err(_) => to_result(&String::from_utf8_lossy(&bytes)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(url: &str, prefix: &str) -> bool {
        is_allowed(&Url::parse(url).unwrap(), &Url::parse(prefix).unwrap())
    }

    #[test]
    fn encoded_separators_dot_segments_and_userinfo_never_pass() {
        let prefix = "http://127.0.0.1:9000/hooks/";
        for url in [
            "http://127.0.0.1:9000/hooks/..%2fadmin",
            "http://127.0.0.1:9000/hooks/..%2Fadmin",
            "http://127.0.0.1:9000/hooks/%2e%2e/admin",
            "http://127.0.0.1:9000/hooks/%2e%2e%2fadmin",
            "http://127.0.0.1:9000/hooks/.%2e/admin",
            "http://127.0.0.1:9000/hooks/a%2fb",
            "http://127.0.0.1:9000/hooks/..%5cadmin",
            "http://127.0.0.1:9000/hooks/..\\admin",
            "http://127.0.0.1:9000/hooks/../admin",
            "http://127.0.0.1:9000/hooks/x/../../admin",
            "http://127.0.0.1:9000@evil.example/hooks/a",
            "http://127.0.0.1:9000:@evil.example/hooks/a",
            "http://user:pw@127.0.0.1:9000/hooks/a",
            "http://127.0.0.1:9000/hooks",
        ] {
            assert!(!allowed(url, prefix), "{url} passed");
        }
        let sneaky = Url::parse("http://127.0.0.1:9000/hooks/..%2fadmin").unwrap();
        assert!(ambiguity(&sneaky).is_some_and(|why| why.contains("%2F")));
        let userinfo = Url::parse("http://127.0.0.1:9000@evil/").unwrap();
        assert!(ambiguity(&userinfo).is_some_and(|why| why.contains("credentials")));
        // Plain and harmlessly encoded paths under the prefix pass.
        for url in [
            "http://127.0.0.1:9000/hooks/a",
            "http://127.0.0.1:9000/hooks/a%20b/c?x=%2f",
            "http://127.0.0.1:9000/hooks/./a",
            "http://127.0.0.1:9000/hooks/x/../a",
        ] {
            assert!(allowed(url, prefix), "{url} refused");
        }
        assert!(allowed("http://h/a%20b/c", "http://h/a b/"), "segments compare decoded");
    }

    #[test]
    fn allowlist_matches_whole_origins_and_path_segments() {
        let prefix = "http://127.0.0.1:9000/hooks/";
        assert!(allowed("http://127.0.0.1:9000/hooks/a", prefix));
        assert!(allowed("http://127.0.0.1:9000/hooks/a/b?x=1", prefix));
        assert!(!allowed("http://127.0.0.1:9000/hooksx", prefix));
        assert!(!allowed("http://127.0.0.1:9000/hooks/../admin", prefix));
        assert!(!allowed("http://127.0.0.1:9000/hooks/%2e%2e/admin", prefix));
        assert!(!allowed("http://127.0.0.1:9001/hooks/a", prefix));
        assert!(!allowed("https://127.0.0.1:9000/hooks/a", prefix));
        assert!(!allowed("http://127.0.0.1:9000@evil.example/hooks/a", prefix));
        assert!(!allowed("http://user@127.0.0.1:9000/hooks/a", prefix));
        assert!(allowed("http://h/api", "http://h/api"));
        assert!(allowed("http://h/api/x", "http://h/api"));
        assert!(!allowed("http://h/apix", "http://h/api"));
    }
}
