//! The engine protocol over real HTTP, with the test playing the engine: exclusive leases, long-poll
//! wake-up, lease expiry, fencing, retries with backoff, and engine-token failures.

use std::collections::HashSet;
use std::time::Duration;

use flowork_common::timefmt::parse_ms;
use flowork_tests::{Api, EngineApi, Gateway, Workspace, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};

struct Setup {
    ws: Workspace,
    gw: Gateway,
    api: Api,
    engine: EngineApi,
}

async fn setup(extra: &[&str]) -> anyhow::Result<Setup> {
    let ws = Workspace::new()?;
    let engine_token = ws.add_engine("local")?;
    let token = ws.mint("alice", "1h")?;
    let gw = Gateway::start(&ws, extra).await?;
    let api = Api::new(&gw, &token);
    let engine = EngineApi::new(&gw, &engine_token);
    Ok(Setup { ws, gw, api, engine })
}

async fn enqueue(api: &Api, key: &str, extra: Value) -> anyhow::Result<String> {
    let mut body = json!({"engine": "local", "kind": "echo", "payload": key});
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    let reply = api.post_job(key, &body).await?;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    Ok(reply.body["id"].as_str().unwrap().to_string())
}

fn lease_of(lease: &Value) -> (String, String) {
    (lease["job"]["id"].as_str().unwrap().to_string(), lease["lease_token"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn a_job_is_never_leased_to_two_claims_at_once() -> anyhow::Result<()> {
    let s = setup(&[]).await?;
    let mut expected = HashSet::new();
    for i in 0..300 {
        expected.insert(enqueue(&s.api, &format!("j{i}"), json!({})).await?);
    }
    let mut claimers = Vec::new();
    for _ in 0..8 {
        let engine = EngineApi::new(&s.gw, &s.engine.token);
        claimers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let leases = engine.claim(7, 0, 60_000).await?;
                if leases.is_empty() {
                    return anyhow::Ok(mine);
                }
                mine.extend(leases.iter().map(|l| lease_of(l).0));
            }
        }));
    }
    let mut seen = HashSet::new();
    let mut total = 0;
    for claimer in claimers {
        for id in claimer.await?? {
            total += 1;
            assert!(seen.insert(id.clone()), "job {id} was leased twice");
        }
    }
    assert_eq!(total, 300);
    assert_eq!(seen, expected);
    Ok(())
}

#[tokio::test]
async fn a_waiting_claim_is_woken_by_an_enqueue() -> anyhow::Result<()> {
    let s = setup(&[]).await?;
    let engine = EngineApi::new(&s.gw, &s.engine.token);
    let waiting = tokio::spawn(async move { engine.claim(1, 30_000, 60_000).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the claim must wait while the queue is empty");
    let id = enqueue(&s.api, "wake", json!({})).await?;
    // A claim that only looked again at the end of its 30 s wait would not be back within 10 s.
    let leases = tokio::time::timeout(Duration::from_secs(10), waiting).await???;
    assert_eq!(leases.len(), 1);
    assert_eq!(lease_of(&leases[0]).0, id);
    Ok(())
}

#[tokio::test]
async fn delayed_jobs_wait_for_run_at() -> anyhow::Result<()> {
    let s = setup(&[]).await?;
    let run_at = flowork_common::timefmt::format_ms(flowork_common::clock::system_now_ms() + 1_500);
    let id = enqueue(&s.api, "later", json!({"run_at": run_at})).await?;
    assert!(s.engine.claim(1, 0, 60_000).await?.is_empty(), "not runnable before run_at");
    let leases = s.engine.claim(1, 10_000, 60_000).await?;
    assert_eq!(leases.len(), 1, "a waiting claim picks it up once due");
    assert_eq!(lease_of(&leases[0]).0, id);
    let claimed_at = parse_ms(leases[0]["job"]["claimed_at"].as_str().unwrap()).unwrap();
    assert!(claimed_at >= parse_ms(&run_at).unwrap());
    Ok(())
}

#[tokio::test]
async fn an_expired_lease_requeues_and_the_stale_holder_is_fenced_off() -> anyhow::Result<()> {
    let s = setup(&["--reap-interval-ms", "50"]).await?;
    let id = enqueue(&s.api, "fence", json!({})).await?;
    let first = s.engine.claim(1, 0, 300).await?;
    let (_, stale_token) = lease_of(&first[0]);
    assert_eq!(first[0]["job"]["attempts"], 1);

    // The holder stops heartbeating: the reaper puts the job back, counting the attempt.
    let requeued = eventually(Duration::from_secs(10), "requeue", || async {
        let job = s.api.get(&format!("/jobs/{id}")).await?;
        Ok((job.body["status"] == "queued").then_some(job.body))
    })
    .await?;
    assert_eq!(requeued["attempts"], 1);
    assert!(requeued["error"].as_str().unwrap().contains("lease expired"));

    let second = s.engine.claim(1, 5_000, 60_000).await?;
    let (second_id, fresh_token) = lease_of(&second[0]);
    assert_eq!(second_id, id);
    assert_eq!(second[0]["job"]["attempts"], 2);
    assert_ne!(fresh_token, stale_token);

    // The stale holder wakes up: its heartbeat and its finish are refused.
    let hb = s
        .engine
        .post(&format!("/internal/jobs/{id}/heartbeat"), &json!({"lease_token": stale_token, "lease_ms": 60_000}))
        .await?;
    assert_eq!((hb.status, hb.code()), (StatusCode::CONFLICT, "lease_lost"));
    let late = s
        .engine
        .post(
            &format!("/internal/jobs/{id}/finish"),
            &json!({"lease_token": stale_token, "outcome": "succeeded", "result": "stale"}),
        )
        .await?;
    assert_eq!((late.status, late.code()), (StatusCode::CONFLICT, "lease_lost"));

    // The current holder heartbeats and finishes.
    let hb = s
        .engine
        .post(&format!("/internal/jobs/{id}/heartbeat"), &json!({"lease_token": fresh_token, "lease_ms": 60_000}))
        .await?;
    assert_eq!(hb.status, StatusCode::OK);
    let done = s
        .engine
        .post(
            &format!("/internal/jobs/{id}/finish"),
            &json!({"lease_token": fresh_token, "outcome": "succeeded", "result": {"ok": 1}}),
        )
        .await?;
    assert_eq!(done.status, StatusCode::OK);
    assert_eq!(done.body["status"], "succeeded");
    let job = s.api.get(&format!("/jobs/{id}")).await?;
    assert_eq!(job.body["result"]["ok"], 1);
    assert_eq!(job.body["status"], "succeeded");

    // Finishing twice is refused too.
    let twice = s
        .engine
        .post(&format!("/internal/jobs/{id}/finish"), &json!({"lease_token": fresh_token, "outcome": "succeeded"}))
        .await?;
    assert_eq!(twice.status, StatusCode::CONFLICT);
    Ok(())
}

#[tokio::test]
async fn lease_expiry_on_the_last_attempt_makes_the_job_dead() -> anyhow::Result<()> {
    let s = setup(&["--reap-interval-ms", "50"]).await?;
    let id = enqueue(&s.api, "once", json!({"max_attempts": 1})).await?;
    assert_eq!(s.engine.claim(1, 0, 200).await?.len(), 1);
    let job = eventually(Duration::from_secs(10), "dead", || async {
        let job = s.api.get(&format!("/jobs/{id}")).await?;
        Ok((job.body["status"] == "dead").then_some(job.body))
    })
    .await?;
    assert_eq!(job["attempts"], 1);
    assert!(job["finished_at"].is_string());
    Ok(())
}

#[tokio::test]
async fn failures_retry_with_bounded_backoff_until_attempts_run_out() -> anyhow::Result<()> {
    let s = setup(&["--retry-base-ms", "200", "--retry-cap-ms", "1000"]).await?;
    let id = enqueue(&s.api, "flaky", json!({"max_attempts": 3})).await?;
    for attempt in 1..=3u32 {
        let leases = s.engine.claim(1, 10_000, 60_000).await?;
        assert_eq!(leases.len(), 1, "attempt {attempt}");
        let (_, token) = lease_of(&leases[0]);
        assert_eq!(leases[0]["job"]["attempts"], attempt);
        let before = flowork_common::clock::system_now_ms();
        let reply = s
            .engine
            .post(
                &format!("/internal/jobs/{id}/finish"),
                &json!({"lease_token": token, "outcome": "failed", "error": "boom", "retryable": true}),
            )
            .await?;
        assert_eq!(reply.status, StatusCode::OK);
        if attempt < 3 {
            assert_eq!(reply.body["status"], "queued");
            let run_at = parse_ms(reply.body["run_at"].as_str().unwrap()).unwrap();
            let ceiling = (200u64 << (attempt - 1)).min(1000) as i64;
            assert!(
                run_at >= before - 5 && run_at <= flowork_common::clock::system_now_ms() + ceiling + 5,
                "attempt {attempt}: run_at out of bounds"
            );
        } else {
            assert_eq!(reply.body["status"], "dead", "no attempts left");
        }
    }
    let job = s.api.get(&format!("/jobs/{id}")).await?;
    assert_eq!((job.body["status"].as_str(), job.body["attempts"].as_u64()), (Some("dead"), Some(3)));
    assert_eq!(job.body["error"], "boom");

    // A failure that is not retryable is final at once.
    let id = enqueue(&s.api, "bad", json!({"max_attempts": 5})).await?;
    let leases = s.engine.claim(1, 5_000, 60_000).await?;
    let (_, token) = lease_of(&leases[0]);
    let reply = s
        .engine
        .post(
            &format!("/internal/jobs/{id}/finish"),
            &json!({"lease_token": token, "outcome": "failed", "error": "bad input", "retryable": false}),
        )
        .await?;
    assert_eq!(reply.body["status"], "dead");
    Ok(())
}

#[tokio::test]
async fn engine_tokens_open_only_their_own_shard() -> anyhow::Result<()> {
    let s = setup(&[]).await?;
    let other_token = s.ws.add_engine("other")?;
    let id = enqueue(&s.api, "mine", json!({})).await?;
    let other = EngineApi::new(&s.gw, &other_token);
    assert!(other.claim(10, 0, 60_000).await?.is_empty(), "another engine's token sees nothing of this shard");
    let leases = s.engine.claim(1, 0, 60_000).await?;
    let (_, token) = lease_of(&leases[0]);
    let foreign = other
        .post(&format!("/internal/jobs/{id}/finish"), &json!({"lease_token": token, "outcome": "succeeded"}))
        .await?;
    assert_eq!((foreign.status, foreign.code()), (StatusCode::NOT_FOUND, "job_not_found"));

    let claim_body = json!({"max": 1, "wait_ms": 0, "lease_ms": 1000, "worker": "t"});
    let no_token = s.engine.http.post(format!("{}/internal/claim", s.gw.base)).json(&claim_body).send().await?;
    assert_eq!(no_token.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(no_token.json::<Value>().await?["error"], "missing_engine_token");
    let wrong = EngineApi::new(&s.gw, "fwe_guessed");
    let reply = wrong.post("/internal/claim", &claim_body).await?;
    assert_eq!((reply.status, reply.code()), (StatusCode::UNAUTHORIZED, "invalid_engine_token"));
    // A user JWT is not an engine token.
    let jwt = EngineApi::new(&s.gw, &s.api.token);
    assert_eq!(jwt.post("/internal/claim", &claim_body).await?.status, StatusCode::UNAUTHORIZED);

    // Rotation retires the old token, revocation the engine's token (within the one-second engine cache).
    let rotated = s.ws.gateway_cli(&["engine", "rotate-token", "local", "--grace", "0s", "--json"])?;
    assert!(rotated.status.success());
    let new_token = serde_json::from_slice::<Value>(&rotated.stdout)?["token"].as_str().unwrap().to_string();
    let refused = |engine: &EngineApi, code: &'static str| {
        let body = claim_body.clone();
        let engine = EngineApi::new(&s.gw, &engine.token);
        async move {
            eventually(Duration::from_secs(5), code, || async {
                let reply = engine.post("/internal/claim", &body).await?;
                Ok((reply.status == StatusCode::UNAUTHORIZED && reply.code() == code).then_some(()))
            })
            .await
        }
    };
    refused(&s.engine, "invalid_engine_token").await?;
    let renewed = EngineApi::new(&s.gw, &new_token);
    assert_eq!(renewed.post("/internal/claim", &claim_body).await?.status, StatusCode::OK);
    assert!(s.ws.gateway_cli(&["engine", "revoke", "local"])?.status.success());
    refused(&renewed, "invalid_engine_token").await?;
    eventually(Duration::from_secs(5), "enqueue refused for a revoked engine", || async {
        let reply = s.api.post_job("after-revoke", &json!({"engine": "local", "kind": "echo"})).await?;
        Ok((reply.status == StatusCode::UNPROCESSABLE_ENTITY && reply.code() == "engine_revoked").then_some(()))
    })
    .await?;

    let bad = other.post("/internal/claim", &json!({"max": 0, "lease_ms": 1000, "worker": "t"})).await?;
    assert_eq!((bad.status, bad.code()), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_max"));
    let bad = other.post("/internal/claim", &json!({"max": 1, "lease_ms": 1, "worker": "t"})).await?;
    assert_eq!((bad.status, bad.code()), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_lease"));
    Ok(())
}

#[tokio::test]
async fn a_crash_looping_kind_trips_its_breaker_which_holds_half_opens_and_closes() -> anyhow::Result<()> {
    let s =
        setup(&["--breaker-failures", "3", "--breaker-cooldown", "1s", "--retry-base-ms", "1", "--retry-cap-ms", "1"])
            .await?;
    let flaky = json!({"kind": "flaky", "max_attempts": 10});
    for i in 0..5 {
        enqueue(&s.api, &format!("flaky{i}"), flaky.clone()).await?;
    }
    let fail = |lease: &Value| {
        let (id, token) = lease_of(lease);
        let body = json!({"lease_token": token, "outcome": "failed", "error": "segfault", "retryable": true});
        let engine = &s.engine;
        async move { engine.post(&format!("/internal/jobs/{id}/finish"), &body).await }
    };
    for lease in s.engine.claim(3, 0, 60_000).await? {
        assert_eq!(fail(&lease).await?.status, StatusCode::OK);
    }
    // Open: the kind is held back, other kinds still flow. The owner sees the breaker with its last error; the
    // tokenless /status only that one is open, the kind (never seen to succeed here) as `other`.
    let owned = s.api.get("/engines/local/breakers").await?;
    let breaker = &owned.body["breakers"][0];
    assert_eq!((breaker["kind"].as_str(), breaker["state"].as_str()), (Some("flaky"), Some("open")));
    assert_eq!(breaker["last_error"], "segfault");
    let status: Value = reqwest::get(format!("{}/status", s.gw.base)).await?.json().await?;
    let breaker = &status["engines"][0]["breakers"][0];
    assert_eq!((breaker["kind"].as_str(), breaker["state"].as_str()), (Some("other"), Some("open")));
    assert!(breaker.get("last_error").is_none(), "{breaker}");
    let echo_id = enqueue(&s.api, "fine", json!({})).await?;
    let leases = s.engine.claim(10, 0, 60_000).await?;
    assert_eq!(leases.len(), 1, "only the healthy kind is handed out");
    assert_eq!(lease_of(&leases[0]).0, echo_id);
    let queued = s.api.all_jobs(Some("queued")).await?;
    assert_eq!(queued.len(), 5, "the held jobs wait");
    assert!(queued.iter().all(|j| j["attempts"].as_u64() <= Some(1)), "waiting burns no attempts");

    // After the cool-down one probe goes through; it fails, the breaker opens again.
    let probe = eventually(Duration::from_secs(10), "a probe", || async {
        let leases = s.engine.claim(10, 0, 60_000).await?;
        assert!(leases.len() <= 1, "a half-open breaker lets one job through");
        Ok(leases.into_iter().next())
    })
    .await?;
    fail(&probe).await?;
    assert!(s.engine.claim(10, 0, 60_000).await?.is_empty(), "open again after a failed probe");

    // The next probe succeeds: the breaker closes and the rest flows.
    let probe = eventually(Duration::from_secs(10), "a second probe", || async {
        Ok(s.engine.claim(10, 0, 60_000).await?.into_iter().next())
    })
    .await?;
    let (id, token) = lease_of(&probe);
    let ok = s
        .engine
        .post(&format!("/internal/jobs/{id}/finish"), &json!({"lease_token": token, "outcome": "succeeded"}))
        .await?;
    assert_eq!(ok.status, StatusCode::OK);
    let rest = s.engine.claim(10, 0, 60_000).await?;
    assert_eq!(rest.len(), 4, "closed: every remaining job of the kind is runnable again");
    let status: Value = reqwest::get(format!("{}/status", s.gw.base)).await?.json().await?;
    assert!(status["engines"][0]["breakers"].as_array().unwrap().is_empty());
    Ok(())
}

#[tokio::test]
async fn one_users_failing_jobs_never_hold_back_another_users_jobs_of_the_kind() -> anyhow::Result<()> {
    let s =
        setup(&["--breaker-failures", "3", "--breaker-cooldown", "1h", "--retry-base-ms", "1", "--retry-cap-ms", "1"])
            .await?;
    let bob = Api::new(&s.gw, &s.ws.mint("bob", "1h")?);
    let carol = Api::new(&s.gw, &s.ws.mint("carol", "1h")?);
    assert!(s.api.put("/engines/local/users/carol", &json!({})).await?.status.is_success());
    let finish = |lease: &Value, body: Value| {
        let (id, token) = lease_of(lease);
        let mut body = body;
        body["lease_token"] = token.into();
        let engine = &s.engine;
        async move { engine.post(&format!("/internal/jobs/{id}/finish"), &body).await }
    };
    let bad_input = json!({"outcome": "failed", "error": "payload is not a PDF", "retryable": false});
    let timed_out = json!({"outcome": "failed", "error": "timed out", "retryable": true});
    let waiting_on = |api: &Api, id: String| {
        let api = api.clone();
        async move { anyhow::Ok(api.get(&format!("/jobs/{id}")).await?.body["waiting_on"].clone()) }
    };
    let parse = json!({"kind": "parse", "max_attempts": 5});
    let mut alice_jobs = Vec::new();
    for i in 0..10 {
        alice_jobs.push(enqueue(&s.api, &format!("a{i}"), parse.clone()).await?);
    }

    // Alice's jobs fail on their own input (permanent): more than the threshold, and none of it counts.
    let leases = s.engine.claim(5, 0, 60_000).await?;
    assert_eq!(leases.len(), 5);
    for lease in &leases {
        assert_eq!(finish(lease, bad_input.clone()).await?.status, StatusCode::OK);
    }
    let bob_job = enqueue(&bob, "b1", parse.clone()).await?;
    assert_ne!(waiting_on(&bob, bob_job.clone()).await?, "breaker");
    let next = s.engine.claim(1, 0, 60_000).await?;
    assert_eq!(next.first().map(|l| lease_of(l).0), Some(bob_job.clone()), "bob's job is next in the fair order");
    finish(&next[0], json!({"outcome": "succeeded"})).await?;
    let status: Value = reqwest::get(format!("{}/status", s.gw.base)).await?.json().await?;
    assert_eq!(status["engines"][0]["breakers"], json!([]), "permanent failures trip nothing");

    // Alice's jobs time out (retryable): her own breaker of the kind opens and holds only her jobs.
    for _ in 0..3 {
        let lease = s.engine.claim(1, 0, 60_000).await?;
        assert_eq!(lease.len(), 1);
        assert_eq!(finish(&lease[0], timed_out.clone()).await?.status, StatusCode::OK);
    }
    let bob_job = enqueue(&bob, "b2", parse.clone()).await?;
    let leases = s.engine.claim(10, 0, 60_000).await?;
    let claimed: Vec<String> = leases.iter().map(|l| lease_of(l).0).collect();
    assert_eq!(claimed, vec![bob_job.clone()], "alice's jobs wait, bob's goes");
    finish(&leases[0], json!({"outcome": "succeeded"})).await?;
    assert_eq!(waiting_on(&s.api, alice_jobs[9].clone()).await?, "breaker");
    let status: Value = reqwest::get(format!("{}/status", s.gw.base)).await?.json().await?;
    let breakers = status["engines"][0]["breakers"].as_array().unwrap().clone();
    assert_eq!(breakers.len(), 1, "{breakers:?}");
    assert_eq!((breakers[0]["scope"].as_str(), breakers[0]["state"].as_str()), (Some("user"), Some("open")));

    // Failures from a second user mean the kind itself is failing: now it is held back for everyone.
    for i in 0..2 {
        enqueue(&carol, &format!("c{i}"), parse.clone()).await?;
    }
    for lease in s.engine.claim(10, 0, 60_000).await? {
        finish(&lease, timed_out.clone()).await?;
    }
    let bob_job = enqueue(&bob, "b3", parse.clone()).await?;
    assert!(s.engine.claim(10, 0, 60_000).await?.is_empty(), "the kind is held back");
    assert_eq!(waiting_on(&bob, bob_job).await?, "breaker");
    let status: Value = reqwest::get(format!("{}/status", s.gw.base)).await?.json().await?;
    let scopes: Vec<&str> =
        status["engines"][0]["breakers"].as_array().unwrap().iter().filter_map(|b| b["scope"].as_str()).collect();
    assert_eq!(scopes.first(), Some(&"kind"), "{status}");
    // Other kinds still flow.
    let echo = enqueue(&bob, "b4", json!({})).await?;
    let leases = s.engine.claim(10, 0, 60_000).await?;
    assert_eq!(leases.iter().map(|l| lease_of(l).0).collect::<Vec<_>>(), vec![echo]);
    Ok(())
}

#[tokio::test]
async fn lapsed_leases_count_as_failures_of_their_users_kind() -> anyhow::Result<()> {
    let s = setup(&["--breaker-failures", "2", "--breaker-cooldown", "1h", "--reap-interval-ms", "50"]).await?;
    let bob = Api::new(&s.gw, &s.ws.mint("bob", "1h")?);
    let crashy = json!({"kind": "crashy", "max_attempts": 5});
    for i in 0..3 {
        enqueue(&s.api, &format!("c{i}"), crashy.clone()).await?;
    }
    // Twice the engine takes one of alice's jobs and goes silent (as if it crashed on it): the lease lapses.
    for _ in 0..2 {
        let lease = s.engine.claim(1, 0, 300).await?;
        let (id, _) = lease_of(&lease[0]);
        eventually(Duration::from_secs(10), "the lease to lapse", || async {
            let job = s.api.get(&format!("/jobs/{id}")).await?;
            Ok((job.body["status"] == "queued").then_some(()))
        })
        .await?;
    }
    let bob_job = enqueue(&bob, "b1", crashy.clone()).await?;
    let leases = s.engine.claim(10, 0, 60_000).await?;
    assert_eq!(leases.iter().map(|l| lease_of(l).0).collect::<Vec<_>>(), vec![bob_job], "only alice's jobs wait");
    let status: Value = reqwest::get(format!("{}/status", s.gw.base)).await?.json().await?;
    let public = &status["engines"][0]["breakers"][0];
    assert_eq!((public["scope"].as_str(), public["state"].as_str()), (Some("user"), Some("open")), "{status}");
    assert!(public.get("last_error").is_none(), "the public view carries no error text: {public}");
    // The owner's view names the kind, the user and why.
    let owned = s.api.get("/engines/local/breakers").await?;
    let breaker = &owned.body["breakers"][0];
    assert_eq!((breaker["kind"].as_str(), breaker["scope"].as_str()), (Some("crashy"), Some("user")), "{breaker}");
    assert!(breaker["last_error"].as_str().is_some_and(|e| e.contains("lease expired")), "{breaker}");
    Ok(())
}

#[tokio::test]
async fn a_paused_engine_gets_no_work_until_resumed_and_resume_wakes_a_waiting_claim() -> anyhow::Result<()> {
    let s = setup(&[]).await?;
    let id = enqueue(&s.api, "p1", json!({})).await?;
    let bob = Api::new(&s.gw, &s.ws.mint("bob", "1h")?);
    let refused = bob.post("/engines/local/pause", &json!({})).await?;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::FORBIDDEN, "not_owner"),
        "bob is whitelisted, not the owner"
    );
    let paused = s.api.post("/engines/local/pause", &json!({})).await?;
    assert_eq!((paused.status, paused.body["paused"].as_bool()), (StatusCode::OK, Some(true)));
    assert!(s.engine.claim(10, 0, 60_000).await?.is_empty(), "nothing is handed out while paused");
    enqueue(&s.api, "p2", json!({})).await?; // enqueue still works while paused
    let status: Value = reqwest::get(format!("{}/status", s.gw.base)).await?.json().await?;
    assert_eq!(status["engines"][0]["paused"], true);

    // A claim waiting on the paused engine is woken by the resume (an operator's, this time).
    let engine = EngineApi::new(&s.gw, &s.engine.token);
    let waiting = tokio::spawn(async move { engine.claim(10, 30_000, 60_000).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished());
    let admin = s.ws.gateway_cli_ok(&["admin", "token", "--scope", "engines:write", "--ttl", "5m"])?;
    let resumed = reqwest::Client::new()
        .post(format!("{}/engines/local/resume", s.gw.base))
        .bearer_auth(admin.trim())
        .send()
        .await?;
    assert_eq!(resumed.status(), StatusCode::OK);
    let leases = tokio::time::timeout(Duration::from_secs(10), waiting).await???;
    assert_eq!(leases.len(), 2);
    assert!(leases.iter().any(|l| lease_of(l).0 == id));
    Ok(())
}

#[tokio::test]
async fn a_finish_batch_commits_each_outcome_and_refuses_only_the_bad_items() -> anyhow::Result<()> {
    let s = setup(&[]).await?;
    for i in 0..4 {
        enqueue(&s.api, &format!("b{i}"), json!({"max_attempts": 2})).await?;
    }
    let leases = s.engine.claim(4, 0, 60_000).await?;
    assert_eq!(leases.len(), 4);
    let (ok, ok_token) = lease_of(&leases[0]);
    let (retry, retry_token) = lease_of(&leases[1]);
    let (stale, _) = lease_of(&leases[2]);
    let (big, big_token) = lease_of(&leases[3]);
    let huge = "x".repeat(1_100_000);
    let batch = json!({"finishes": [
        {"job_id": ok, "report": {"lease_token": ok_token, "outcome": "succeeded", "result": {"n": 1}}},
        {"job_id": retry, "report": {"lease_token": retry_token, "outcome": "failed", "error": "flaky", "retryable": true}},
        {"job_id": stale, "report": {"lease_token": "0".repeat(32), "outcome": "succeeded"}},
        {"job_id": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "report": {"lease_token": "x", "outcome": "succeeded"}},
        {"job_id": big, "report": {"lease_token": big_token, "outcome": "succeeded", "result": huge}},
    ]});
    let reply = s.engine.post("/internal/finish", &batch).await?;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let results = reply.body["results"].as_array().cloned().unwrap_or_default();
    let codes: Vec<(&str, &str)> =
        results.iter().map(|r| (r["status"].as_str().unwrap_or("-"), r["error"].as_str().unwrap_or("-"))).collect();
    assert_eq!(
        codes,
        [("succeeded", "-"), ("queued", "-"), ("-", "lease_lost"), ("-", "job_not_found"), ("-", "payload_too_large")]
    );
    assert!(results[1]["run_at"].as_str().is_some(), "a retry says when it runs again");
    let done = s.api.get(&format!("/jobs/{ok}")).await?;
    assert_eq!((done.body["status"].as_str(), &done.body["result"]), (Some("succeeded"), &json!({"n": 1})));
    // The refused items changed nothing: the stale holder's job is still running under its real lease.
    assert_eq!(s.api.get(&format!("/jobs/{stale}")).await?.body["status"], "running");

    let empty = s.engine.post("/internal/finish", &json!({"finishes": []})).await?;
    assert_eq!((empty.status, empty.code()), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_batch"));
    let anonymous = EngineApi::new(&s.gw, "not-a-token").post("/internal/finish", &batch).await?;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let user_token = s.api.token.clone();
    let as_user = EngineApi::new(&s.gw, &user_token).post("/internal/finish", &batch).await?;
    assert_eq!(as_user.status, StatusCode::UNAUTHORIZED, "a user token is no engine token");
    Ok(())
}

#[tokio::test]
async fn ids_and_tokens_no_store_could_hold_are_refused_as_unknown_not_as_a_store_failure() -> anyhow::Result<()> {
    let s = setup(&[]).await?;
    let id = enqueue(&s.api, "n1", json!({})).await?;
    let lease = s.engine.claim(1, 0, 60_000).await?;
    let (claimed, token) = lease_of(&lease[0]);
    assert_eq!(claimed, id);
    // A NUL byte in the job id or the lease token (PostgreSQL text cannot hold one), or an id that is no UUID.
    for path in ["/internal/jobs/a%00b/finish", "/internal/jobs/not-a-uuid/finish", "/internal/jobs/a%00b/heartbeat"] {
        let body = if path.ends_with("heartbeat") {
            json!({"lease_token": token, "lease_ms": 1_000})
        } else {
            json!({"lease_token": token, "outcome": "succeeded"})
        };
        let reply = s.engine.post(path, &body).await?;
        assert_eq!((reply.status, reply.code()), (StatusCode::NOT_FOUND, "job_not_found"), "{path}: {}", reply.body);
    }
    let nul_token = json!({"lease_token": "tok\u{0}en", "outcome": "succeeded"});
    let reply = s.engine.post(&format!("/internal/jobs/{id}/finish"), &nul_token).await?;
    assert_eq!((reply.status, reply.code()), (StatusCode::CONFLICT, "lease_lost"), "{}", reply.body);
    let batch = json!({"finishes": [
        {"job_id": "x\u{0}y", "report": {"lease_token": token, "outcome": "succeeded"}},
        {"job_id": id, "report": {"lease_token": "t\u{0}", "outcome": "succeeded"}},
        {"job_id": id, "report": {"lease_token": token, "outcome": "succeeded"}},
    ]});
    let reply = s.engine.post("/internal/finish", &batch).await?;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let errors: Vec<&str> =
        reply.body["results"].as_array().into_iter().flatten().map(|r| r["error"].as_str().unwrap_or("ok")).collect();
    assert_eq!(errors, ["job_not_found", "lease_lost", "ok"], "{}", reply.body);
    // A worker name with a NUL is kept, the NUL replaced.
    let claim = json!({"max": 1, "wait_ms": 0, "lease_ms": 1_000, "worker": "w\u{0}1"});
    assert_eq!(s.engine.post("/internal/claim", &claim).await?.status, StatusCode::OK);
    Ok(())
}
