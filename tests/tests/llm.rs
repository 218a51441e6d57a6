//! The `llm` kind with the real gateway and engine against local providers that speak the chat-completions
//! protocol (JSON and server-sent events) and can be told to fail, stall or rate-limit.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use flowork_tests::{Api, Engine, Gateway, Workspace, eventually};
use serde_json::{Value, json};

const KEY: &str = "sk-flowork-test-4c1d2a";

/// What a provider does with its next request.
#[derive(Debug, Clone)]
enum Behaviour {
    Answer,
    Status(u16),
    RateLimit {
        retry_after_s: u64,
    },
    Stall(Duration),
    /// Answers, after a while.
    Slow(Duration),
}

/// A request a provider saw.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    authorization: Option<String>,
    body: Value,
}

#[derive(Default)]
struct Stub {
    scripts: HashMap<String, VecDeque<Behaviour>>,
    seen: HashMap<String, Vec<Seen>>,
    /// Calls being answered now, and the most at once, per provider.
    in_flight: HashMap<String, (usize, usize)>,
}

type Shared = Arc<Mutex<Stub>>;

fn sse(text: &str, model: &str) -> String {
    let mut out = String::new();
    let pieces: Vec<String> = text.split_inclusive(' ').map(str::to_string).collect();
    out.push_str(&format!(
        "data: {}\n\n",
        json!({"id": "c1", "object": "chat.completion.chunk", "model": model,
               "choices": [{"index": 0, "delta": {"role": "assistant"}}]})
    ));
    for piece in pieces {
        out.push_str(&format!(
            "data: {}\n\n",
            json!({"id": "c1", "object": "chat.completion.chunk", "model": model,
                   "choices": [{"index": 0, "delta": {"content": piece}}]})
        ));
    }
    out.push_str(&format!(
        "data: {}\n\ndata: [DONE]\n\n",
        json!({"id": "c1", "object": "chat.completion.chunk", "model": model, "choices": [],
               "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})
    ));
    out
}

async fn completions(
    State(stub): State<Shared>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: axum::Json<Value>,
) -> Response {
    let behaviour = {
        let Ok(mut stub) = stub.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
        let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_string);
        stub.seen.entry(provider.clone()).or_default().push(Seen {
            at: Instant::now(),
            authorization,
            body: body.0.clone(),
        });
        stub.scripts.get_mut(&provider).and_then(VecDeque::pop_front).unwrap_or(Behaviour::Answer)
    };
    let model = body["model"].as_str().unwrap_or("none").to_string();
    let text = format!("Hello from {provider}");
    if let Behaviour::Slow(wait) = behaviour {
        if let Ok(mut stub) = stub.lock() {
            let entry = stub.in_flight.entry(provider.clone()).or_default();
            entry.0 += 1;
            entry.1 = entry.1.max(entry.0);
        }
        tokio::time::sleep(wait).await;
        if let Ok(mut stub) = stub.lock() {
            stub.in_flight.entry(provider.clone()).or_default().0 -= 1;
        }
    }
    match behaviour {
        Behaviour::Answer if body["stream"] == true => {
            ([(header::CONTENT_TYPE, "text/event-stream")], sse(&text, &model)).into_response()
        }
        Behaviour::Answer | Behaviour::Slow(_) => axum::Json(json!({
            "id": "c1", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6},
        }))
        .into_response(),
        Behaviour::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, axum::Json(json!({"error": {"message": format!("scripted {code}"), "type": "test"}})))
                .into_response()
        }
        Behaviour::RateLimit { retry_after_s } => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, retry_after_s.to_string())],
            axum::Json(json!({"error": {"message": "slow down"}})),
        )
            .into_response(),
        Behaviour::Stall(wait) => {
            tokio::time::sleep(wait).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
    }
}

/// Starts the providers' server on an ephemeral port; `http://127.0.0.1:PORT/{name}/v1` is provider `name`.
async fn start_stub() -> anyhow::Result<(Shared, String)> {
    let stub: Shared = Arc::default();
    let app = Router::new().route("/{provider}/v1/chat/completions", post(completions)).with_state(stub.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((stub, base))
}

fn script(stub: &Shared, provider: &str, steps: &[Behaviour]) {
    if let Ok(mut stub) = stub.lock() {
        stub.scripts.insert(provider.to_string(), steps.iter().cloned().collect());
    }
}

fn seen(stub: &Shared, provider: &str) -> Vec<Seen> {
    stub.lock().map(|s| s.seen.get(provider).cloned().unwrap_or_default()).unwrap_or_default()
}

struct Setup {
    _ws: Workspace,
    _gw: Gateway,
    engine: Engine,
    api: Api,
    stub: Shared,
}

async fn setup(primary_extra: &str) -> anyhow::Result<Setup> {
    setup_with_workers(primary_extra, 1).await
}

async fn setup_with_workers(primary_extra: &str, workers: u32) -> anyhow::Result<Setup> {
    let (stub, base) = start_stub().await?;
    let ws = Workspace::new()?;
    ws.add_engine("local")?;
    let gw = Gateway::start(&ws, &[]).await?;
    let api = Api::new(&gw, &ws.mint("alice", "1h")?);
    let config = ws.path("engine.toml");
    std::fs::write(
        &config,
        format!(
            r#"[llm]
chain = ["primary", "backup"]

[[llm.providers]]
name = "primary"
base_url = "{base}/primary/v1"
api_key_env = "FLOWORK_TEST_LLM_KEY"
model = "big-model"
models = {{ fast = "small-model" }}
retries = 1
retry_base_ms = 50
retry_cap_ms = 200
{primary_extra}

[[llm.providers]]
name = "backup"
base_url = "{base}/backup/v1"
model = "backup-model"
"#
        ),
    )?;
    let engine = Engine::start_with_env(
        &ws,
        &gw,
        "local",
        workers,
        &["--config", config.to_str().unwrap_or_default()],
        &[("FLOWORK_TEST_LLM_KEY", KEY), ("RUST_LOG", "debug")],
    )?;
    Ok(Setup { _ws: ws, _gw: gw, engine, api, stub })
}

/// Submits an `llm` job and waits until it is final.
async fn run_job(api: &Api, key: &str, payload: Value, max_attempts: u32) -> anyhow::Result<Value> {
    let body = json!({"engine": "local", "kind": "llm", "payload": payload, "max_attempts": max_attempts});
    let created = api.post_job(key, &body).await?;
    assert_eq!(created.status, reqwest::StatusCode::CREATED, "{}", created.body);
    let id = created.body["id"].as_str().unwrap_or_default().to_string();
    eventually(Duration::from_secs(30), "the llm job to finish", || async {
        let job = api.get(&format!("/jobs/{id}")).await?.body;
        Ok(matches!(job["status"].as_str(), Some("succeeded" | "dead")).then_some(job))
    })
    .await
}

fn attempts(job: &Value) -> Vec<(String, String)> {
    job["result"]["attempts"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| (x["provider"].as_str().unwrap_or("").into(), x["status"].as_str().unwrap_or("").into()))
                .collect()
        })
        .unwrap_or_default()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

#[tokio::test]
async fn a_failing_provider_is_retried_then_the_next_one_streams_the_answer() -> anyhow::Result<()> {
    let s = setup("").await?;
    script(&s.stub, "primary", &[Behaviour::Status(500), Behaviour::Status(503)]);
    let messages = json!([{"role": "user", "content": "Say hello"}]);
    let job = run_job(&s.api, "fallback", json!({"messages": messages, "stream": true, "model": "fast"}), 1).await?;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["result"]["provider"], "backup");
    assert_eq!(job["result"]["text"], "Hello from backup", "the stream was assembled");
    assert_eq!(job["result"]["usage"]["total_tokens"], 5);
    assert_eq!(attempts(&job), pairs(&[("primary", "500"), ("primary", "503"), ("backup", "200")]));

    // The primary got the mapped model and the key; the backup has no key configured.
    let primary = seen(&s.stub, "primary");
    assert_eq!(primary.len(), 2);
    assert_eq!(primary[0].body["model"], "small-model");
    assert_eq!(primary[0].body["messages"], messages);
    assert_eq!(primary[0].authorization.as_deref(), Some(format!("Bearer {KEY}").as_str()));
    assert_eq!(seen(&s.stub, "backup")[0].authorization, None);
    // The backoff between the two tries stays within its bounds (full jitter over 50-200 ms).
    let gap = primary[1].at.duration_since(primary[0].at);
    assert!(gap < Duration::from_secs(2), "{gap:?}");
    assert!(!s.engine.process.log_text().contains(KEY), "the API key must never be logged");
    Ok(())
}

#[tokio::test]
async fn retry_after_is_honoured_and_a_bad_request_fails_without_retry() -> anyhow::Result<()> {
    let s = setup("").await?;
    script(&s.stub, "primary", &[Behaviour::RateLimit { retry_after_s: 1 }]);
    let messages = json!([{"role": "user", "content": "hi"}]);
    let job = run_job(&s.api, "limited", json!({"messages": messages}), 1).await?;
    assert_eq!(job["result"]["provider"], "primary", "{job}");
    assert_eq!(attempts(&job), pairs(&[("primary", "429"), ("primary", "200")]));
    let primary = seen(&s.stub, "primary");
    let waited = primary[1].at.duration_since(primary[0].at);
    assert!(waited >= Duration::from_millis(1_000), "Retry-After: 1 was not honoured: {waited:?}");

    script(&s.stub, "primary", &[Behaviour::Status(400)]);
    let bad = run_job(&s.api, "bad", json!({"messages": messages}), 3).await?;
    assert_eq!(bad["status"], "dead", "a request the provider refuses is not retried: {bad}");
    assert_eq!(bad["attempts"], 1);
    assert!(bad["error"].as_str().unwrap_or("").contains("refused the request (400)"), "{bad}");
    assert_eq!(seen(&s.stub, "primary").len(), 3, "one call for the bad request");
    assert!(seen(&s.stub, "backup").is_empty(), "no fallback for the request's own fault");

    let invalid = run_job(&s.api, "invalid", json!({"messages": []}), 3).await?;
    assert_eq!(invalid["status"], "dead");
    assert!(invalid["error"].as_str().unwrap_or("").contains("messages"), "{invalid}");
    Ok(())
}

#[tokio::test]
async fn a_stalled_provider_times_out_and_a_failing_one_is_skipped_by_its_breaker_until_it_recovers()
-> anyhow::Result<()> {
    let s = setup("timeout_ms = 300\nbreaker_failures = 2\nbreaker_cooldown_ms = 1500").await?;
    let messages = json!([{"role": "user", "content": "hi"}]);
    script(&s.stub, "primary", &[Behaviour::Stall(Duration::from_secs(3)), Behaviour::Status(502)]);
    let stalled = run_job(&s.api, "stalled", json!({"messages": messages}), 1).await?;
    // The timeout and the 502 are two failures in a row: the breaker opens, the backup answers.
    assert_eq!(attempts(&stalled), pairs(&[("primary", "timeout"), ("primary", "502"), ("backup", "200")]));

    let skipped = run_job(&s.api, "skipped", json!({"messages": messages}), 1).await?;
    assert_eq!(attempts(&skipped), pairs(&[("primary", "breaker_open"), ("backup", "200")]));
    assert_eq!(seen(&s.stub, "primary").len(), 2, "an open breaker makes no call");

    tokio::time::sleep(Duration::from_millis(1_600)).await;
    let recovered = run_job(&s.api, "recovered", json!({"messages": messages}), 1).await?;
    assert_eq!(attempts(&recovered), pairs(&[("primary", "200")]), "after the cool-down one trial call closes it");
    let again = run_job(&s.api, "again", json!({"messages": messages}), 1).await?;
    assert_eq!(again["result"]["provider"], "primary");
    Ok(())
}

#[tokio::test]
async fn a_provider_never_gets_more_calls_at_once_than_its_limit() -> anyhow::Result<()> {
    let s = setup_with_workers("max_concurrency = 1", 3).await?;
    let slow = Behaviour::Slow(Duration::from_millis(300));
    script(&s.stub, "primary", &[slow.clone(), slow.clone(), slow]);
    let messages = json!([{"role": "user", "content": "hi"}]);
    let runs = (0..3).map(|i| {
        let api = s.api.clone();
        let messages = messages.clone();
        tokio::spawn(async move { run_job(&api, &format!("slow-{i}"), json!({"messages": messages}), 1).await })
    });
    let mut done = Vec::new();
    for run in runs.collect::<Vec<_>>() {
        done.push(run.await??);
    }
    assert!(done.iter().all(|job| job["result"]["provider"] == "primary"), "{done:?}");
    let most = s.stub.lock().map(|stub| stub.in_flight.get("primary").map_or(0, |e| e.1)).unwrap_or(0);
    assert_eq!(most, 1, "three workers, one call at a time to a provider limited to one");
    Ok(())
}
