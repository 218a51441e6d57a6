//! Baselines measured in the same run as the load, so rates read as ratios on a noisy machine: `GET /healthz`
//! (HTTP alone) and `POST /jobs` refused before the store (HTTP, the token check, body parsing and validation).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use http::header::HeaderValue;
use http::{Method, Uri};

use crate::client::Lean;

/// One request repeated by the baseline's clients, and the status that counts it as answered.
struct Probe {
    client: Lean,
    method: Method,
    url: Uri,
    header: Option<(&'static str, HeaderValue)>,
    body: Option<Vec<u8>>,
    expect: u16,
}

/// `GET /healthz` in a closed loop: no auth, no store.
pub async fn healthz(base: &str, requests: usize, concurrency: usize) -> anyhow::Result<f64> {
    let probe = Probe {
        client: Lean::new(None, concurrency)?,
        method: Method::GET,
        url: format!("{base}/healthz").parse()?,
        header: None,
        body: None,
        expect: 200,
    };
    closed_loop(Arc::new(probe), requests, concurrency).await
}

/// `POST /jobs` with a kind no job may have, in a closed loop: the gateway checks the token, reads and parses the
/// body, validates it and answers `422 invalid_kind` without touching the store. What `POST /jobs` would cost
/// with a store that cost nothing.
pub async fn refused_post(
    base: &str,
    token: &str,
    engine: &str,
    requests: usize,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let body = serde_json::to_vec(&serde_json::json!({"engine": engine, "kind": "", "payload": {"i": 0}}))?;
    let probe = Probe {
        client: Lean::new(Some(token), concurrency)?,
        method: Method::POST,
        url: format!("{base}/jobs").parse()?,
        header: Some(("idempotency-key", HeaderValue::from_static("baseline"))),
        body: Some(body),
        expect: 422,
    };
    closed_loop(Arc::new(probe), requests, concurrency).await
}

/// Answers per second with the expected status, `requests` in all from `concurrency` clients.
async fn closed_loop(probe: Arc<Probe>, requests: usize, concurrency: usize) -> anyhow::Result<f64> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (probe, next) = (probe.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut answered = 0usize;
            while next.fetch_add(1, Ordering::Relaxed) < requests {
                let sent =
                    probe.client.send(probe.method.clone(), &probe.url, probe.header.clone(), probe.body.clone());
                if sent.await.is_ok_and(|(status, _)| status == probe.expect) {
                    answered += 1;
                }
            }
            answered
        }));
    }
    let mut answered = 0;
    for task in tasks {
        answered += task.await?;
    }
    Ok(answered as f64 / started.elapsed().as_secs_f64())
}
