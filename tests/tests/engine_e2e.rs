//! The real gateway and the real engine together: many jobs end to end, a killed engine, graceful stop,
//! and the built-in handlers.

use std::collections::HashMap;
use std::time::Duration;

use flowork_tests::{Api, Engine, Gateway, Workspace, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn setup(gateway_extra: &[&str]) -> anyhow::Result<(Workspace, Gateway, Api)> {
    let ws = Workspace::new()?;
    ws.add_engine("local")?;
    let token = ws.mint("alice", "1h")?;
    let gw = Gateway::start(&ws, gateway_extra).await?;
    let api = Api::new(&gw, &token);
    Ok((ws, gw, api))
}

/// Enqueues `count` jobs concurrently; returns their ids.
async fn enqueue_many(api: &Api, count: usize, body: impl Fn(usize) -> Value) -> anyhow::Result<Vec<String>> {
    let mut tasks = Vec::new();
    for i in 0..count {
        let (api, body) = (api.clone(), body(i));
        tasks.push(tokio::spawn(async move { api.post_job(&format!("job-{i}"), &body).await }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        let reply = task.await??;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        ids.push(reply.body["id"].as_str().unwrap().to_string());
    }
    Ok(ids)
}

/// Waits until every job of the user is final; returns them by id.
async fn wait_all_final(api: &Api, count: usize, within: Duration) -> anyhow::Result<HashMap<String, Value>> {
    let jobs = api.wait_all_final(count as u64, within).await?;
    Ok(jobs.into_iter().map(|j| (j["id"].as_str().unwrap_or_default().to_string(), j)).collect())
}

#[tokio::test]
async fn a_thousand_jobs_all_succeed_exactly_once() -> anyhow::Result<()> {
    let (ws, gw, api) = setup(&[]).await?;
    let _engine = Engine::start(&ws, &gw, "local", 8, &[])?;
    let ids = enqueue_many(&api, 1_000, |i| json!({"engine": "local", "kind": "echo", "payload": {"i": i}})).await?;
    let jobs = wait_all_final(&api, 1_000, Duration::from_secs(120)).await?;
    for (i, id) in ids.iter().enumerate() {
        let job = &jobs[id];
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["attempts"], 1, "claimed exactly once: {job}");
        assert_eq!(job["result"], json!({"i": i}));
    }
    Ok(())
}

#[tokio::test]
async fn a_killed_engine_loses_nothing() -> anyhow::Result<()> {
    let (ws, gw, api) = setup(&["--reap-interval-ms", "100"]).await?;
    let workers = 4;
    // Long enough that a busy machine's slow finish does not lapse a live engine's lease (that would be a rerun
    // too, but not the one this test is about); the dead engine's leases still lapse in 2.5 s.
    let lease = ["--lease-ms", "2500"];
    let mut first = Engine::start(&ws, &gw, "local", workers, &lease)?;
    enqueue_many(&api, 200, |_| json!({"engine": "local", "kind": "sleep", "payload": {"ms": 30}})).await?;
    eventually(Duration::from_secs(60), "some jobs done", || async {
        Ok((api.all_jobs(Some("succeeded")).await?.len() >= 30).then_some(()))
    })
    .await?;
    first.process.signal("KILL")?;
    first.process.wait_exit(Duration::from_secs(10)).await?;
    let in_flight = api.all_jobs(Some("running")).await?.len();
    let _second = Engine::start(&ws, &gw, "local", workers, &lease)?;
    let jobs = wait_all_final(&api, 200, Duration::from_secs(120)).await?;
    assert!(jobs.values().all(|j| j["status"] == "succeeded"), "every job succeeds after the crash");
    let rerun = jobs.values().filter(|j| j["attempts"].as_u64() > Some(1)).count();
    // Only jobs whose lease the dead engine held run again (at-least-once through expired leases).
    assert!(rerun <= workers as usize, "{rerun} jobs ran twice; at most the {workers} in flight may");
    assert!(in_flight <= workers as usize);
    Ok(())
}

#[tokio::test]
async fn sigterm_lets_running_jobs_finish_then_exits_zero() -> anyhow::Result<()> {
    let (ws, gw, api) = setup(&[]).await?;
    let mut engine = Engine::start(&ws, &gw, "local", 2, &[])?;
    enqueue_many(&api, 2, |_| json!({"engine": "local", "kind": "sleep", "payload": {"ms": 1500}})).await?;
    eventually(Duration::from_secs(20), "both running", || async {
        Ok((api.all_jobs(Some("running")).await?.len() == 2).then_some(()))
    })
    .await?;
    let queued_later = api.post_job("after-stop", &json!({"engine": "local", "kind": "echo"})).await?;
    engine.process.signal("TERM")?;
    let code = engine.process.wait_exit(Duration::from_secs(20)).await?;
    assert_eq!(code, Some(0), "{}", engine.process.log_text());
    let succeeded = api.all_jobs(Some("succeeded")).await?;
    assert_eq!(succeeded.len(), 2, "in-flight jobs finished before exit");
    assert!(succeeded.iter().all(|j| j["attempts"] == 1));
    // A stopping engine claims nothing new.
    let later = api.get(&format!("/jobs/{}", queued_later.body["id"].as_str().unwrap())).await?;
    assert_eq!(later.body["status"], "queued");
    Ok(())
}

#[tokio::test]
async fn builtin_handlers_and_timeouts() -> anyhow::Result<()> {
    // A local endpoint for the `http` kind.
    let hooks = axum::Router::new()
        .route("/hooks/upper", axum::routing::post(|body: String| async move { body.to_uppercase() }))
        .route("/hooks/fail", axum::routing::post(|| async { (StatusCode::BAD_REQUEST, "nope") }))
        .route("/admin", axum::routing::post(|| async { "should never be reached" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook_addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, hooks).await });

    let (ws, gw, api) = setup(&[]).await?;
    let config = ws.path("engine.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nallow = [\"http://{hook_addr}/hooks/\"]\n\n[exec.commands]\nwordcount = [\"/usr/bin/wc\", \"-c\"]\n"
        ),
    )?;
    let _engine = Engine::start(&ws, &gw, "local", 4, &["--config", config.to_str().unwrap()])?;

    let cases = [
        (
            "http-ok",
            json!({"kind": "http", "payload": {"url": format!("http://{hook_addr}/hooks/upper"), "body": {"a": "b"}}, "max_attempts": 1}),
        ),
        (
            "http-4xx",
            json!({"kind": "http", "payload": {"url": format!("http://{hook_addr}/hooks/fail")}, "max_attempts": 3}),
        ),
        (
            "http-forbidden",
            json!({"kind": "http", "payload": {"url": format!("http://{hook_addr}/hooks/../admin")}, "max_attempts": 3}),
        ),
        ("exec-ok", json!({"kind": "exec", "payload": {"command": "wordcount", "stdin": "hello"}, "max_attempts": 1})),
        ("exec-unknown", json!({"kind": "exec", "payload": {"command": "rm"}, "max_attempts": 3})),
        ("timeout", json!({"kind": "sleep", "payload": {"ms": 60000}, "timeout_ms": 200, "max_attempts": 1})),
        ("unknown-kind", json!({"kind": "teleport", "payload": {}, "max_attempts": 3})),
    ];
    let mut ids = HashMap::new();
    for (name, mut body) in cases {
        body["engine"] = json!("local");
        let reply = api.post_job(name, &body).await?;
        assert_eq!(reply.status, StatusCode::CREATED);
        ids.insert(name, reply.body["id"].as_str().unwrap().to_string());
    }
    let jobs = wait_all_final(&api, ids.len(), Duration::from_secs(60)).await?;
    let job = |name: &str| jobs[&ids[name]].clone();

    assert_eq!(job("http-ok")["status"], "succeeded");
    assert_eq!(job("http-ok")["result"], json!({"A": "B"}));
    for name in ["http-4xx", "http-forbidden", "exec-unknown", "unknown-kind"] {
        let j = job(name);
        assert_eq!(j["status"], "dead", "{name}: {j}");
        assert_eq!(j["attempts"], 1, "{name}: a permanent failure is not retried");
    }
    assert!(job("http-forbidden")["error"].as_str().unwrap().contains("not under any"));
    assert!(job("unknown-kind")["error"].as_str().unwrap().contains("no handler"));
    assert_eq!(job("exec-ok")["status"], "succeeded");
    assert_eq!(job("exec-ok")["result"].as_str().map(str::trim), Some("5"));
    assert_eq!(job("timeout")["status"], "dead");
    assert!(job("timeout")["error"].as_str().unwrap().contains("timed out"));
    // Each attempt's record says how it ended: the engine reports a timeout as such (protocol 1.1).
    let timeout_id = job("timeout")["id"].as_str().unwrap().to_string();
    let history = api.get(&format!("/jobs/{timeout_id}/attempts")).await?;
    let attempts = history.body["attempts"].as_array().cloned().unwrap_or_default();
    assert!(!attempts.is_empty(), "{}", history.body);
    for (index, attempt) in attempts.iter().enumerate() {
        assert_eq!(attempt["number"], index + 1, "{attempt}");
        assert_eq!(attempt["outcome"], "timed_out", "{attempt}");
        assert!(attempt["error"].as_str().unwrap_or_default().contains("timed out"), "{attempt}");
        assert!(attempt["worker"].is_string() && attempt["started_at"].is_string(), "{attempt}");
    }
    assert_eq!(job("exec-ok")["attempts"], 1);
    Ok(())
}

#[tokio::test]
async fn progress_reaches_the_gateway_without_waiting_for_the_lease_renewal() -> anyhow::Result<()> {
    let (ws, gw, api) = setup(&[]).await?;
    // A 120 s lease is renewed every 40 s: progress that waited for the renewal would not be seen in the first
    // 30 s. The sleep reports progress every tenth (3 s), and each report goes out within about a second.
    let _engine = Engine::start(&ws, &gw, "local", 1, &["--lease-ms", "120000"])?;
    let job = api.post_job("prompt", &json!({"engine": "local", "kind": "sleep", "payload": {"ms": 30_000}})).await?;
    let id = job.body["id"].as_str().unwrap().to_string();
    let seen = eventually(Duration::from_secs(25), "progress before the first renewal", || async {
        let job = api.get(&format!("/jobs/{id}")).await?;
        Ok((job.body["progress"]["percent"].as_f64() >= Some(20.0)).then_some(job.body))
    })
    .await?;
    assert_eq!(seen["status"], "running", "{seen}");
    assert!(seen["progress"]["message"].as_str().unwrap_or_default().contains("slept"), "{seen}");
    Ok(())
}

#[tokio::test]
async fn a_running_job_reports_progress_and_can_be_cancelled() -> anyhow::Result<()> {
    let (ws, gw, api) = setup(&[]).await?;
    // A short lease, so a lapse after the cancel ends it quickly; long enough that a busy machine's heartbeats
    // keep it before the cancel.
    let _engine = Engine::start(&ws, &gw, "local", 1, &["--lease-ms", "1500"])?;
    let job = api.post_job("long", &json!({"engine": "local", "kind": "sleep", "payload": {"ms": 20_000}})).await?;
    let id = job.body["id"].as_str().unwrap().to_string();
    let running = eventually(Duration::from_secs(20), "progress", || async {
        let job = api.get(&format!("/jobs/{id}")).await?;
        Ok((job.body["status"] == "running" && job.body["progress"]["percent"].as_f64() > Some(0.0))
            .then_some(job.body))
    })
    .await?;
    assert!(running["progress"]["message"].as_str().unwrap().contains("slept"));

    let cancel = api.post(&format!("/jobs/{id}/cancel"), &json!({})).await?;
    assert_eq!(cancel.status, StatusCode::ACCEPTED, "{}", cancel.body);
    assert_eq!(cancel.body["cancel_requested"], true);
    let cancelled = eventually(Duration::from_secs(10), "the engine to stop the job", || async {
        let job = api.get(&format!("/jobs/{id}")).await?;
        Ok((job.body["status"] == "cancelled").then_some(job.body))
    })
    .await?;
    assert_eq!(cancelled["attempts"], 1);
    // Stopped by the engine, or (a busy machine's late heartbeat) ended by its lapsed lease: cancelled either way.
    let error = cancelled["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("cancelled while running"), "{error}");
    let again = api.post(&format!("/jobs/{id}/cancel"), &json!({})).await?;
    assert_eq!((again.status, again.code()), (StatusCode::CONFLICT, "not_cancellable"));
    // The worker is free again.
    let next = api.post_job("next", &json!({"engine": "local", "kind": "echo"})).await?;
    let next_id = next.body["id"].as_str().unwrap().to_string();
    eventually(Duration::from_secs(10), "the next job", || async {
        Ok((api.get(&format!("/jobs/{next_id}")).await?.body["status"] == "succeeded").then_some(()))
    })
    .await?;
    Ok(())
}
