//! What a caller sees of others' work: nothing derived from a job (payload, result, error) reaches anyone but
//! the job's user and the engine's owner, whether through the tokenless `/status` and `/metrics` or live
//! `engine.status` events; and what callers send (job kinds, HTTP methods, paths) cannot grow those pages.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::time::Duration;

use flowork_tests::live::Listener;
use flowork_tests::{Api, EngineApi, Gateway, Workspace, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Text only the failing jobs carry (their payload, quoted back by the engine's error).
const MARKER: &str = "zq-private-7731";

async fn anonymous(gw: &Gateway, path: &str) -> anyhow::Result<String> {
    Ok(reqwest::get(format!("{}{path}", gw.base)).await?.text().await?)
}

/// The `engine.status` events of `engine` a listener received.
fn engine_statuses(listener: &Listener, engine: &str) -> Vec<Value> {
    listener
        .events()
        .into_iter()
        .filter(|e| e["event"] == "engine.status" && e["data"]["id"] == engine)
        .map(|e| e["data"].clone())
        .collect()
}

async fn connected(listeners: &[&Listener]) -> anyhow::Result<()> {
    eventually(Duration::from_secs(30), "the socket.io clients connected", || async {
        Ok(listeners.iter().all(|l| l.events().iter().any(|e| e["event"] == "connected")).then_some(()))
    })
    .await
}

#[tokio::test]
async fn a_failing_jobs_error_reaches_only_its_user_and_the_engine_owner() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    let engine_token = ws.add_engine("local")?; // alice owns it, bob may submit
    ws.gateway_cli_ok(&["engine", "allow", "local", "carol"])?;
    ws.add_engine_owned_by("elsewhere", "dave")?; // dave has no access to `local`
    let gw = Gateway::start(&ws, &["--breaker-failures", "2", "--breaker-cooldown", "1h"]).await?;
    let [alice, bob, carol, dave] = ["alice", "bob", "carol", "dave"].map(|u| ws.mint(u, "1h"));
    let (alice, bob, carol, dave) = (alice?, bob?, carol?, dave?);
    let (alice_live, carol_live, dave_live) =
        (Listener::start(&gw, &alice)?, Listener::start(&gw, &carol)?, Listener::start(&gw, &dave)?);
    connected(&[&alice_live, &carol_live, &dave_live]).await?;

    // Bob's jobs fail with an error that quotes their payload (as serde's `invalid type: string "…"` or an
    // endpoint's answer would), retryably, so they open the kind's breaker: this test plays the engine.
    let bob_api = Api::new(&gw, &bob);
    for i in 0..2 {
        let body = json!({"engine": "local", "kind": "sleep", "payload": {"ms": MARKER}, "max_attempts": 1});
        assert_eq!(bob_api.post_job(&format!("private{i}"), &body).await?.status, StatusCode::CREATED);
    }
    let engine = EngineApi::new(&gw, &engine_token);
    let mut failed = 0;
    for _ in 0..20 {
        for lease in engine.claim(2, 1_000, 60_000).await? {
            let id = lease["job"]["id"].as_str().unwrap_or_default();
            let error = format!("invalid type: string {}, expected u64", lease["job"]["payload"]["ms"]);
            let outcome = json!({"lease_token": lease["lease_token"], "outcome": "failed", "error": error,
                                 "retryable": true});
            assert_eq!(engine.post(&format!("/internal/jobs/{id}/finish"), &outcome).await?.status, StatusCode::OK);
            failed += 1;
        }
        if failed == 2 {
            break;
        }
    }
    assert_eq!(failed, 2, "the engine was handed bob's two jobs");
    let dead = eventually(Duration::from_secs(30), "bob's jobs dead", || async {
        let jobs = bob_api.all_jobs(Some("dead")).await?;
        Ok((jobs.len() == 2).then_some(jobs))
    })
    .await?;
    assert!(dead[0]["error"].as_str().unwrap_or_default().contains(MARKER), "the job's own user sees it: {}", dead[0]);

    // The owner sees the breaker's last error, live and on the engine's breakers.
    eventually(Duration::from_secs(30), "the owner's engine.status with the last error", || async {
        Ok(engine_statuses(&alice_live, "local").iter().any(|s| s.to_string().contains(MARKER)).then_some(()))
    })
    .await?;
    let owned = Api::new(&gw, &alice).get("/engines/local/breakers").await?;
    assert_eq!(owned.status, StatusCode::OK);
    assert_eq!(owned.body["breakers"][0]["kind"], "sleep");
    assert!(owned.body["breakers"][0]["last_error"].as_str().unwrap_or_default().contains(MARKER), "{}", owned.body);
    for (who, token) in [("carol", &carol), ("dave", &dave)] {
        let refused = Api::new(&gw, token).get("/engines/local/breakers").await?;
        assert_eq!((refused.status, refused.code()), (StatusCode::FORBIDDEN, "not_owner"), "{who}");
    }
    let anonymous_breakers = reqwest::get(format!("{}/engines/local/breakers", gw.base)).await?;
    assert_eq!(anonymous_breakers.status(), StatusCode::UNAUTHORIZED);
    // An operator reads them with `engines:read`, not with another scope.
    for (scope, expected) in [("engines:read", StatusCode::OK), ("drain", StatusCode::FORBIDDEN)] {
        let admin = ws.gateway_cli_ok(&["admin", "token", "--scope", scope, "--ttl", "5m"])?;
        let read = Api::new(&gw, admin.trim()).get("/engines/local/breakers").await?;
        assert_eq!(read.status, expected, "{scope}: {}", read.body);
        assert_eq!(read.body.to_string().contains(MARKER), expected == StatusCode::OK, "{scope}");
    }

    // A whitelisted user learns that the breaker is open, for which kind, but not the error.
    let open = eventually(Duration::from_secs(30), "carol's engine.status with the open breaker", || async {
        let statuses = engine_statuses(&carol_live, "local");
        Ok(statuses.into_iter().find(|s| s["breakers"].as_array().is_some_and(|b| !b.is_empty())))
    })
    .await?;
    assert_eq!(
        (open["breakers"][0]["kind"].as_str(), open["breakers"][0]["state"].as_str()),
        (Some("sleep"), Some("open"))
    );
    let seen = |listener: &Listener| listener.events().iter().map(Value::to_string).collect::<Vec<_>>().join("\n");
    assert!(!seen(&carol_live).contains(MARKER), "carol received another user's error: {}", seen(&carol_live));
    // A user not allowed on the engine hears nothing of it.
    assert!(engine_statuses(&dave_live, "local").is_empty(), "{}", seen(&dave_live));
    assert!(!seen(&dave_live).contains(MARKER));

    // Nor does an anonymous caller: the breaker is there, its error is not.
    let status: Value = serde_json::from_str(&anonymous(&gw, "/status").await?)?;
    let local = status["engines"].as_array().into_iter().flatten().find(|e| e["id"] == "local").cloned();
    let local = local.unwrap_or_default();
    assert_eq!(local["breakers"][0]["kind"], "sleep");
    assert!(local["breakers"][0].get("last_error").is_none(), "{local}");
    for path in ["/status", "/metrics", "/drain"] {
        assert!(!anonymous(&gw, path).await?.contains(MARKER), "{path} carries a job's error");
    }
    Ok(())
}

/// Label values of one label in an exposition.
fn label_values(metrics: &str, label: &str) -> HashSet<String> {
    let needle = format!("{label}=\"");
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(&needle).and_then(|(_, rest)| rest.split_once('"')).map(|(v, _)| v.to_string()))
        .collect()
}

/// Sends one request as raw bytes (any method token, any path) and reads the answer to its end.
fn raw_request(addr: &str, method: &str, path: &str) -> anyhow::Result<()> {
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    Ok(())
}

#[tokio::test]
async fn user_chosen_kinds_methods_and_paths_cannot_grow_the_public_pages() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    let engine_token = ws.add_engine("local")?;
    let gw = Gateway::start(&ws, &["--breaker-failures", "1", "--rate-ip", "0", "--rate-user", "0"]).await?;
    let api = Api::new(&gw, &ws.mint("alice", "1h")?);
    let engine = EngineApi::new(&gw, &engine_token);
    let baseline = anonymous(&gw, "/metrics").await?.len();

    // 1,000 jobs of random kinds and one of a kind the engine knows; this test plays the engine: the random
    // kinds fail as retryable (which is what opens breakers: a permanent failure does not), `echo` succeeds.
    let random = || uuid::Uuid::new_v4().simple().to_string();
    let kinds: Vec<String> = (0..1_000).map(|_| format!("k{}", &random()[..16])).collect();
    let jobs: Vec<Value> = kinds
        .iter()
        .map(|kind| json!({"idempotency_key": kind, "engine": "local", "kind": kind, "max_attempts": 1}))
        .collect();
    let reply = api.post("/jobs/batch", &json!({ "jobs": jobs })).await?;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(api.post_job("fine", &json!({"engine": "local", "kind": "echo"})).await?.status, StatusCode::CREATED);
    let (mut finished, mut idle_rounds) = (0, 0);
    while finished < 1_001 {
        idle_rounds += 1;
        anyhow::ensure!(idle_rounds < 30, "the engine was handed {finished} of the 1,001 jobs");
        let leases = engine.claim(200, 1_000, 60_000).await?;
        for lease in &leases {
            let (id, token) = (lease["job"]["id"].as_str().unwrap_or_default(), &lease["lease_token"]);
            let outcome = if lease["job"]["kind"] == "echo" {
                json!({"lease_token": token, "outcome": "succeeded", "result": {}})
            } else {
                json!({"lease_token": token, "outcome": "failed", "error": "boom", "retryable": true})
            };
            let done = engine.post(&format!("/internal/jobs/{id}/finish"), &outcome).await?;
            assert_eq!(done.status, StatusCode::OK, "{}", done.body);
            finished += 1;
            idle_rounds = 0;
        }
    }

    // Requests with random method tokens and random paths, as raw bytes.
    let addr = gw.base.trim_start_matches("http://").to_string();
    let mut sent = Vec::new();
    for i in 0..400 {
        let (method, path) = (format!("M{}", random()[..12].to_uppercase()), format!("/{}/{}", random(), random()));
        let method = if i % 2 == 0 { method } else { "GET".to_string() };
        raw_request(&addr, &method, &path)?;
        sent.push(method);
        sent.push(path);
    }

    let metrics = anonymous(&gw, "/metrics").await?;
    let status = anonymous(&gw, "/status").await?;
    for text in kinds.iter().chain(&sent).filter(|t| t.as_str() != "GET") {
        let token = text.trim_start_matches('/').split('/').next().unwrap_or_default();
        assert!(!metrics.contains(token), "/metrics names {text:?}");
        assert!(!status.contains(token), "/status names {text:?}");
    }
    let methods = label_values(&metrics, "method");
    assert!(methods.is_subset(&["GET", "POST", "PUT", "DELETE", "other"].map(String::from).into()), "{methods:?}");
    assert!(methods.contains("other"), "the random methods are counted as `other`: {methods:?}");
    let kinds_shown = label_values(&metrics, "kind");
    assert_eq!(kinds_shown, ["echo", "other"].map(String::from).into(), "{metrics}");
    let routes = label_values(&metrics, "route");
    assert!(routes.contains("unmatched"), "{routes:?}");
    assert!(routes.iter().all(|r| r == "unmatched" || (r.starts_with('/') && r.len() < 64)), "{routes:?}");
    // The same bound as before any of it: a few more series, never one per kind, method or path.
    assert!(metrics.len() < baseline + 16 * 1024, "/metrics grew from {baseline} to {} bytes", metrics.len());
    let status: Value = serde_json::from_str(&status)?;
    let breakers = status["engines"][0]["breakers"].as_array().cloned().unwrap_or_default();
    assert_eq!(breakers.len(), 1, "{breakers:?}");
    assert_eq!((breakers[0]["kind"].as_str(), breakers[0]["breakers"].as_u64()), (Some("other"), Some(1_000)));
    Ok(())
}
