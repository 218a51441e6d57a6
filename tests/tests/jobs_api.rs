//! The public jobs API over real HTTP: idempotency, validation, isolation between users, auth failures.

use std::time::Duration;

use flowork_tests::{Api, EngineApi, Gateway, Reply, Workspace};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn setup() -> anyhow::Result<(Workspace, Gateway, Api)> {
    let ws = Workspace::new()?;
    ws.add_engine("local")?;
    let token = ws.mint("alice", "1h")?;
    let gateway = Gateway::start(&ws, &[]).await?;
    let api = Api::new(&gateway, &token);
    Ok((ws, gateway, api))
}

fn echo(payload: Value) -> Value {
    json!({"engine": "local", "kind": "echo", "payload": payload})
}

#[tokio::test]
async fn idempotency_key_gives_one_job_and_replays_it() -> anyhow::Result<()> {
    let (_ws, _gw, api) = setup().await?;
    let first = api.post_job("order-1", &echo(json!({"n": 1}))).await?;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let id = first.body["id"].as_str().unwrap().to_string();
    assert_eq!(first.headers["location"], format!("/jobs/{id}").as_str());
    assert_eq!(first.body["status"], "queued");
    assert!(first.headers.get("idempotent-replayed").is_none());

    // Same key, same request (keys reordered, whitespace differs): the original job.
    let replay = api
        .http
        .post(format!("{}/jobs", api.base))
        .bearer_auth(&api.token)
        .header("idempotency-key", "order-1")
        .header("content-type", "application/json")
        .body(r#"{ "payload": {"n": 1}, "kind": "echo", "engine": "local" }"#)
        .send()
        .await?;
    assert_eq!(replay.status(), StatusCode::OK);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let replay: Value = replay.json().await?;
    assert_eq!(replay["id"], id.as_str());

    // Same key, different request: refused.
    let reused = api.post_job("order-1", &echo(json!({"n": 2}))).await?;
    assert_eq!(reused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reused.code(), "idempotency_key_reused");

    // Keys are per user: bob's "order-1" is his own job.
    let bob = Api { token: _ws.mint("bob", "1h")?, ..api.clone() };
    let bobs = bob.post_job("order-1", &echo(json!({"n": 1}))).await?;
    assert_eq!(bobs.status, StatusCode::CREATED);
    assert_ne!(bobs.body["id"], id.as_str());

    assert_eq!(api.all_jobs(None).await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn concurrent_identical_requests_create_exactly_one_job() -> anyhow::Result<()> {
    let (_ws, _gw, api) = setup().await?;
    for round in 0..5 {
        let key = format!("race-{round}");
        let mut tasks = Vec::new();
        for _ in 0..40 {
            let (api, key) = (api.clone(), key.clone());
            tasks.push(tokio::spawn(async move { api.post_job(&key, &echo(json!({"round": round}))).await }));
        }
        let mut created = 0;
        let mut ids = std::collections::HashSet::new();
        for task in tasks {
            let reply = task.await??;
            match reply.status {
                StatusCode::CREATED => {
                    created += 1;
                    ids.insert(reply.body["id"].as_str().unwrap().to_string());
                }
                StatusCode::OK => {
                    ids.insert(reply.body["id"].as_str().unwrap().to_string());
                }
                StatusCode::CONFLICT => {
                    assert_eq!(reply.code(), "idempotency_key_in_progress");
                    assert!(reply.headers.get("retry-after").is_some());
                }
                other => panic!("unexpected {other}: {}", reply.body),
            }
        }
        assert_eq!(created, 1, "round {round}: exactly one 201");
        assert_eq!(ids.len(), 1, "round {round}: every success names the same job");
    }
    assert_eq!(api.all_jobs(None).await?.len(), 5);
    Ok(())
}

#[tokio::test]
async fn bad_input_gets_a_clear_error() -> anyhow::Result<()> {
    let (_ws, gw, api) = setup().await?;
    let raw = |key: Option<&str>, content_type: Option<&str>, body: String| {
        let mut request = api.http.post(format!("{}/jobs", gw.base)).bearer_auth(&api.token).body(body);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        request.send()
    };
    let expect = |status: StatusCode, code: &'static str| {
        move |response: reqwest::Response| async move {
            assert_eq!(response.status(), status);
            let body: Value = response.json().await.expect("error bodies are JSON");
            assert_eq!(body["error"], code, "{body}");
            assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
        }
    };
    let valid = echo(json!({})).to_string();

    expect(StatusCode::BAD_REQUEST, "missing_idempotency_key")(
        raw(None, Some("application/json"), valid.clone()).await?,
    )
    .await;
    expect(StatusCode::BAD_REQUEST, "invalid_idempotency_key")(
        raw(Some("has space"), Some("application/json"), valid.clone()).await?,
    )
    .await;
    expect(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")(
        raw(Some("k"), Some("text/plain"), valid.clone()).await?,
    )
    .await;
    expect(StatusCode::BAD_REQUEST, "malformed_json")(raw(Some("k"), Some("application/json"), "{nope".into()).await?)
        .await;
    expect(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body")(
        raw(Some("k"), Some("application/json"), r#"{"engine":"local"}"#.into()).await?,
    )
    .await;
    expect(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body")(
        raw(Some("k"), Some("application/json"), r#"{"engine":"local","kind":"echo","surprise":1}"#.into()).await?,
    )
    .await;
    let big = json!({"engine": "local", "kind": "echo", "payload": "x".repeat(300 * 1024)}).to_string();
    expect(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")(raw(Some("k"), Some("application/json"), big).await?)
        .await;
    // Beyond the 4 MiB body limit the gateway answers 413 from Content-Length alone and closes the connection,
    // so a client still writing may see the close instead of the answer; either way nothing is stored.
    let huge = json!({"engine": "local", "kind": "echo", "payload": "x".repeat(5 * 1024 * 1024)}).to_string();
    // A client of its own, so the connection the gateway closes is not reused by the requests below.
    let oversized = reqwest::Client::new()
        .post(format!("{}/jobs", gw.base))
        .bearer_auth(&api.token)
        .header("idempotency-key", "k")
        .header("content-type", "application/json")
        .body(huge)
        .send();
    match oversized.await {
        Ok(response) => expect(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")(response).await,
        Err(error) => assert!(error.is_request(), "{error}"),
    }

    let unknown = api.post_job("k", &json!({"engine": "nowhere", "kind": "echo"})).await?;
    assert_eq!((unknown.status, unknown.code()), (StatusCode::UNPROCESSABLE_ENTITY, "unknown_engine"));
    let bad_engine = api.post_job("k", &json!({"engine": "../etc", "kind": "echo"})).await?;
    assert_eq!((bad_engine.status, bad_engine.code()), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_engine"));
    let bad_time = api.post_job("k", &json!({"engine": "local", "kind": "echo", "run_at": "tomorrow"})).await?;
    assert_eq!((bad_time.status, bad_time.code()), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_run_at"));
    let bad_attempts = api.post_job("k", &json!({"engine": "local", "kind": "echo", "max_attempts": 0})).await?;
    assert_eq!(bad_attempts.code(), "invalid_max_attempts");
    let negative = api.post_job("k", &json!({"engine": "local", "kind": "echo", "timeout_ms": -5})).await?;
    assert_eq!((negative.status, negative.code()), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"));

    for (path, code) in [("/jobs/not-a-uuid", "job_not_found"), ("/nowhere", "route_not_found")] {
        let reply = api.get(path).await?;
        assert_eq!((reply.status, reply.code()), (StatusCode::NOT_FOUND, code));
    }
    let reply = api.get("/jobs?status=finished").await?;
    assert_eq!((reply.status, reply.code()), (StatusCode::BAD_REQUEST, "invalid_status"));
    let reply = api.get("/jobs?limit=0").await?;
    assert_eq!((reply.status, reply.code()), (StatusCode::BAD_REQUEST, "invalid_limit"));
    let reply = api.get("/jobs?limit=many").await?;
    assert_eq!((reply.status, reply.code()), (StatusCode::BAD_REQUEST, "invalid_query"));
    let reply = api.get("/jobs?cursor=zzz").await?;
    assert_eq!((reply.status, reply.code()), (StatusCode::BAD_REQUEST, "invalid_cursor"));
    let reply = api.http.delete(format!("{}/jobs", gw.base)).send().await?;
    assert_eq!(reply.status(), StatusCode::METHOD_NOT_ALLOWED);

    // Nothing of the above was stored.
    assert!(api.all_jobs(None).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn users_see_only_their_own_jobs_and_cancel_queued_ones() -> anyhow::Result<()> {
    let (ws, _gw, alice) = setup().await?;
    let bob = Api { token: ws.mint("bob", "1h")?, ..alice.clone() };
    let job = alice.post_job("a1", &echo(json!({"secret": "alice's"}))).await?;
    let id = job.body["id"].as_str().unwrap();

    let stolen = bob.get(&format!("/jobs/{id}")).await?;
    assert_eq!((stolen.status, stolen.code()), (StatusCode::NOT_FOUND, "job_not_found"));
    let cancel_foreign = bob.post(&format!("/jobs/{id}/cancel"), &json!({})).await?;
    assert_eq!(cancel_foreign.status, StatusCode::NOT_FOUND);
    assert!(bob.all_jobs(None).await?.is_empty());

    let mine = alice.get(&format!("/jobs/{id}")).await?;
    assert_eq!(mine.status, StatusCode::OK);
    assert_eq!(mine.body["payload"]["secret"], "alice's");
    assert_eq!(mine.body["user"], "alice");

    let cancelled = alice.post(&format!("/jobs/{id}/cancel"), &json!({})).await?;
    assert_eq!(cancelled.status, StatusCode::OK);
    assert_eq!(cancelled.body["status"], "cancelled");
    assert!(cancelled.body["finished_at"].is_string());
    let again = alice.post(&format!("/jobs/{id}/cancel"), &json!({})).await?;
    assert_eq!((again.status, again.code()), (StatusCode::CONFLICT, "not_cancellable"));
    Ok(())
}

#[tokio::test]
async fn listing_pages_newest_first_and_filters() -> anyhow::Result<()> {
    let (ws, _gw, api) = setup().await?;
    ws.add_engine("second")?;
    let mut ids = Vec::new();
    for i in 0..7 {
        let engine = if i % 2 == 0 { "local" } else { "second" };
        let reply = api.post_job(&format!("k{i}"), &json!({"engine": engine, "kind": "echo", "payload": i})).await?;
        assert_eq!(reply.status, StatusCode::CREATED);
        ids.push(reply.body["id"].as_str().unwrap().to_string());
    }
    api.post(&format!("/jobs/{}/cancel", ids[0]), &json!({})).await?;

    let mut seen = Vec::new();
    let mut path = "/jobs?limit=3".to_string();
    loop {
        let page = api.get(&path).await?;
        assert_eq!(page.status, StatusCode::OK);
        let jobs = page.body["jobs"].as_array().unwrap();
        assert!(jobs.len() <= 3);
        seen.extend(jobs.iter().map(|j| j["id"].as_str().unwrap().to_string()));
        match page.body["next_cursor"].as_str() {
            Some(cursor) => path = format!("/jobs?limit=3&cursor={cursor}"),
            None => break,
        }
    }
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);

    let second = api.get("/jobs?engine=second").await?;
    assert_eq!(second.body["jobs"].as_array().unwrap().len(), 3);
    let cancelled = api.get("/jobs?status=cancelled").await?;
    assert_eq!(cancelled.body["jobs"][0]["id"], ids[0].as_str());
    assert_eq!(cancelled.body["jobs"].as_array().unwrap().len(), 1);
    let queued_local = api.get("/jobs?status=queued&engine=local").await?;
    assert_eq!(queued_local.body["jobs"].as_array().unwrap().len(), 3);
    Ok(())
}

/// Asserts a refusal's code, and that its message says `words` without the libraries' own wording.
fn plain_refusal(reply: &Reply, status: StatusCode, code: &str, words: &[&str]) {
    assert_eq!((reply.status, reply.code()), (status, code), "{}", reply.body);
    let message = reply.body["message"].as_str().unwrap_or_default();
    for word in words {
        assert!(message.contains(word), "{message:?} does not say {word:?}");
    }
    for internal in
        ["Base64", "unknown variant", "invalid type", "at line", "Failed to deserialize", "expected u32", "i32"]
    {
        assert!(!message.contains(internal), "{message:?} shows a library's wording ({internal:?})");
    }
}

#[tokio::test]
async fn refusals_name_the_field_and_what_it_accepts_in_plain_words() -> anyhow::Result<()> {
    let (ws, gw, api) = setup().await?;
    let reply = api.post_job("k1", &json!({"engine": "local", "kind": "echo", "priority": "high"})).await?;
    plain_refusal(&reply, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", &["`priority`", "whole number", "string"]);
    let reply = api.post_job("k2", &json!({"engine": "local", "kind": "echo", "max_attempts": -1})).await?;
    plain_refusal(&reply, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", &["`max_attempts`", "0 or more"]);
    let reply = api.post_job("k3", &json!({"engine": "local", "kind": "echo", "surprise": 1})).await?;
    plain_refusal(&reply, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", &["`surprise`", "allowed", "priority"]);
    let reply = api.post_job("k4", &json!({"kind": "echo"})).await?;
    plain_refusal(&reply, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", &["`engine` is required"]);
    let batch = json!({"jobs": [{"engine": "local", "kind": "echo", "idempotency_key": "b1", "timeout_ms": "soon"}]});
    let reply = api.post("/jobs/batch", &batch).await?;
    let result = &reply.body["results"][0];
    let status = StatusCode::from_u16(result["status"].as_u64().unwrap_or_default() as u16)?;
    let item = Reply { status, headers: reply.headers.clone(), body: result.clone() };
    plain_refusal(&item, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", &["`timeout_ms`", "whole number"]);
    let reply = api.get("/jobs?limit=many").await?;
    plain_refusal(&reply, StatusCode::BAD_REQUEST, "invalid_query", &["`limit`", "whole number"]);

    // An unknown enum variant, on the engine API.
    let engine = EngineApi::new(&gw, &ws.add_engine("second")?);
    let finish = json!({"lease_token": "x", "outcome": "none"});
    let reply = engine.post("/internal/jobs/0190f5f0-0000-7000-8000-000000000000/finish", &finish).await?;
    plain_refusal(
        &reply,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
        &["`outcome`", "succeeded, failed, cancelled", "\"none\""],
    );

    // A JWT whose segments are not base64url.
    let reply = Reply::read(
        api.http.get(format!("{}/jobs", gw.base)).header("authorization", "Bearer eyJ.a.b.c!").send().await?,
    )
    .await?;
    plain_refusal(&reply, StatusCode::UNAUTHORIZED, "invalid_token", &["well-formed JWT"]);
    let reply = Reply::read(
        api.http.get(format!("{}/jobs", gw.base)).header("authorization", "Bearer e30.!!!.x").send().await?,
    )
    .await?;
    plain_refusal(&reply, StatusCode::UNAUTHORIZED, "invalid_token", &["well-formed JWT"]);
    Ok(())
}

#[tokio::test]
async fn every_user_auth_failure_is_a_401_with_its_code() -> anyhow::Result<()> {
    let (ws, gw, api) = setup().await?;
    let body = echo(json!({}));
    let send = |auth: Option<String>| {
        let mut request = api.http.post(format!("{}/jobs", gw.base)).header("idempotency-key", "k").json(&body);
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        request.send()
    };
    let check = |response: reqwest::Response, code: &'static str| async move {
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], code, "{body}");
    };
    check(send(None).await?, "missing_token").await;
    check(send(Some("Basic YWxpY2U6cGFzcw==".into())).await?, "malformed_authorization").await;
    check(send(Some("Bearer not.a.jwt".into())).await?, "invalid_token").await;
    let mut tampered = api.token.clone();
    tampered.insert(tampered.len() - 3, 'x');
    check(send(Some(format!("Bearer {tampered}"))).await?, "invalid_token").await;
    let other = Workspace::new()?;
    let foreign = other.mint("alice", "1h")?;
    check(send(Some(format!("Bearer {foreign}"))).await?, "invalid_token").await;
    let short = ws.mint("alice", "1s")?;
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    check(send(Some(format!("Bearer {short}"))).await?, "token_expired").await;
    // GET endpoints are guarded the same way.
    let anonymous = api.http.get(format!("{}/jobs", gw.base)).send().await?;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert!(api.all_jobs(None).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn jobs_survive_a_gateway_restart() -> anyhow::Result<()> {
    let (ws, gw, api) = setup().await?;
    let created = api.post_job("persist", &echo(json!({"keep": true}))).await?;
    let id = created.body["id"].as_str().unwrap().to_string();
    drop(gw);
    let gw = Gateway::start(&ws, &[]).await?;
    let api = Api::new(&gw, &api.token);
    let job = api.get(&format!("/jobs/{id}")).await?;
    assert_eq!(job.status, StatusCode::OK);
    assert_eq!(job.body["payload"]["keep"], true);
    let replay = api.post_job("persist", &echo(json!({"keep": true}))).await?;
    assert_eq!((replay.status, replay.body["id"].as_str()), (StatusCode::OK, Some(id.as_str())));
    Ok(())
}

#[tokio::test]
async fn a_batch_answers_per_item_in_order_and_replays_like_single_posts() -> anyhow::Result<()> {
    let (_ws, _gw, api) = setup().await?;
    let items = json!({"jobs": [
        {"idempotency_key": "b1", "engine": "local", "kind": "echo", "payload": 1},
        {"idempotency_key": "b2", "engine": "local", "kind": "echo", "payload": 2},
        {"idempotency_key": "b1", "engine": "local", "kind": "echo", "payload": 1},
        {"idempotency_key": "b3", "engine": "local", "kind": "Bad Kind"},
        {"idempotency_key": "b4", "engine": "nowhere", "kind": "echo"},
        {"engine": "local", "kind": "echo"},
        {"idempotency_key": "b2", "engine": "local", "kind": "echo", "payload": "different"},
        "not an object"
    ]});
    let reply = api.post("/jobs/batch", &items).await?;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let results = reply.body["results"].as_array().unwrap();
    let statuses: Vec<u64> = results.iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, vec![201, 201, 200, 422, 422, 400, 422, 422]);
    assert_eq!(results[2]["job"]["id"], results[0]["job"]["id"], "a repeated key in one batch is a replay");
    assert_eq!(results[3]["error"], "invalid_kind");
    assert_eq!(results[4]["error"], "unknown_engine");
    assert_eq!(results[5]["error"], "missing_idempotency_key");
    assert_eq!(results[6]["error"], "idempotency_key_reused");
    assert_eq!(api.all_jobs(None).await?.len(), 2);

    // The same batch again creates nothing new.
    let again = api.post("/jobs/batch", &items).await?;
    let statuses: Vec<u64> =
        again.body["results"].as_array().unwrap().iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(&statuses[..3], &[200, 200, 200]);
    assert_eq!(api.all_jobs(None).await?.len(), 2);

    let too_many: Vec<Value> =
        (0..1_001).map(|i| json!({"idempotency_key": format!("m{i}"), "engine": "local", "kind": "echo"})).collect();
    let refused = api.post("/jobs/batch", &json!({"jobs": too_many})).await?;
    assert_eq!((refused.status, refused.code()), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_batch"));
    let thousand: Vec<Value> =
        (0..1_000).map(|i| json!({"idempotency_key": format!("k{i}"), "engine": "local", "kind": "echo"})).collect();
    let accepted = api.post("/jobs/batch", &json!({"jobs": thousand})).await?;
    assert!(accepted.body["results"].as_array().unwrap().iter().all(|r| r["status"] == 201));
    assert_eq!(api.all_jobs(None).await?.len(), 1_002);
    Ok(())
}
