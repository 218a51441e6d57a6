//! `http`: POSTs `{"url", "body"}` to a URL under one of the `[http] allow` prefixes; the response is the result.
//!
//! The allowlist is checked on the parsed, normalised URL (scheme, host, port, then path by whole segments),
//! and redirects are not followed, so a payload cannot reach a host or path the operator did not allow.

use std::time::Duration;

use async_trait::async_trait;
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

/// Whether `url` lies under `prefix`: same scheme, host and port, and the prefix's path is a whole-segment
/// prefix of the URL's path.
pub fn is_allowed(url: &Url, prefix: &Url) -> bool {
    if url.scheme() != prefix.scheme()
        || url.host_str() != prefix.host_str()
        || url.port_or_known_default() != prefix.port_or_known_default()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return false;
    }
    let (path, base) = (url.path(), prefix.path());
    path.starts_with(base) && (base.ends_with('/') || path.len() == base.len() || path[base.len()..].starts_with('/'))
}

#[async_trait]
impl JobHandler for HttpPost {
    async fn run(&self, payload: &RawValue, _progress: &ProgressSink) -> Result<Box<RawValue>, JobFailure> {
        let payload: HttpPayload = parse_payload("http", payload)?;
        let url = Url::parse(&payload.url).map_err(|e| JobFailure::permanent(format!("invalid url: {e}")))?;
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
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(500)]).to_string();
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
