//! Operating jobs over real HTTP with a real engine: retry, delete, attempt history, filters, counts and bulk
//! actions; only the caller's jobs, every refusal a JSON error naming what is wrong.

use std::time::Duration;

use flowork_tests::{Api, Engine, Gateway, Workspace, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A job the engine cannot run (no handler): it ends `dead` after its single attempt.
fn doomed(kind: &str) -> Value {
    json!({"engine": "local", "kind": kind, "max_attempts": 1})
}

async fn id_of(api: &Api, key: &str, body: &Value) -> anyhow::Result<String> {
    let reply = api.post_job(key, body).await?;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    Ok(reply.body["id"].as_str().unwrap_or_default().to_string())
}

async fn wait_status(api: &Api, id: &str, status: &str) -> anyhow::Result<Value> {
    eventually(Duration::from_secs(30), &format!("job {id} to be {status}"), || async {
        let job = api.get(&format!("/jobs/{id}")).await?;
        Ok((job.body["status"] == status).then_some(job.body))
    })
    .await
}

#[tokio::test]
async fn a_dead_job_is_retried_deleted_and_its_attempts_shown_to_its_user_only() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    let engine_token = ws.add_engine("local")?;
    let gw = Gateway::start(&ws, &[]).await?;
    let alice = Api::new(&gw, &ws.mint("alice", "1h")?);
    let bob = Api::new(&gw, &ws.mint("bob", "1h")?);
    let _engine = Engine::start(&ws, &gw, "local", 1, &[])?;
    let _ = engine_token;

    let id = id_of(&alice, "doomed", &doomed("no-such-kind")).await?;
    wait_status(&alice, &id, "dead").await?;

    // Another user sees nothing of it: 404 everywhere, as for a missing job.
    for path in [format!("/jobs/{id}/retry")] {
        let reply = bob.post(&path, &json!({})).await?;
        assert_eq!((reply.status, reply.code()), (StatusCode::NOT_FOUND, "job_not_found"), "{path}");
    }
    let reply = bob.get(&format!("/jobs/{id}/attempts")).await?;
    assert_eq!((reply.status, reply.code()), (StatusCode::NOT_FOUND, "job_not_found"));
    let reply = bob.delete(&format!("/jobs/{id}")).await?;
    assert_eq!((reply.status, reply.code()), (StatusCode::NOT_FOUND, "job_not_found"));
    let reply = alice.post("/jobs/not-a-uuid/retry", &json!({})).await?;
    assert_eq!((reply.status, reply.code()), (StatusCode::NOT_FOUND, "job_not_found"));

    // A dead job cannot be deleted by a wrong verb on a live one, but is retried: same id, a fresh budget.
    let retried = alice.post(&format!("/jobs/{id}/retry"), &json!({})).await?;
    assert_eq!(retried.status, StatusCode::OK, "{}", retried.body);
    assert_eq!((retried.body["id"].as_str(), retried.body["attempts"].as_u64()), (Some(id.as_str()), Some(0)));
    let done = wait_status(&alice, &id, "dead").await?;
    assert_eq!(done["attempts"], 1, "one attempt of the fresh budget");
    let history = alice.get(&format!("/jobs/{id}/attempts")).await?;
    assert_eq!(history.status, StatusCode::OK, "{}", history.body);
    let attempts = history.body["attempts"].as_array().cloned().unwrap_or_default();
    assert_eq!(attempts.len(), 2, "both attempts are kept: {}", history.body);
    for (index, attempt) in attempts.iter().enumerate() {
        assert_eq!(attempt["number"], index + 1);
        assert_eq!(attempt["outcome"], "failed");
        assert!(attempt["error"].as_str().unwrap_or_default().contains("no handler"), "{attempt}");
        assert!(attempt["finished_at"].is_string() && attempt["started_at"].is_string(), "{attempt}");
    }

    // A queued job is neither retried nor deleted.
    let queued =
        id_of(&alice, "later", &json!({"engine": "local", "kind": "echo", "run_at": "2999-01-01T00:00:00Z"})).await?;
    let reply = alice.post(&format!("/jobs/{queued}/retry"), &json!({})).await?;
    assert_eq!((reply.status, reply.code()), (StatusCode::CONFLICT, "not_retryable"), "{}", reply.body);
    let reply = alice.delete(&format!("/jobs/{queued}")).await?;
    assert_eq!((reply.status, reply.code()), (StatusCode::CONFLICT, "job_not_final"), "{}", reply.body);
    assert!(reply.body["message"].as_str().unwrap_or_default().contains("queued"));

    // The dead one is deleted: 204, then gone, with its history.
    let reply = alice.delete(&format!("/jobs/{id}")).await?;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(alice.get(&format!("/jobs/{id}")).await?.status, StatusCode::NOT_FOUND);
    assert_eq!(alice.get(&format!("/jobs/{id}/attempts")).await?.status, StatusCode::NOT_FOUND);
    assert_eq!(alice.delete(&format!("/jobs/{id}")).await?.status, StatusCode::NOT_FOUND);
    Ok(())
}

#[tokio::test]
async fn listings_filter_and_count_and_bad_filters_name_the_field() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    ws.add_engine("local")?;
    let gw = Gateway::start(&ws, &[]).await?;
    let alice = Api::new(&gw, &ws.mint("alice", "1h")?);
    let bob = Api::new(&gw, &ws.mint("bob", "1h")?);
    let later = |kind: &str| json!({"engine": "local", "kind": kind, "run_at": "2999-01-01T00:00:00Z"});
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(id_of(&alice, &format!("j{i}"), &later(if i < 3 { "echo" } else { "sleep" })).await?);
    }
    id_of(&bob, "bob", &later("echo")).await?;
    for id in &ids[..2] {
        assert_eq!(alice.post(&format!("/jobs/{id}/cancel"), &json!({})).await?.status, StatusCode::OK);
    }
    let listed = |reply: flowork_tests::Reply| -> Vec<String> {
        reply.body["jobs"].as_array().into_iter().flatten().filter_map(|j| j["id"].as_str().map(String::from)).collect()
    };
    assert_eq!(listed(alice.get("/jobs?status=cancelled").await?), vec![ids[1].clone(), ids[0].clone()]);
    assert_eq!(listed(alice.get("/jobs?status=queued,cancelled&kind=echo").await?).len(), 3);
    assert_eq!(listed(alice.get("/jobs?kind=sleep").await?), vec![ids[4].clone(), ids[3].clone()]);
    assert_eq!(listed(alice.get(&format!("/jobs?id_prefix={}", &ids[2][..34])).await?), vec![ids[2].clone()]);
    assert_eq!(listed(alice.get("/jobs?after=2999-01-01T00:00:00Z").await?).len(), 0);
    assert_eq!(listed(alice.get("/jobs?before=2999-01-01T00:00:00Z&engine=local").await?).len(), 5);
    // Paging reaches every job.
    let first = alice.get("/jobs?limit=2").await?;
    let cursor = first.body["next_cursor"].as_str().unwrap_or_default().to_string();
    let second = alice.get(&format!("/jobs?limit=2&cursor={cursor}")).await?;
    assert_eq!(listed(second), vec![ids[2].clone(), ids[1].clone()]);

    let counts = alice.get("/jobs/counts").await?;
    assert_eq!(counts.status, StatusCode::OK, "{}", counts.body);
    assert_eq!(counts.body, json!({"queued": 3, "running": 0, "succeeded": 0, "dead": 0, "cancelled": 2}));
    assert_eq!(alice.get("/jobs/counts?engine=nowhere").await?.body["queued"], 0);
    assert_eq!(bob.get("/jobs/counts?engine=local").await?.body["queued"], 1, "bob counts only his own");

    for (query, code) in [
        ("status=finished", "invalid_status"),
        ("status=queued,,bogus", "invalid_status"),
        ("kind=Not%20A%20Kind", "invalid_kind"),
        ("engine=BAD", "invalid_engine"),
        ("after=yesterday", "invalid_after"),
        ("before=2026-13-01", "invalid_before"),
        ("id_prefix=zz", "invalid_id_prefix"),
        ("limit=0", "invalid_limit"),
        ("cursor=nope", "invalid_cursor"),
    ] {
        let reply = alice.get(&format!("/jobs?{query}")).await?;
        assert_eq!((reply.status, reply.code()), (StatusCode::BAD_REQUEST, code), "{query}: {}", reply.body);
        assert!(!reply.body["message"].as_str().unwrap_or_default().is_empty());
    }
    let reply = alice.get("/jobs/counts?engine=BAD").await?;
    assert_eq!((reply.status, reply.code()), (StatusCode::BAD_REQUEST, "invalid_engine"));
    Ok(())
}

#[tokio::test]
async fn bulk_actions_change_only_the_callers_jobs_and_refuse_bad_requests() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    ws.add_engine("local")?;
    let gw = Gateway::start(&ws, &[]).await?;
    let alice = Api::new(&gw, &ws.mint("alice", "1h")?);
    let bob = Api::new(&gw, &ws.mint("bob", "1h")?);
    let later = json!({"engine": "local", "kind": "echo", "run_at": "2999-01-01T00:00:00Z"});
    let items: Vec<Value> = (0..600)
        .map(|i| {
            let mut item = later.clone();
            item["idempotency_key"] = json!(format!("bulk-{i}"));
            item
        })
        .collect();
    let batch = alice.post("/jobs/batch", &json!({"jobs": items})).await?;
    assert_eq!(batch.status, StatusCode::OK, "{}", batch.body);
    let bobs = bob.post_job("bob", &later).await?.body["id"].as_str().unwrap_or_default().to_string();

    let cancel = alice.post("/jobs/bulk", &json!({"action": "cancel", "filter": {"engine": "local"}})).await?;
    assert_eq!(cancel.status, StatusCode::OK, "{}", cancel.body);
    assert_eq!(cancel.body, json!({"matched": 600, "changed": 600}));
    assert_eq!(bob.get(&format!("/jobs/{bobs}")).await?.body["status"], "queued", "bob's job untouched");
    // Bob's bulk action on alice's jobs by id changes nothing.
    let some: Vec<String> = alice
        .all_jobs(Some("cancelled"))
        .await?
        .iter()
        .take(3)
        .map(|j| j["id"].as_str().unwrap_or_default().to_string())
        .collect();
    let stranger = bob.post("/jobs/bulk", &json!({"action": "delete", "ids": some})).await?;
    assert_eq!(stranger.body, json!({"matched": 0, "changed": 0}));

    let retry = alice.post("/jobs/bulk", &json!({"action": "retry", "filter": {"status": "cancelled"}})).await?;
    assert_eq!(retry.body, json!({"matched": 600, "changed": 600}));
    let counts = alice.get("/jobs/counts").await?;
    assert_eq!((counts.body["queued"].as_u64(), counts.body["cancelled"].as_u64()), (Some(600), Some(0)));
    alice.post("/jobs/bulk", &json!({"action": "cancel", "ids": some})).await?;
    let deleted = alice.post("/jobs/bulk", &json!({"action": "delete", "ids": some})).await?;
    assert_eq!(deleted.body, json!({"matched": 3, "changed": 3}));
    assert_eq!(alice.get("/jobs/counts").await?.body["queued"], 597);

    let too_many: Vec<String> = (0..1001).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    for (body, code) in [
        (json!({"action": "purge", "ids": [bobs]}), "invalid_action"),
        (json!({"action": "retry"}), "invalid_bulk"),
        (json!({"action": "retry", "ids": [], }), "invalid_bulk"),
        (json!({"action": "retry", "ids": too_many}), "invalid_bulk"),
        (json!({"action": "retry", "ids": [bobs], "filter": {}}), "invalid_bulk"),
        (json!({"action": "retry", "filter": {"colour": "red"}}), "invalid_body"),
    ] {
        let reply = alice.post("/jobs/bulk", &body).await?;
        assert_eq!((reply.status, reply.code()), (StatusCode::UNPROCESSABLE_ENTITY, code), "{}", reply.body);
    }
    let reply = alice.post("/jobs/bulk", &json!({"action": "delete", "filter": {"status": "done"}})).await?;
    assert_eq!((reply.status, reply.code()), (StatusCode::BAD_REQUEST, "invalid_status"));
    Ok(())
}

#[tokio::test]
async fn stats_show_the_callers_jobs_per_minute_and_refuse_bad_windows() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    ws.add_engine("local")?;
    let gw = Gateway::start(&ws, &[]).await?;
    let alice = Api::new(&gw, &ws.mint("alice", "1h")?);
    let bob = Api::new(&gw, &ws.mint("bob", "1h")?);
    let _engine = Engine::start(&ws, &gw, "local", 2, &[])?;

    for n in 0..3 {
        let id = id_of(&alice, &format!("ok-{n}"), &json!({"engine": "local", "kind": "echo", "payload": n})).await?;
        wait_status(&alice, &id, "succeeded").await?;
    }
    let dead = id_of(&alice, "doomed", &doomed("no-such-kind")).await?;
    wait_status(&alice, &dead, "dead").await?;

    let stats = alice.get("/jobs/stats?engine=local&window=15m").await?;
    assert_eq!(stats.status, StatusCode::OK, "{}", stats.body);
    let body = &stats.body;
    assert_eq!((body["engine"].as_str(), body["window_seconds"].as_u64()), (Some("local"), Some(900)));
    assert_eq!((body["bucket_seconds"].as_u64(), body["buckets"].as_array().map(Vec::len)), (Some(60), Some(15)));
    let totals = &body["totals"];
    let counts = ["enqueued", "succeeded", "failed", "dead"].map(|field| totals[field].as_u64());
    assert_eq!(counts, [Some(4), Some(3), Some(1), Some(1)], "{totals}");
    assert!(totals["queue_ms"]["p50"].is_number() && totals["run_ms"]["p95"].is_number(), "{totals}");
    let per_minute: u64 = body["buckets"].as_array().into_iter().flatten().filter_map(|b| b["enqueued"].as_u64()).sum();
    assert_eq!(per_minute, 4, "the minutes add up to the totals");
    let newest = body["buckets"][14]["start"].as_str().unwrap_or_default();
    assert!(newest.ends_with(":00.000Z"), "minutes start on the minute: {newest}");

    // Without an engine: every engine of the caller; the default window is an hour.
    let all = alice.get("/jobs/stats").await?;
    assert_eq!((all.body["engine"].is_null(), all.body["window_seconds"].as_u64()), (true, Some(3_600)));
    assert_eq!(all.body["totals"]["enqueued"], 4);
    // Another user's figures are their own: none here.
    let theirs = bob.get("/jobs/stats?engine=local").await?;
    assert_eq!((theirs.status, theirs.body["totals"]["enqueued"].as_u64()), (StatusCode::OK, Some(0)));

    for (query, code) in [
        ("window=30s", "invalid_window"),
        ("window=25h", "invalid_window"),
        ("window=soon", "invalid_window"),
        ("engine=Bad!", "invalid_engine"),
    ] {
        let reply = alice.get(&format!("/jobs/stats?{query}")).await?;
        assert_eq!((reply.status, reply.code()), (StatusCode::BAD_REQUEST, code), "{query}: {}", reply.body);
        assert!(reply.body["message"].as_str().is_some_and(|m| !m.is_empty()), "{query}");
    }
    let anonymous = reqwest::get(format!("{}/jobs/stats", gw.base)).await?;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    Ok(())
}
