//! Admission control, drain and status v2 with the real binaries: caps with a computed Retry-After, the
//! per-user cap, drain (admin and SIGTERM), queue positions, and the autoscaler seen through `/status`.

use std::time::Duration;

use flowork_tests::{Api, Engine, Gateway, Reply, Workspace, eventually, free_port};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn sleep_job(ms: u64) -> Value {
    json!({"engine": "local", "kind": "sleep", "payload": {"ms": ms}})
}

async fn status(gw: &Gateway) -> anyhow::Result<Value> {
    Ok(reqwest::get(format!("{}/status", gw.base)).await?.json().await?)
}

fn retry_after(reply: &Reply) -> u64 {
    reply.headers["retry-after"].to_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_full_queue_answers_429_with_a_retry_after_that_follows_the_drain_rate() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    ws.add_engine("local")?;
    let gw = Gateway::start(&ws, &["--max-queue-depth", "20"]).await?;
    let api = Api::new(&gw, &ws.mint("alice", "1h")?);
    for i in 0..20 {
        assert_eq!(api.post_job(&format!("j{i}"), &sleep_job(500)).await?.status, StatusCode::CREATED);
    }
    let full = api.post_job("j20", &sleep_job(500)).await?;
    assert_eq!((full.status, full.code()), (StatusCode::TOO_MANY_REQUESTS, "queue_full"));
    assert_eq!(retry_after(&full), 5, "nobody drains this queue yet: no rate to go by, a moderate wait");
    let metrics = reqwest::get(format!("{}/metrics", gw.base)).await?.text().await?;
    assert!(metrics.contains(r#"flowork_refusals_total{status="429",code="queue_full"} 1"#), "{metrics}");
    // A replay of an accepted job is answered even when the queue is full.
    let replay = api.post_job("j3", &sleep_job(500)).await?;
    assert_eq!(replay.status, StatusCode::OK);

    // One worker starts draining, a job every half second or so; refill to the cap. The wait is the time until
    // *one* place frees (about half a second, so 1 s), not the time to empty the queue (20 jobs, ~10 s).
    let _engine = Engine::start(&ws, &gw, "local", 1, &[])?;
    eventually(Duration::from_secs(30), "some drain", || async {
        Ok((status(&gw).await?["engines"][0]["capacity"]["sustainable_rate_per_s"].as_f64() > Some(0.5)).then_some(()))
    })
    .await?;
    let mut i = 100;
    let refused = loop {
        let reply = api.post_job(&format!("j{i}"), &sleep_job(500)).await?;
        i += 1;
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            break reply;
        }
        assert_eq!(reply.status, StatusCode::CREATED);
    };
    let rate = status(&gw).await?["engines"][0]["capacity"]["sustainable_rate_per_s"].as_f64().unwrap_or(0.0);
    let wait = retry_after(&refused);
    assert!(wait <= 2, "one place frees within a second or two at {rate:.1} jobs/s, not the whole queue: {wait}");
    Ok(())
}

#[tokio::test]
async fn the_batch_path_takes_the_total_cap_and_its_retry_after_like_post_jobs() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    ws.add_engine("local")?;
    ws.add_engine("other")?;
    let gw = Gateway::start(&ws, &["--max-total-depth", "4"]).await?;
    let api = Api::new(&gw, &ws.mint("alice", "1h")?);
    let item = |key: &str, engine: &str| json!({"engine": engine, "kind": "echo", "idempotency_key": key});
    for (i, engine) in ["local", "other", "local"].iter().enumerate() {
        assert_eq!(api.post_job(&format!("t{i}"), &json!({"engine": engine, "kind": "echo"})).await?.status, 201);
    }
    // Room for one more: the first item goes in, the rest is refused as POST /jobs would refuse it.
    let partly = api
        .post("/jobs/batch", &json!({"jobs": [item("b0", "other"), item("b1", "local"), item("b2", "other")]}))
        .await?;
    assert_eq!(partly.status, StatusCode::OK, "{}", partly.body);
    let results = partly.body["results"].as_array().unwrap();
    assert_eq!(results[0]["status"], 201, "{results:?}");
    for refused in &results[1..] {
        assert_eq!((refused["status"].as_u64(), refused["error"].as_str()), (Some(429), Some("total_queue_full")));
        assert_eq!(refused["retry_after"], 5, "nobody drains: the same wait POST /jobs gives");
    }
    // Full: a batch that can store nothing is a 429 with Retry-After and a JSON error, like POST /jobs.
    let single = api.post_job("t9", &json!({"engine": "local", "kind": "echo"})).await?;
    assert_eq!((single.status, single.code()), (StatusCode::TOO_MANY_REQUESTS, "total_queue_full"));
    let batch = api.post("/jobs/batch", &json!({"jobs": [item("b3", "local"), item("b4", "other")]})).await?;
    assert_eq!((batch.status, batch.code()), (StatusCode::TOO_MANY_REQUESTS, "total_queue_full"), "{}", batch.body);
    assert!(batch.body["message"].as_str().is_some_and(|m| m.contains("cap")), "{}", batch.body);
    assert_eq!(retry_after(&batch), retry_after(&single));
    // A replay of an accepted item is still answered.
    let replay = api.post("/jobs/batch", &json!({"jobs": [item("b0", "other"), item("b5", "local")]})).await?;
    assert_eq!(replay.status, StatusCode::OK, "{}", replay.body);
    assert_eq!(replay.body["results"][0]["status"], 200);
    assert_eq!(replay.body["results"][1]["status"], 429);
    assert_eq!(api.all_jobs(None).await?.len(), 4, "the cap held");
    Ok(())
}

#[tokio::test]
async fn one_user_cannot_fill_an_engine_for_everyone() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    ws.add_engine("local")?;
    let gw = Gateway::start(&ws, &["--max-user-inflight", "3"]).await?;
    let alice = Api::new(&gw, &ws.mint("alice", "1h")?);
    let bob = Api::new(&gw, &ws.mint("bob", "1h")?);
    for i in 0..3 {
        assert_eq!(alice.post_job(&format!("a{i}"), &sleep_job(1)).await?.status, StatusCode::CREATED);
    }
    let capped = alice.post_job("a3", &sleep_job(1)).await?;
    assert_eq!((capped.status, capped.code()), (StatusCode::TOO_MANY_REQUESTS, "user_inflight_limit"));
    assert!(capped.headers.get("retry-after").is_some());
    assert_eq!(bob.post_job("b0", &sleep_job(1)).await?.status, StatusCode::CREATED, "bob has his own allowance");
    // Cancelling frees a place.
    let first = alice.all_jobs(Some("queued")).await?.pop().unwrap();
    alice.post(&format!("/jobs/{}/cancel", first["id"].as_str().unwrap()), &json!({})).await?;
    assert_eq!(alice.post_job("a4", &sleep_job(1)).await?.status, StatusCode::CREATED);
    Ok(())
}

#[tokio::test]
async fn the_total_cap_spans_engines() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    ws.add_engine("local")?;
    ws.add_engine("other")?;
    let gw = Gateway::start(&ws, &["--max-total-depth", "4"]).await?;
    let api = Api::new(&gw, &ws.mint("alice", "1h")?);
    for (i, engine) in ["local", "other", "local", "other"].iter().enumerate() {
        let reply = api.post_job(&format!("t{i}"), &json!({"engine": engine, "kind": "echo"})).await?;
        assert_eq!(reply.status, StatusCode::CREATED);
    }
    let over = api.post_job("t4", &json!({"engine": "other", "kind": "echo"})).await?;
    assert_eq!((over.status, over.code()), (StatusCode::TOO_MANY_REQUESTS, "total_queue_full"));
    Ok(())
}

#[tokio::test]
async fn admin_drain_refuses_new_jobs_while_engines_finish_the_queue() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    ws.add_engine("local")?;
    let gw = Gateway::start(&ws, &[]).await?;
    let api = Api::new(&gw, &ws.mint("alice", "1h")?);
    for i in 0..5 {
        api.post_job(&format!("q{i}"), &sleep_job(200)).await?;
    }
    let http = reqwest::Client::new();
    let wrong = ws.gateway_cli_ok(&["admin", "token", "--scope", "engines:read", "--ttl", "5m"])?;
    let refused = http.post(format!("{}/admin/drain", gw.base)).bearer_auth(wrong.trim()).send().await?;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let admin = ws.gateway_cli_ok(&["admin", "token", "--scope", "drain", "--ttl", "5m"])?;
    let drained: Value =
        http.post(format!("{}/admin/drain", gw.base)).bearer_auth(admin.trim()).send().await?.json().await?;
    assert_eq!(drained["draining"], true);
    assert_eq!(drained["queued"], 5);

    let new = api.post_job("new", &sleep_job(1)).await?;
    assert_eq!((new.status, new.code()), (StatusCode::SERVICE_UNAVAILABLE, "draining"));
    assert!(new.headers.get("retry-after").is_some());
    assert_eq!(api.post_job("q1", &sleep_job(200)).await?.status, StatusCode::OK, "replays still reconcile");
    // The batch path passes the same door: new items are refused with the drain's wait, a replay is answered, and
    // a batch with nothing to replay is a 503 as a whole.
    let item = |key: &str| {
        let mut job = sleep_job(200);
        job["idempotency_key"] = json!(key);
        job
    };
    let batch = api.post("/jobs/batch", &json!({"jobs": [item("q2"), item("new2")]})).await?;
    assert_eq!(batch.status, StatusCode::OK, "{}", batch.body);
    assert_eq!(batch.body["results"][0]["status"], 200, "{}", batch.body);
    assert_eq!(batch.body["results"][0]["replayed"], true, "{}", batch.body);
    let refused = &batch.body["results"][1];
    assert_eq!((refused["status"].as_u64(), refused["error"].as_str()), (Some(503), Some("draining")), "{refused}");
    assert!(refused["retry_after"].as_u64().is_some_and(|s| s > 0), "{refused}");
    let whole = api.post("/jobs/batch", &json!({"jobs": [item("new3")]})).await?;
    assert_eq!((whole.status, whole.code()), (StatusCode::SERVICE_UNAVAILABLE, "draining"), "{}", whole.body);
    assert!(whole.headers.get("retry-after").is_some());
    assert_eq!(reqwest::get(format!("{}/readyz", gw.base)).await?.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reqwest::get(format!("{}/healthz", gw.base)).await?.status(), StatusCode::OK);

    // Engines keep claiming and finishing during the drain.
    let _engine = Engine::start(&ws, &gw, "local", 2, &[])?;
    eventually(Duration::from_secs(30), "the queue to drain", || async {
        let drain: Value = reqwest::get(format!("{}/drain", gw.base)).await?.json().await?;
        Ok((drain["queued"] == 0 && drain["running"] == 0).then_some(drain))
    })
    .await?;
    assert_eq!(api.all_jobs(Some("succeeded")).await?.len(), 5);

    let resumed: Value =
        http.delete(format!("{}/admin/drain", gw.base)).bearer_auth(admin.trim()).send().await?.json().await?;
    assert_eq!(resumed["draining"], false);
    assert_eq!(api.post_job("after", &sleep_job(1)).await?.status, StatusCode::CREATED);
    assert_eq!(reqwest::get(format!("{}/readyz", gw.base)).await?.status(), StatusCode::OK);
    Ok(())
}

#[tokio::test]
async fn sigterm_waits_for_running_jobs_and_queued_ones_run_after_a_restart() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    ws.add_engine("local")?;
    let listen = format!("127.0.0.1:{}", free_port()?);
    let mut gw = Gateway::start_on(&ws, &listen, &[]).await?;
    let api = Api::new(&gw, &ws.mint("alice", "1h")?);
    let _engine = Engine::start(&ws, &gw, "local", 1, &[])?;
    for i in 0..3 {
        api.post_job(&format!("s{i}"), &sleep_job(1_500)).await?;
    }
    eventually(Duration::from_secs(20), "one running", || async {
        Ok((api.all_jobs(Some("running")).await?.len() == 1).then_some(()))
    })
    .await?;
    gw.process.signal("TERM")?;
    let code = gw.process.wait_exit(Duration::from_secs(30)).await?;
    assert_eq!(code, Some(0), "{}", gw.process.log_text());

    // Restart on the same address: the running job had finished, the queued ones run now.
    let gw = Gateway::start_on(&ws, &listen, &[]).await?;
    let api = Api::new(&gw, &api.token);
    let first = api.all_jobs(Some("succeeded")).await?;
    assert_eq!(first.len(), 1, "the job running at SIGTERM finished before the gateway exited");
    eventually(Duration::from_secs(60), "the queued jobs to run after the restart", || async {
        Ok((api.all_jobs(Some("succeeded")).await?.len() == 3).then_some(()))
    })
    .await?;
    assert!(api.all_jobs(None).await?.iter().all(|j| j["attempts"] == 1), "nothing ran twice");
    Ok(())
}

#[tokio::test]
async fn status_shows_engines_and_queued_jobs_know_their_position() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    ws.add_engine("local")?;
    let gw = Gateway::start(&ws, &[]).await?;
    let api = Api::new(&gw, &ws.mint("alice", "1h")?);
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(api.post_job(&format!("p{i}"), &sleep_job(1)).await?.body["id"].as_str().unwrap().to_string());
    }
    let urgent = api.post_job("urgent", &json!({"engine": "local", "kind": "echo", "priority": 5})).await?;
    assert_eq!(urgent.status, StatusCode::CREATED);
    for (i, id) in ids.iter().enumerate() {
        let job = api.get(&format!("/jobs/{id}")).await?;
        assert_eq!(job.body["queue_position"], (i + 1) as u64, "the higher-priority job goes first");
    }
    let before = status(&gw).await?;
    assert_eq!(before["store"], if flowork_tests::on_postgres() { "postgres" } else { "sqlite" });
    assert_eq!(before["engines"][0]["online"], false);
    assert_eq!(before["engines"][0]["queued"], 4);

    let _engine = Engine::start(&ws, &gw, "local", 3, &[])?;
    let seen = eventually(Duration::from_secs(30), "the engine to report", || async {
        let s = status(&gw).await?;
        let engine = &s["engines"][0];
        Ok((engine["online"] == true && engine["queued"] == 0 && engine["running"] == 0).then_some(s))
    })
    .await?;
    let engine = &seen["engines"][0];
    assert_eq!(engine["workers"]["current"], 3);
    assert!(engine["queue_latency_ms"]["p95"].as_i64().is_some());
    assert!(engine["capacity"]["sustainable_rate_per_s"].as_f64().is_some());
    assert_eq!(seen["draining"], false);
    let done = api.get(&format!("/jobs/{}", ids[0])).await?;
    assert!(done.body.get("queue_position").is_none(), "only queued jobs have a position");
    Ok(())
}

#[tokio::test]
async fn a_burst_scales_the_engine_up_and_quiet_scales_it_back_down() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    ws.add_engine("local")?;
    let gw = Gateway::start(&ws, &[]).await?;
    let api = Api::new(&gw, &ws.mint("alice", "1h")?);
    // A 200 ms target: the burst (150 × 40 ms = 6 s of work on one worker) is far above 3× it, a quiet trickle far
    // below 0.3× it (60 ms) even in a debug build on PostgreSQL on a busy machine.
    let knobs =
        ["--min-workers", "1", "--max-workers", "4", "--slo-target-latency", "200", "--autoscale-window", "300ms"];
    let _engine = Engine::start(&ws, &gw, "local", 1, &knobs)?;
    let workers = |s: &Value| s["engines"][0]["workers"]["current"].as_u64().unwrap_or(0);
    for i in 0..150 {
        api.post_job(&format!("burst{i}"), &sleep_job(40)).await?;
    }
    // Generous bounds: on a loaded CI machine the windows stretch; the test waits only as long as it must.
    eventually(Duration::from_secs(120), "scale up", || async {
        let s = status(&gw).await?;
        Ok((workers(&s) > 1).then_some(()))
    })
    .await?;
    eventually(Duration::from_secs(180), "scale back down when quiet", || async {
        // Read first, then add the next trickling job (claims carry the report): the job posted last time has had
        // a poll interval to be claimed, so an empty queue is seen even when claims are slow.
        let s = status(&gw).await?;
        if workers(&s) == 1 && s["engines"][0]["queued"] == 0 {
            return Ok(Some(()));
        }
        api.post_job(&format!("tick{}", uuid_like()), &sleep_job(1)).await?;
        Ok(None)
    })
    .await?;
    Ok(())
}

fn uuid_like() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}
