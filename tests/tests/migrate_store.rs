//! `migrate-store`: a populated SQLite data directory moves into PostgreSQL and is served from there as it was —
//! the same jobs in the same states, the same tokens and keys, idempotency keys that still replay, a schedule, a
//! whitelist and the audit chain; a second run copies nothing twice. Runs in the PostgreSQL pass of the tests.

use std::time::Duration;

use flowork_tests::{Api, Engine, EngineApi, Gateway, Workspace, eventually, new_postgres_database};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn by_id(jobs: Vec<Value>) -> std::collections::BTreeMap<String, Value> {
    jobs.into_iter().map(|j| (j["id"].as_str().unwrap_or_default().to_string(), j)).collect()
}

#[tokio::test]
async fn a_populated_data_directory_moves_to_postgres_and_serves_the_same_jobs() -> anyhow::Result<()> {
    let postgres = new_postgres_database()?;
    let source = Workspace::sqlite()?;
    let engine_token = source.add_engine("shared")?;
    let alice_token = source.mint("alice", "1h")?;
    let bob_token = source.mint("bob", "1h")?;

    // Jobs in every state: succeeded, dead, running (leased), cancelled, queued; plus a schedule and a weight.
    let mut gw = Gateway::start(&source, &[]).await?;
    let (alice, bob) = (Api::new(&gw, &alice_token), Api::new(&gw, &bob_token));
    for i in 0..12 {
        let reply = alice
            .post_job(&format!("a-{i}"), &json!({"engine": "shared", "kind": "echo", "payload": {"i": i}}))
            .await?;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    }
    let engine = EngineApi::new(&gw, &engine_token);
    let leases = engine.claim(3, 0, 60_000).await?;
    assert_eq!(leases.len(), 3);
    let finish = |lease: &Value, outcome: Value| {
        let (id, token) =
            (lease["job"]["id"].as_str().unwrap_or_default(), lease["lease_token"].as_str().unwrap_or_default());
        let mut body = outcome;
        body["lease_token"] = json!(token);
        (format!("/internal/jobs/{id}/finish"), body)
    };
    let (path, body) = finish(&leases[0], json!({"outcome": "succeeded", "result": {"ok": true}}));
    assert_eq!(engine.post(&path, &body).await?.status, StatusCode::OK);
    let (path, body) = finish(&leases[1], json!({"outcome": "failed", "error": "boom", "retryable": false}));
    assert_eq!(engine.post(&path, &body).await?.status, StatusCode::OK);
    let running_id = leases[2]["job"]["id"].as_str().unwrap_or_default().to_string();
    let running_token = leases[2]["lease_token"].as_str().unwrap_or_default().to_string();
    let queued = alice.all_jobs(Some("queued")).await?;
    let cancel_id = queued[0]["id"].as_str().unwrap_or_default().to_string();
    assert_eq!(alice.post(&format!("/jobs/{cancel_id}/cancel"), &json!({})).await?.status, StatusCode::OK);
    let bob_job = bob.post_job("b-0", &json!({"engine": "shared", "kind": "echo", "payload": "bob"})).await?;
    assert_eq!(bob_job.status, StatusCode::CREATED);
    let schedule = json!({"engine": "shared", "kind": "echo", "payload": {}, "cron": "0 0 1 1 *", "timezone": "UTC"});
    assert_eq!(alice.post("/schedules", &schedule).await?.status, StatusCode::CREATED);
    let before_alice = by_id(alice.all_jobs(None).await?);
    let before_bob = by_id(bob.all_jobs(None).await?);
    let schedules_before = alice.get("/schedules").await?.body;
    // An API key and a revoked token move too.
    let key = alice.post("/auth/keys", &json!({"name": "moved", "scopes": ["jobs:read"]})).await?;
    assert_eq!(key.status, StatusCode::CREATED, "{}", key.body);
    let key = key.body["key"].as_str().unwrap_or_default().to_string();
    let minted: Value = serde_json::from_str(&source.gateway_cli_ok(&["token", "mint", "--user", "carol", "--json"])?)?;
    let carol_token = minted["access_token"].as_str().unwrap_or_default().to_string();
    source.gateway_cli_ok(&["token", "revoke", "--jti", minted["jti"].as_str().unwrap_or_default()])?;
    // Stopped (a job is still leased, so no drain wait): the SQLite data must not move during the copy.
    gw.process.signal("KILL")?;
    gw.process.wait_exit(Duration::from_secs(10)).await?;
    drop(gw);

    // Move, twice: the second run finds everything there.
    let data_dir = source.data_dir();
    let run = || {
        std::process::Command::new(flowork_tests::bin("flowork-gateway"))
            .args(["migrate-store", "--data-dir"])
            .arg(&data_dir)
            .args(["--to", &postgres])
            .output()
    };
    let first = run()?;
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let first = String::from_utf8_lossy(&first.stdout).to_string();
    assert!(first.contains("13 jobs (13 new this run)"), "{first}");
    let second = run()?;
    assert!(second.status.success(), "{}", String::from_utf8_lossy(&second.stderr));
    let second = String::from_utf8_lossy(&second.stdout).to_string();
    assert!(second.contains("13 jobs (0 new this run), 0 other rows new"), "{second}");
    println!("migrate-store: {}", first.trim());

    // Served from PostgreSQL: the same jobs, with the tokens minted before the move.
    let mut target = Workspace::sqlite()?;
    target.store = Some(postgres.clone());
    std::fs::copy(source.token_file("shared"), target.token_file("shared"))?;
    let gw = Gateway::start(&target, &["--reap-interval-ms", "100"]).await?;
    let (alice, bob) = (Api::new(&gw, &alice_token), Api::new(&gw, &bob_token));
    assert_eq!(by_id(alice.all_jobs(None).await?), before_alice, "alice's jobs, field for field");
    assert_eq!(by_id(bob.all_jobs(None).await?), before_bob, "bob's jobs, field for field");
    assert_eq!(alice.get("/schedules").await?.body, schedules_before);
    assert_eq!(Api::new(&gw, &key).get("/jobs").await?.status, StatusCode::OK, "the API key moved");
    assert_eq!(Api::new(&gw, &carol_token).get("/jobs").await?.code(), "token_revoked", "the revocation moved");
    // Keys replay; the lease taken before the move still fences.
    let replay = alice.post_job("a-3", &json!({"engine": "shared", "kind": "echo", "payload": {"i": 3}})).await?;
    assert_eq!(replay.status, StatusCode::OK, "{}", replay.body);
    let engine = EngineApi::new(&gw, &engine_token);
    let stale = engine
        .post(
            &format!("/internal/jobs/{running_id}/heartbeat"),
            &json!({"lease_token": "not-the-token", "lease_ms": 30000}),
        )
        .await?;
    assert_eq!(stale.status, StatusCode::CONFLICT, "{}", stale.body);
    let live = engine
        .post(
            &format!("/internal/jobs/{running_id}/finish"),
            &json!({"lease_token": running_token, "outcome": "succeeded"}),
        )
        .await?;
    assert_eq!(live.status, StatusCode::OK, "the lease moved with its job: {}", live.body);
    // The queued jobs run through PostgreSQL.
    let _engine = Engine::start(&target, &gw, "shared", 2, &[])?;
    eventually(Duration::from_secs(30), "the moved queue to drain", || async {
        let queued = alice.all_jobs(Some("queued")).await?.len() + bob.all_jobs(Some("queued")).await?.len();
        Ok((queued == 0).then_some(()))
    })
    .await?;
    let verify = target.gateway_cli(&["audit", "verify"])?;
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
    Ok(())
}
