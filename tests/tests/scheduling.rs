//! Scheduling on a shared engine with the real binaries: fair share against a flood, per-key limits and their
//! owner-only settings, and cron schedules over HTTP across a gateway restart.

use std::time::Duration;

use flowork_common::timefmt::parse_ms;
use flowork_tests::{Api, Engine, Gateway, Workspace, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Posts `count` jobs built by `body` through `POST /jobs/batch`, 1,000 at a time.
async fn batch(api: &Api, prefix: &str, count: usize, body: impl Fn(usize) -> Value) -> anyhow::Result<()> {
    let items: Vec<Value> = (0..count)
        .map(|i| {
            let mut item = body(i);
            item["idempotency_key"] = json!(format!("{prefix}-{i}"));
            item
        })
        .collect();
    for chunk in items.chunks(1_000) {
        let reply = api.post("/jobs/batch", &json!({ "jobs": chunk })).await?;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let results = reply.body["results"].as_array().cloned().unwrap_or_default();
        assert!(results.iter().all(|r| r["status"] == 201), "{}", reply.body);
    }
    Ok(())
}

fn ms(job: &Value, field: &str) -> i64 {
    job[field].as_str().and_then(parse_ms).unwrap_or_else(|| panic!("{field} missing in {job}"))
}

/// Alice's jobs queued before bob's few.
const FLOOD: usize = 1_000;

#[tokio::test]
async fn a_small_user_is_served_within_a_few_service_times_of_a_flood() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    ws.add_engine("shared")?;
    let gw = Gateway::start(&ws, &[]).await?;
    let alice = Api::new(&gw, &ws.mint("alice", "1h")?);
    let bob = Api::new(&gw, &ws.mint("bob", "1h")?);
    let sleep = |_| json!({"engine": "shared", "kind": "sleep", "payload": {"ms": 10}});
    batch(&alice, "flood", FLOOD, sleep).await?;
    batch(&bob, "small", 5, sleep).await?;
    // Before any engine runs, bob's first job is near the front, not behind the flood.
    let bob_queued = bob.all_jobs(Some("queued")).await?;
    let positions: Vec<u64> = bob_queued.iter().filter_map(|j| j["queue_position"].as_u64()).collect();
    assert_eq!(positions.len(), 5);
    assert!(positions.iter().all(|p| *p < 10), "bob's positions under the fair order: {positions:?}");

    let started = flowork_common::clock::system_now_ms();
    let _engine = Engine::start(&ws, &gw, "shared", 4, &["--min-workers", "4", "--max-workers", "4"])?;
    let bob_jobs = eventually(Duration::from_secs(60), "bob's jobs to finish", || async {
        let jobs = bob.all_jobs(Some("succeeded")).await?;
        Ok((jobs.len() == 5).then_some(jobs))
    })
    .await?;
    let bob_done = bob_jobs.iter().map(|j| ms(j, "finished_at")).max().unwrap_or(0);
    // Polled by the counts: listing the whole flood every 25 ms would take the debug gateway's time from the engine.
    // A liveness bound: a debug build on PostgreSQL beside a busy core runs the flood at ~20 jobs/s.
    eventually(Duration::from_secs(240), "alice's flood to finish", || async {
        Ok((alice.counts().await?["succeeded"] == FLOOD).then_some(()))
    })
    .await?;
    let alice_jobs = alice.all_jobs(Some("succeeded")).await?;
    let alice_done = alice_jobs.iter().map(|j| ms(j, "finished_at")).max().unwrap_or(0);
    let alice_before_bob = alice_jobs.iter().filter(|j| ms(j, "finished_at") <= bob_done).count();
    println!(
        "bob's 5 jobs done {} ms after the engine started; alice's {FLOOD} after {} ms; {alice_before_bob} of \
         alice's jobs finished before bob's last",
        bob_done - started,
        alice_done - started
    );
    // Fair order: bob's 5 jobs interleave with alice's first ones instead of waiting behind the whole flood.
    assert!(alice_before_bob <= 20, "{alice_before_bob} of alice's jobs ran before bob's last one");
    Ok(())
}

#[tokio::test]
async fn a_concurrency_key_runs_at_its_limit_without_holding_up_other_jobs() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    ws.add_engine("shared")?;
    let gw = Gateway::start(&ws, &[]).await?;
    let alice = Api::new(&gw, &ws.mint("alice", "1h")?);
    let bob = Api::new(&gw, &ws.mint("bob", "1h")?);
    let admin =
        Api::new(&gw, ws.gateway_cli_ok(&["admin", "token", "--scope", "engines:write", "--ttl", "5m"])?.trim());

    // Only the owner or an operator changes limits and weights, with checked values.
    let path = "/engines/shared/concurrency/acct-1";
    let denied = bob.put(path, &json!({"limit": 1})).await?;
    assert_eq!((denied.status, denied.code()), (StatusCode::FORBIDDEN, "not_owner"));
    let bad = alice.put(path, &json!({"limit": -1})).await?;
    assert_eq!((bad.status, bad.code()), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_limit"));
    let weight = bob.put("/engines/shared/weights/bob", &json!({"weight": 50})).await?;
    assert_eq!((weight.status, weight.code()), (StatusCode::FORBIDDEN, "not_owner"));
    let zero = alice.put("/engines/shared/weights/bob", &json!({"weight": 0})).await?;
    assert_eq!((zero.status, zero.code()), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_weight"));
    let anonymous = reqwest::Client::new().put(format!("{}{path}", gw.base)).json(&json!({"limit": 1})).send().await?;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let unknown = alice.put("/engines/nope/concurrency/acct-1", &json!({"limit": 1})).await?;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(admin.put("/engines/shared/weights/bob", &json!({"weight": 2})).await?.status, StatusCode::OK);
    let set = alice.put(path, &json!({"limit": 1})).await?;
    assert_eq!(set.status, StatusCode::OK, "{}", set.body);
    assert_eq!(set.body["key_limits"][0], json!({"key": "acct-1", "limit": 1, "running": 0}));
    assert_eq!(set.body["weights"]["bob"], 2);
    let long_key = alice.post_job("k", &json!({"engine": "shared", "kind": "echo", "concurrency_key": "a b"})).await?;
    assert_eq!((long_key.status, long_key.code()), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_concurrency_key"));

    let keyed = |_| json!({"engine": "shared", "kind": "sleep", "payload": {"ms": 300}, "concurrency_key": "acct-1"});
    batch(&alice, "keyed", 4, keyed).await?;
    batch(&alice, "free", 4, |_| json!({"engine": "shared", "kind": "sleep", "payload": {"ms": 50}})).await?;
    let _engine = Engine::start(&ws, &gw, "shared", 4, &["--min-workers", "4", "--max-workers", "4"])?;
    let jobs = eventually(Duration::from_secs(30), "all 8 jobs to finish", || async {
        let jobs = alice.all_jobs(Some("succeeded")).await?;
        Ok((jobs.len() == 8).then_some(jobs))
    })
    .await?;
    let mut keyed: Vec<(i64, i64)> = jobs
        .iter()
        .filter(|j| j["concurrency_key"] == "acct-1")
        .map(|j| (ms(j, "claimed_at"), ms(j, "finished_at")))
        .collect();
    keyed.sort();
    assert_eq!(keyed.len(), 4);
    for pair in keyed.windows(2) {
        assert!(pair[1].0 >= pair[0].1, "two acct-1 jobs overlapped: {keyed:?}");
    }
    let free_claimed = jobs.iter().filter(|j| j["concurrency_key"].is_null()).map(|j| ms(j, "claimed_at")).max();
    assert!(free_claimed.unwrap_or(i64::MAX) < keyed[1].0, "jobs without the key waited behind it: {keyed:?}");
    Ok(())
}

#[tokio::test]
async fn cron_schedules_tick_once_each_across_a_restart_and_refuse_bad_input() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    ws.add_engine("shared")?;
    let gw = Gateway::start(&ws, &["--schedule-grace", "30s"]).await?;
    let alice = Api::new(&gw, &ws.mint("alice", "1h")?);
    let bob = Api::new(&gw, &ws.mint("bob", "1h")?);
    let carol = Api::new(&gw, &ws.mint("carol", "1h")?);
    let every_second = json!({"engine": "shared", "kind": "echo", "payload": {"hello": 1}, "cron": "* * * * * *"});

    for (body, code) in [
        (json!({"engine": "shared", "kind": "echo", "cron": "61 * * * *"}), "invalid_cron"),
        (json!({"engine": "shared", "kind": "echo", "cron": "not a cron"}), "invalid_cron"),
        // A year field (croner's 7th) is not part of what the README documents.
        (json!({"engine": "shared", "kind": "echo", "cron": "0 0 0 1 1 * 2099"}), "invalid_cron"),
        (json!({"engine": "shared", "kind": "echo", "cron": "@reboot"}), "invalid_cron"),
        (json!({"engine": "shared", "kind": "echo", "cron": "* * * * *", "timezone": "Mars/Base"}), "invalid_timezone"),
        (json!({"engine": "shared", "kind": "echo", "cron": "* * * * *", "missed": "all"}), "invalid_missed"),
        (json!({"engine": "nope", "kind": "echo", "cron": "* * * * *"}), "unknown_engine"),
    ] {
        let reply = bob.post("/schedules", &body).await?;
        assert_eq!((reply.status, reply.code()), (StatusCode::UNPROCESSABLE_ENTITY, code), "{body}: {}", reply.body);
        assert!(!reply.body["message"].as_str().unwrap_or("").is_empty());
    }
    let seven =
        bob.post("/schedules", &json!({"engine": "shared", "kind": "echo", "cron": "0 0 0 1 1 * 2099"})).await?;
    assert!(seven.body["message"].as_str().unwrap_or("").contains("6 with seconds first"), "{}", seven.body);
    let hourly = bob.post("/schedules", &json!({"engine": "shared", "kind": "echo", "cron": "@hourly"})).await?;
    assert_eq!(hourly.status, StatusCode::CREATED, "{}", hourly.body);
    let hourly_id = hourly.body["id"].as_str().unwrap_or_default().to_string();
    assert_eq!(bob.delete(&format!("/schedules/{hourly_id}")).await?.status, StatusCode::OK);
    let outsider = carol.post("/schedules", &every_second).await?;
    assert_eq!((outsider.status, outsider.code()), (StatusCode::FORBIDDEN, "not_whitelisted"));

    let created = bob.post("/schedules", &json!({"timezone": "Europe/Berlin"}).merge(&every_second)).await?;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = created.body["id"].as_str().unwrap_or_default().to_string();
    let first_tick = ms(&created.body, "next_run_at");
    assert_eq!(bob.get("/schedules").await?.body["schedules"][0]["id"], id.as_str());
    assert_eq!(alice.get("/schedules").await?.body["schedules"], json!([]), "only the owner sees a schedule");
    assert_eq!(alice.delete(&format!("/schedules/{id}")).await?.status, StatusCode::NOT_FOUND);

    eventually(Duration::from_secs(10), "two ticks", || async {
        Ok((bob.all_jobs(None).await?.len() >= 2).then_some(()))
    })
    .await?;
    // Kill the gateway for a few ticks; within the grace, the restarted one fires them, once each.
    drop(gw);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let gw = Gateway::start(&ws, &["--schedule-grace", "30s"]).await?;
    let bob = Api::new(&gw, &bob.token);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let listed = bob.get("/schedules").await?;
    let last_tick = ms(&listed.body["schedules"][0], "last_run_at");
    let deleted = bob.delete(&format!("/schedules/{id}")).await?;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.body);
    assert_eq!(bob.delete(&format!("/schedules/{id}")).await?.status, StatusCode::NOT_FOUND);
    let jobs = bob.all_jobs(None).await?;
    // One job per second from the first tick to the last one fired (one more may fire before the delete).
    let ticks = (last_tick - first_tick) / 1_000 + 1;
    assert!(ticks >= 5, "ticks kept coming across the restart: {ticks}");
    let jobs_made = jobs.len() as i64;
    assert!(jobs_made == ticks || jobs_made == ticks + 1, "{jobs_made} jobs for {ticks} ticks");
    assert!(jobs.iter().all(|j| j["payload"] == json!({"hello": 1}) && j["user"] == "bob"));
    Ok(())
}

/// `{a} .merge(&b)`: b's fields with a's on top.
trait Merge {
    fn merge(self, base: &Value) -> Value;
}

impl Merge for Value {
    fn merge(self, base: &Value) -> Value {
        let mut merged = base.clone();
        if let (Some(target), Some(extra)) = (merged.as_object_mut(), self.as_object()) {
            target.extend(extra.clone());
        }
        merged
    }
}
