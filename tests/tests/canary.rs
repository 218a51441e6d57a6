//! Two gateway processes on one data directory, as in a canary upgrade: load split 90/10 with an engine attached
//! to each, the old gateway drained and stopped mid-load; an Idempotency-Key gives one job across both; an engine
//! waiting on one gateway is woken by an enqueue through the other; `--reuse-port`; and the schema
//! compatibility window (additive steps of a newer build are served, a breaking one is refused by name).

use std::collections::HashMap;
use std::time::Duration;

use flowork_tests::{Api, Engine, EngineApi, Gateway, Workspace, eventually, free_port};
use reqwest::StatusCode;
use serde_json::{Value, json};

const JOBS: usize = 600;

fn job(n: usize) -> Value {
    json!({"engine": "local", "kind": "sleep", "payload": {"ms": 5 + (n % 3)}})
}

fn millis(time: &Value) -> Option<i64> {
    flowork_common::timefmt::parse_ms(time.as_str()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_beside_the_old_gateway_loses_nothing_when_the_old_one_drains_and_stops() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    ws.add_engine("local")?;
    let token = ws.mint("alice", "1h")?;
    let mut old = Gateway::start(&ws, &["--drain-grace", "3s"]).await?;
    let canary = Gateway::start(&ws, &[]).await?;
    let mut old_engine = Engine::start(&ws, &old, "local", 4, &["--lease-ms", "3000", "--grace-ms", "10000"])?;
    let _canary_engine = Engine::start(&ws, &canary, "local", 4, &["--lease-ms", "3000"])?;
    let to_old = Api::new(&old, &token);
    let to_canary = Api::new(&canary, &token);

    // The same key through both gateways: one job.
    let first = to_old.post_job("same-key", &job(0)).await?;
    let second = to_canary.post_job("same-key", &job(0)).await?;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(second.status, StatusCode::OK, "the canary replays the old gateway's job");
    assert_eq!(first.body["id"], second.body["id"]);

    let admin = ws.gateway_cli_ok(&["admin", "token", "--scope", "drain", "--ttl", "5m"])?;
    let http = reqwest::Client::new();
    let mut acknowledged: HashMap<String, String> = HashMap::new();
    acknowledged.insert("same-key".into(), first.body["id"].as_str().unwrap_or_default().to_string());
    let mut sent_to = [0usize; 2];
    let mut moved_after_503 = 0;
    for n in 0..JOBS {
        if n == JOBS / 2 {
            let drained = http.post(format!("{}/admin/drain", old.base)).bearer_auth(admin.trim()).send().await?;
            assert_eq!(drained.status(), StatusCode::OK);
        }
        let key = format!("job-{n}");
        // A 90/10 split: nine of ten to the old build, one to the canary, as the proxy in deploy/ does.
        let (api, which) = if n % 10 == 9 { (&to_canary, 1) } else { (&to_old, 0) };
        sent_to[which] += 1;
        let mut reply = api.post_job(&key, &job(n)).await?;
        if reply.status == StatusCode::SERVICE_UNAVAILABLE {
            // The draining gateway refuses new work; the proxy (here, the client) sends it to the other one.
            assert_eq!(reply.code(), "draining");
            moved_after_503 += 1;
            reply = to_canary.post_job(&key, &job(n)).await?;
        }
        assert_eq!(reply.status, StatusCode::CREATED, "{key}: {}", reply.body);
        acknowledged.insert(key, reply.body["id"].as_str().unwrap_or_default().to_string());
    }
    // The old build goes: its engine stops after finishing what it runs, then the gateway itself.
    old_engine.process.signal("TERM")?;
    old.process.signal("TERM")?;

    let done = eventually(Duration::from_secs(120), "every acknowledged job to finish", || {
        let api = to_canary.clone();
        async move {
            let jobs = api.all_jobs(None).await?;
            let finished = jobs.iter().filter(|j| j["status"] == "succeeded").count();
            Ok((finished == JOBS + 1).then_some(jobs))
        }
    })
    .await?;
    let by_id: HashMap<&str, &Value> = done.iter().filter_map(|j| Some((j["id"].as_str()?, j))).collect();
    let mut lost = 0;
    let mut run_twice = 0;
    for id in acknowledged.values() {
        match by_id.get(id.as_str()) {
            Some(job) => {
                assert_eq!(job["status"], "succeeded", "{job}");
                let attempts = job["attempts"].as_u64().unwrap_or(0);
                // A second attempt of a sleep job only comes from a lease that lapsed.
                assert!(attempts <= 2, "{job}");
                if attempts > 1 {
                    run_twice += 1;
                }
            }
            None => lost += 1,
        }
    }
    assert_eq!(lost, 0);
    assert_eq!(done.len(), acknowledged.len(), "no job beyond the acknowledged ones");
    let audit = ws.gateway_cli(&["audit", "verify"])?;
    assert!(audit.status.success(), "audit verify: {}", String::from_utf8_lossy(&audit.stdout));
    println!(
        "canary: {} jobs acknowledged ({} sent to the old gateway, {} to the canary, {moved_after_503} moved \
         to the canary after the old one's 503 draining), lost {lost}, run twice {run_twice} (lease expiry)",
        acknowledged.len(),
        sent_to[0],
        sent_to[1]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_waiting_on_one_gateway_is_woken_by_an_enqueue_through_the_other() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    ws.add_engine("local")?;
    let token = ws.mint("alice", "1h")?;
    let a = Gateway::start(&ws, &[]).await?;
    let b = Gateway::start(&ws, &[]).await?;
    // One worker whose claims wait up to 20 s at gateway A: only a wake-up makes it claim sooner.
    let _engine = Engine::start(&ws, &a, "local", 1, &["--wait-ms", "20000"])?;
    let via_b = Api::new(&b, &token);
    let warm = via_b.post_job("warm", &json!({"engine": "local", "kind": "echo"})).await?;
    let warm_id = warm.body["id"].as_str().unwrap_or_default().to_string();
    wait_finished(&via_b, &warm_id).await?;
    let mut delays = Vec::new();
    for n in 0..30 {
        // Let the engine go back to waiting at A before the next enqueue through B.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let reply = via_b.post_job(&format!("wake-{n}"), &json!({"engine": "local", "kind": "echo"})).await?;
        assert_eq!(reply.status, StatusCode::CREATED);
        let id = reply.body["id"].as_str().unwrap_or_default().to_string();
        let job = wait_finished(&via_b, &id).await?;
        let delay = millis(&job["claimed_at"]).zip(millis(&job["enqueued_at"])).map(|(c, e)| c - e);
        delays.push(delay.unwrap_or(i64::MAX));
    }
    delays.sort_unstable();
    // Not a speed assertion: the claim would otherwise sit out its 20 s wait.
    assert!(delays.iter().all(|&d| d < 10_000), "claims were not woken: {delays:?}");
    println!(
        "cross-process wake-up (enqueue through B → claim through A), 30 jobs: median {} ms, p95 {} ms, max {} ms",
        delays[delays.len() / 2],
        delays[delays.len() * 95 / 100],
        delays[delays.len() - 1]
    );
    Ok(())
}

async fn wait_finished(api: &Api, id: &str) -> anyhow::Result<Value> {
    // Shorter than the engine's 20 s claim wait, so a missing wake-up fails here at once.
    eventually(Duration::from_secs(15), "the job to finish", || {
        let (api, id) = (api.clone(), id.to_string());
        async move {
            let reply = api.get(&format!("/jobs/{id}")).await?;
            Ok((reply.body["status"] == "succeeded").then_some(reply.body))
        }
    })
    .await
}

#[tokio::test]
async fn two_gateways_share_one_port_with_reuse_port() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    ws.add_engine("local")?;
    let listen = format!("127.0.0.1:{}", free_port()?);
    let first = Gateway::start_on(&ws, &listen, &["--reuse-port"]).await?;
    let second = Gateway::start_on(&ws, &listen, &["--reuse-port"]).await?;
    assert_eq!(first.base, second.base);
    let pids = [first.process.pid(), second.process.pid()];
    let status = reqwest::get(format!("{}/status", first.base)).await?;
    assert_eq!(status.status(), StatusCode::OK);
    // Without the flag the port is taken.
    let refused = Gateway::start_on(&ws, &listen, &[]).await;
    assert!(refused.is_err(), "a third gateway without --reuse-port must not bind the port");
    assert_ne!(pids[0], pids[1]);
    Ok(())
}

/// What a newer build leaves in a database: one more migration step, recorded with its compatibility and build.
fn newer_step(path: &std::path::Path, compat: &str, build: &str) -> anyhow::Result<()> {
    let conn = rusqlite::Connection::open(path)?;
    let version: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let next = version + 1;
    conn.execute_batch(&format!("CREATE TABLE test_newer_{next} (x INTEGER DEFAULT 0)"))?;
    conn.execute(
        "INSERT INTO schema_migrations (version, name, applied_at, compat, build) VALUES (?1, ?2, 0, ?3, ?4)",
        (next, format!("{next:04}_test_only"), compat, build),
    )?;
    conn.pragma_update(None, "user_version", next)?;
    Ok(())
}

/// The same in the PostgreSQL store (one schema for everything).
fn newer_postgres_step(url: &str, compat: &str, build: &str) -> anyhow::Result<()> {
    let sql = format!(
        "DO $$ DECLARE next INT := (SELECT max(version) + 1 FROM schema_migrations); BEGIN
           EXECUTE format('CREATE TABLE test_newer_%s (x INTEGER DEFAULT 0)', next);
           INSERT INTO schema_migrations (version, name, applied_at, compat, build)
           VALUES (next, lpad(next::TEXT, 4, '0') || '_test_only', 0, '{compat}', '{build}');
         END $$"
    );
    let status = std::process::Command::new("psql").args([url, "-q", "-v", "ON_ERROR_STOP=1", "-c", &sql]).status()?;
    anyhow::ensure!(status.success(), "psql failed");
    Ok(())
}

/// Leaves a newer build's step in the workspace's store (its control database and shard, or PostgreSQL).
fn newer_steps(ws: &Workspace, compat: &str, build: &str, shard_too: bool) -> anyhow::Result<()> {
    if let Some(url) = &ws.store {
        return newer_postgres_step(url, compat, build);
    }
    newer_step(&ws.data_dir().join("control.sqlite3"), compat, build)?;
    if shard_too {
        newer_step(&ws.data_dir().join("shards").join("local.sqlite3"), compat, build)?;
    }
    Ok(())
}

#[tokio::test]
async fn a_build_serves_additive_steps_of_a_newer_build_and_refuses_a_breaking_one_by_name() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    ws.add_engine("local")?;
    let token = ws.mint("alice", "1h")?;
    newer_steps(&ws, "additive", "9.1.0", true)?;
    let gw = Gateway::start(&ws, &[]).await?;
    let reply = Api::new(&gw, &token).post_job("k1", &json!({"engine": "local", "kind": "echo"})).await?;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    drop(gw);

    newer_steps(&ws, "breaking", "9.2.0", false)?;
    let refused = Gateway::start(&ws, &[]).await;
    let message = match refused {
        Ok(_) => anyhow::bail!("a gateway started on a schema with a breaking step it does not know"),
        Err(error) => error.to_string(),
    };
    assert!(message.contains("the oldest build that can run on it is 9.2.0"), "{message}");
    assert!(!message.contains("\"listening\""), "it refuses before it listens: {message}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_writing_one_shard_at_once_refuse_nothing_and_lose_nothing() -> anyhow::Result<()> {
    const CLIENTS: usize = 16;
    const PER_CLIENT: usize = 60;
    let ws = Workspace::new()?;
    ws.add_engine("local")?;
    let token = ws.mint("alice", "1h")?;
    let a = Gateway::start(&ws, &[]).await?;
    let b = Gateway::start(&ws, &[]).await?;
    let _engine_a = Engine::start(&ws, &a, "local", 4, &[])?;
    let _engine_b = Engine::start(&ws, &b, "local", 4, &[])?;
    // Half of the clients on each gateway, all on one shard, with keys that collide across the two halves: both
    // processes' writer threads contend for the same SQLite file the whole time.
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let api = Api::new(if client % 2 == 0 { &a } else { &b }, &token);
        tasks.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            for n in 0..PER_CLIENT {
                let key = format!("pair-{}-{n}", client / 2);
                let reply =
                    api.post_job(&key, &json!({"engine": "local", "kind": "echo", "payload": {"n": n}})).await?;
                answers.push((key, reply.status, reply.body["id"].as_str().unwrap_or_default().to_string()));
            }
            anyhow::Ok(answers)
        }));
    }
    let mut ids: HashMap<String, String> = HashMap::new();
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    for task in tasks {
        for (key, status, id) in task.await?? {
            *statuses.entry(status.as_u16()).or_default() += 1;
            if status == StatusCode::CREATED || status == StatusCode::OK {
                let first = ids.entry(key.clone()).or_insert_with(|| id.clone());
                assert_eq!(*first, id, "{key} gave two jobs");
            }
        }
    }
    // 201 for the first of a pair, 200 (replay) or 409 (the twin is still being written) for the second.
    let refused: usize = statuses.iter().filter(|(s, _)| !matches!(**s, 200 | 201 | 409)).map(|(_, n)| n).sum();
    assert_eq!(refused, 0, "answers: {statuses:?}");
    let expected = CLIENTS / 2 * PER_CLIENT;
    let jobs = eventually(Duration::from_secs(60), "every job to finish", || {
        let api = Api::new(&a, &token);
        async move {
            let jobs = api.all_jobs(Some("succeeded")).await?;
            Ok((jobs.len() >= expected).then_some(jobs))
        }
    })
    .await?;
    assert_eq!(jobs.len(), expected, "one job per key, none lost");
    println!("two writers: {} requests, answers {statuses:?}, {} jobs", CLIENTS * PER_CLIENT, jobs.len());
    Ok(())
}

#[tokio::test]
async fn a_lease_taken_through_one_gateway_fences_the_other() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    let engine_token = ws.add_engine("local")?;
    let token = ws.mint("alice", "1h")?;
    let a = Gateway::start(&ws, &[]).await?;
    let b = Gateway::start(&ws, &[]).await?;
    let posted = Api::new(&a, &token).post_job("fenced", &json!({"engine": "local", "kind": "echo"})).await?;
    assert_eq!(posted.status, StatusCode::CREATED);
    let (via_a, via_b) = (EngineApi::new(&a, &engine_token), EngineApi::new(&b, &engine_token));
    let first = via_a.claim(1, 2_000, 300).await?;
    assert_eq!(first.len(), 1);
    let id = first[0]["job"]["id"].as_str().unwrap_or_default().to_string();
    let stale = first[0]["lease_token"].as_str().unwrap_or_default().to_string();
    assert!(via_b.claim(1, 0, 300).await?.is_empty(), "a held lease is held for both gateways");
    // The lease lapses; the job is claimed again through the other gateway.
    let second = eventually(Duration::from_secs(10), "the job to be claimed again through B", || {
        let via_b = via_b.clone();
        async move {
            let leases = via_b.claim(1, 500, 60_000).await?;
            Ok((!leases.is_empty()).then_some(leases))
        }
    })
    .await?;
    assert_eq!(second[0]["job"]["id"], id.as_str());
    // The first holder's late report, through its own gateway, is refused.
    let late = via_a
        .post(&format!("/internal/jobs/{id}/finish"), &json!({"lease_token": stale, "outcome": "succeeded"}))
        .await?;
    assert_eq!((late.status, late.code()), (StatusCode::CONFLICT, "lease_lost"));
    let fresh = second[0]["lease_token"].as_str().unwrap_or_default();
    let done = via_a
        .post(&format!("/internal/jobs/{id}/finish"), &json!({"lease_token": fresh, "outcome": "succeeded"}))
        .await?;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    Ok(())
}
