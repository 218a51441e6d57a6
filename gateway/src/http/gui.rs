//! Serving the built GUI at `/` for local use, with the response headers its `_headers` file (Cloudflare Pages
//! format) gives for `/*`, so the locally served GUI gets the same Content-Security-Policy as the deployed one.
//! Like Cloudflare Pages, it never serves its control files (`_headers`, `_redirects`, ...) themselves.

use std::path::Path;

use axum::http::{HeaderName, HeaderValue};
use axum::response::IntoResponse;
use tower_http::services::ServeDir;

/// The headers a `_headers` file sets for every path (`/*`): `(name, value)` pairs, in order.
pub fn headers_for_all_paths(text: &str) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    let mut in_block = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if !line.starts_with(char::is_whitespace) {
            in_block = trimmed == "/*";
            continue;
        }
        if in_block && let Some((name, value)) = trimmed.split_once(':') {
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    headers
}

/// Files of a Cloudflare Pages build that configure the host and are not part of the site.
const CONTROL_FILES: [&str; 4] = ["_headers", "_redirects", "_routes.json", "_worker.js"];

/// Security headers the GUI gets when its `_headers` file does not set them.
const BASELINE_HEADERS: [(&str, &str); 4] = [
    (
        "content-security-policy",
        "default-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-opener-policy", "same-origin"),
];

/// Whether a request path names one of the control files, in any segment, however it is percent-encoded or cased
/// (the file server decodes it, and some file systems ignore case).
fn names_a_control_file(path: &str) -> bool {
    path.split('/').any(|segment| {
        let decoded = percent_encoding::percent_decode_str(segment).decode_utf8_lossy();
        CONTROL_FILES.iter().any(|file| decoded.eq_ignore_ascii_case(file))
    })
}

/// A service for the GUI folder that answers unknown paths with the API's JSON 404 and adds the `_headers`.
pub fn service(dir: &Path) -> anyhow::Result<axum::Router> {
    if !dir.join("index.html").is_file() {
        anyhow::bail!("--gui-dir {}: no index.html there (build the GUI with `npm run build` in gui/)", dir.display());
    }
    let headers = match std::fs::read_to_string(dir.join("_headers")) {
        Ok(text) => headers_for_all_paths(&text),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(error) => anyhow::bail!("reading {}: {error}", dir.join("_headers").display()),
    };
    let mut parsed = Vec::with_capacity(headers.len() + BASELINE_HEADERS.len());
    for (name, value) in headers {
        parsed.push((HeaderName::try_from(name.as_str())?, HeaderValue::try_from(value.as_str())?));
    }
    for (name, value) in BASELINE_HEADERS {
        if !parsed.iter().any(|(given, _)| given == name) {
            parsed.push((HeaderName::from_static(name), HeaderValue::from_static(value)));
        }
    }
    let files = ServeDir::new(dir).not_found_service(axum::routing::any(crate::api::not_found));
    Ok(axum::Router::new().fallback_service(files).layer(axum::middleware::from_fn(hide_control_files)).layer(
        axum::middleware::map_response(move |mut response: axum::response::Response| {
            let parsed = parsed.clone();
            async move {
                for (name, value) in parsed {
                    response.headers_mut().entry(name).or_insert(value);
                }
                response
            }
        }),
    ))
}

/// Answers the API's JSON 404 for a control file, as for any file that is not there.
async fn hide_control_files(request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    if names_a_control_file(request.uri().path()) {
        return crate::api::not_found(request.uri().clone()).await.into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_files_are_recognised_however_spelled() {
        for path in ["/_headers", "/%5Fheaders", "/%5fHEADERS", "/assets/../_redirects", "/x/_routes.json"] {
            assert!(names_a_control_file(path), "{path}");
        }
        for path in ["/", "/index.html", "/assets/_headers.js", "/headers"] {
            assert!(!names_a_control_file(path), "{path}");
        }
    }

    #[test]
    fn reads_the_block_for_every_path() {
        let text = "# comment\n/*\n  Content-Security-Policy: default-src 'self'\n  X-Frame-Options: DENY\n\n/assets/*\n  Cache-Control: immutable\n";
        assert_eq!(
            headers_for_all_paths(text),
            [
                ("Content-Security-Policy".to_string(), "default-src 'self'".to_string()),
                ("X-Frame-Options".to_string(), "DENY".to_string())
            ]
        );
    }
}
