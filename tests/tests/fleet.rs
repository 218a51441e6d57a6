//! A gateway fleet: three gateways and two engine processes on one PostgreSQL store and one Redis. Load goes
//! round-robin to every gateway while one of them is killed (SIGKILL) and restarted; every acknowledged job
//! reaches one final state, reruns come only from lapsed leases (and are counted), an Idempotency-Key reused on
//! another gateway returns the original job, and a browser-side client (the official socket.io-client) connected
//! to gateway 1 sees the events of jobs enqueued through gateway 3.
//!
//! Runs in the PostgreSQL pass of the test command (`with-services --redis`); on its own it says what it needs.

use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowork_common::clock::system_now_ms;
use flowork_tests::live::Listener;
use flowork_tests::wallet::{Wallet, sign_in_message};
use flowork_tests::{Api, Engine, Gateway, Reply, Workspace, eventually, free_port, on_postgres};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Posts a job through the gateways in turn from `first`, moving on when one does not answer; the reply that
/// acknowledged it (201 or a 200 replay), or `None` if no gateway answered.
async fn post_round_robin(apis: &[Api], first: usize, key: &str, body: &Value) -> Option<(usize, Value)> {
    for attempt in 0..apis.len() * 20 {
        let index = (first + attempt) % apis.len();
        match apis[index].post_job(key, body).await {
            Ok(reply) if reply.status == StatusCode::CREATED || reply.status == StatusCode::OK => {
                return Some((index, reply.body));
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    None
}

#[tokio::test]
async fn a_fleet_of_three_gateways_survives_a_killed_gateway_and_shares_keys_and_live_events() -> anyhow::Result<()> {
    anyhow::ensure!(on_postgres(), "the fleet test runs on the PostgreSQL store (FLOWORK_TEST_STORE=postgres)");
    let redis = std::env::var("FLOWORK_TEST_REDIS")
        .map_err(|_| anyhow::anyhow!("the fleet test needs Redis: run it through `with-services --redis`"))?;
    let ws = Workspace::new()?;
    ws.add_engine("shared")?;
    let flags = ["--redis", redis.as_str(), "--reap-interval-ms", "200"];
    let listens: Vec<String> =
        (0..3).map(|_| free_port().map(|p| format!("127.0.0.1:{p}"))).collect::<Result<_, _>>()?;
    let mut gateways = Vec::new();
    for listen in &listens {
        gateways.push(Gateway::start_on(&ws, listen, &flags).await?);
    }
    let lease = ["--lease-ms", "1500"];
    let _engine_a = Engine::start(&ws, &gateways[0], "shared", 4, &lease)?;
    let _engine_b = Engine::start(&ws, &gateways[1], "shared", 4, &lease)?;
    let alice = ws.mint("alice", "1h")?;
    let apis: Vec<Api> = gateways.iter().map(|gw| Api::new(gw, &alice)).collect();

    let listener = Listener::start(&gateways[0], &alice)?;
    eventually(Duration::from_secs(20), "the socket.io client to connect to gateway 1", || async {
        Ok(listener.events().iter().any(|e| e["event"] == "connected").then_some(()))
    })
    .await?;

    // The same key through gateway 1 and then gateway 3: one job.
    let body = json!({"engine": "shared", "kind": "echo", "payload": {"shared": true}});
    let first = apis[0].post_job("fleet-shared-key", &body).await?;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let again = apis[2].post_job("fleet-shared-key", &body).await?;
    assert_eq!(again.status, StatusCode::OK, "a replay through another gateway: {}", again.body);
    assert_eq!(again.body["id"], first.body["id"]);
    let reused =
        apis[1].post_job("fleet-shared-key", &json!({"engine": "shared", "kind": "echo", "payload": 1})).await?;
    assert_eq!(reused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", reused.body);

    // Load, round-robin, from four clients; gateway 2 is killed a third of the way in and restarted.
    const JOBS: usize = 240;
    let acknowledged = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
    let apis = Arc::new(apis);
    let mut clients = Vec::new();
    for client in 0..4 {
        let (apis, acknowledged) = (apis.clone(), acknowledged.clone());
        clients.push(tokio::spawn(async move {
            for i in (client..JOBS).step_by(4) {
                let body = json!({"engine": "shared", "kind": "sleep", "payload": {"ms": 20}});
                if let Some((via, reply)) = post_round_robin(&apis, i % 3, &format!("load-{i}"), &body).await {
                    let id = reply["id"].as_str().unwrap_or_default().to_string();
                    acknowledged.lock().unwrap_or_else(|p| p.into_inner()).insert(id, via);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }
    eventually(Duration::from_secs(60), "a third of the load", || async {
        Ok((acknowledged.lock().unwrap_or_else(|p| p.into_inner()).len() >= JOBS / 3).then_some(()))
    })
    .await?;
    let killed_at = listener.events().len();
    gateways[1].process.signal("KILL")?;
    gateways[1].process.wait_exit(Duration::from_secs(10)).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    gateways[1] = Gateway::start_on(&ws, &listens[1], &flags).await?;
    for client in clients {
        client.await?;
    }
    let acknowledged = acknowledged.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert_eq!(acknowledged.len(), JOBS, "every job was acknowledged by some gateway");

    // Every acknowledged job reaches one final state, whichever gateway is asked.
    let reader = Api::new(&gateways[2], &alice);
    let jobs = eventually(Duration::from_secs(120), "every acknowledged job to finish", || async {
        let jobs = reader.all_jobs(None).await?;
        let done: HashMap<String, Value> = jobs
            .into_iter()
            .filter(|j| ["succeeded", "dead", "cancelled"].contains(&j["status"].as_str().unwrap_or("")))
            .map(|j| (j["id"].as_str().unwrap_or_default().to_string(), j))
            .collect();
        Ok(acknowledged.keys().all(|id| done.contains_key(id)).then_some(done))
    })
    .await?;
    let mut reruns = 0;
    for id in acknowledged.keys() {
        let job = &jobs[id];
        assert_eq!(job["status"], "succeeded", "{job}");
        let attempts = job["attempts"].as_u64().unwrap_or(0);
        // A second attempt only after a lease lapsed (the error it left says so), never more than one extra.
        assert!((1..=2).contains(&attempts), "{job}");
        if attempts == 2 {
            reruns += 1;
        }
    }
    let through: HashSet<usize> = acknowledged.values().copied().collect();
    assert_eq!(through.len(), 3, "load reached all three gateways");

    // Gateway 2 was killed without a goodbye: whatever it committed last may never have been published, so
    // gateway 1 tells its client to reload. Then a reload (as the GUI does) shows every job final.
    eventually(Duration::from_secs(60), "gateway 1 to tell its client to reload after gateway 2's death", || async {
        Ok(listener.events()[killed_at..]
            .iter()
            .any(|e| e["event"] == "live.reset" && e["data"]["reason"] == "gateway_lost")
            .then_some(()))
    })
    .await?;
    let reloaded: HashMap<String, Value> = reader
        .all_jobs(None)
        .await?
        .into_iter()
        .map(|j| (j["id"].as_str().unwrap_or_default().to_string(), j))
        .collect();

    // Gateway 1's client saw every job enqueued through gateway 3 created (an event only gateway 3 publishes, so
    // it crossed Redis) and saw them succeed (finished through whichever gateway the engine that ran it uses),
    // but for those whose success gateway 2 committed and was killed before publishing: the reload shows those.
    let via_third: HashSet<&String> = acknowledged.iter().filter(|(_, via)| **via == 2).map(|(id, _)| id).collect();
    let ids_of = |event: &str, status: Option<&str>| -> HashSet<String> {
        listener
            .events()
            .iter()
            .filter(|e| e["event"] == event && status.is_none_or(|s| e["data"]["status"] == s))
            .filter_map(|e| e["data"]["id"].as_str().map(str::to_string))
            .collect()
    };
    let seen_final = eventually(Duration::from_secs(20), "gateway 3's jobs' events on gateway 1", || async {
        let created = ids_of("job.created", None);
        let succeeded = ids_of("job.updated", Some("succeeded"));
        let all_created = via_third.iter().all(|id| created.contains(id.as_str()));
        let seen = via_third.iter().filter(|id| succeeded.contains(id.as_str())).count();
        let told = via_third
            .iter()
            .all(|id| succeeded.contains(id.as_str()) || reloaded.get(*id).is_some_and(|j| j["status"] == "succeeded"));
        Ok((all_created && told).then_some(seen))
    })
    .await?;
    println!(
        "fleet: {} jobs acknowledged ({} through gateway 3), 0 lost, {reruns} ran twice (lapsed leases around the \
         killed gateway); gateway 1's socket saw all of gateway 3's jobs created and {seen_final} succeed, the rest \
         after the reload it was told to do",
        acknowledged.len(),
        via_third.len()
    );
    Ok(())
}

async fn call(gateway: &Gateway, path: &str, origin: &str, body: Value) -> anyhow::Result<Reply> {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", gateway.base))
        .header("origin", origin)
        .json(&body)
        .send()
        .await?;
    Reply::read(response).await
}

#[tokio::test]
async fn sign_in_state_and_signing_keys_are_shared_by_the_fleet() -> anyhow::Result<()> {
    anyhow::ensure!(on_postgres(), "the fleet test runs on the PostgreSQL store (FLOWORK_TEST_STORE=postgres)");
    let ws = Workspace::new()?;
    // The GUI's origin, the same for every gateway behind the load balancer.
    let origin = "http://flowork.example";
    let a = Gateway::start(&ws, &["--allowed-origin", origin]).await?;
    let b = Gateway::start(&ws, &["--allowed-origin", origin]).await?;

    // A nonce issued by A is accepted once by B, and refused afterwards by A.
    let nonce: Value = reqwest::get(format!("{}/auth/nonce", a.base)).await?.json().await?;
    let wallet = Wallet::random();
    let message =
        sign_in_message(origin, &wallet.address(), nonce["nonce"].as_str().unwrap_or_default(), 1, system_now_ms());
    let signed = json!({"message": message, "signature": wallet.sign(&message)});
    let session = call(&b, "/auth/verify", origin, signed.clone()).await?;
    assert_eq!(session.status, StatusCode::OK, "{}", session.body);
    let replay = call(&a, "/auth/verify", origin, signed).await?;
    assert_eq!((replay.status, replay.code()), (StatusCode::UNAUTHORIZED, "nonce_reused"));

    // An access token minted through B works on A.
    let access = session.body["access_token"].as_str().unwrap_or_default().to_string();
    assert_eq!(Api::new(&a, &access).get("/jobs").await?.status, StatusCode::OK);

    // A refresh through A, then the old refresh token presented to B: reuse, and the family is revoked everywhere.
    let first = session.body["refresh_token"].as_str().unwrap_or_default().to_string();
    let rotated = call(&a, "/auth/refresh", origin, json!({"refresh_token": first})).await?;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.body);
    let reuse = call(&b, "/auth/refresh", origin, json!({"refresh_token": first})).await?;
    assert_eq!((reuse.status, reuse.code()), (StatusCode::UNAUTHORIZED, "refresh_reused"));
    let second = rotated.body["refresh_token"].as_str().unwrap_or_default().to_string();
    let revoked = call(&a, "/auth/refresh", origin, json!({"refresh_token": second})).await?;
    assert_eq!((revoked.status, revoked.code()), (StatusCode::UNAUTHORIZED, "refresh_revoked"));

    // A key rotated on the command line signs the next tokens, and both running gateways accept them.
    let old = ws.mint("carol", "1h")?;
    let out = ws.gateway_cli_ok(&["keys", "rotate"])?;
    assert!(out.contains("new signing key"), "{out}");
    let new = ws.mint("carol", "1h")?;
    let kid = |token: &str| token.split('.').next().map(str::to_string);
    assert_ne!(kid(&old), kid(&new), "the new token names the new key");
    for gateway in [&a, &b] {
        let api = Api::new(gateway, &new);
        eventually(Duration::from_secs(5), "the rotated key to reach every gateway", || async {
            Ok((api.get("/jobs").await?.status == StatusCode::OK).then_some(()))
        })
        .await?;
        assert_eq!(Api::new(gateway, &old).get("/jobs").await?.status, StatusCode::OK, "old tokens stay valid");
    }
    let verify = ws.gateway_cli(&["audit", "verify"])?;
    assert!(
        verify.status.success(),
        "one audit chain written by two gateways: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    Ok(())
}

/// A gateway that stops cleanly says goodbye (its peers' clients keep their lists); one killed without a goodbye
/// may have committed changes it never published, so every other gateway tells its clients to reload.
#[tokio::test]
async fn a_gateway_killed_without_a_goodbye_makes_the_fleet_s_clients_reload() -> anyhow::Result<()> {
    anyhow::ensure!(on_postgres(), "the fleet test runs on the PostgreSQL store (FLOWORK_TEST_STORE=postgres)");
    // A Redis of its own: the other fleet test kills a gateway too, and its heartbeats would reach this fleet.
    let redis = OwnRedis::start()?;
    let ws = Workspace::new()?;
    let flags = ["--redis", redis.url.as_str()];
    let watcher = Gateway::start(&ws, &flags).await?;
    let alice = ws.mint("alice", "1h")?;
    let listener = Listener::start(&watcher, &alice)?;
    eventually(Duration::from_secs(20), "the socket.io client to connect", || async {
        Ok(listener.events().iter().any(|e| e["event"] == "connected").then_some(()))
    })
    .await?;
    let resets = || listener.events().iter().filter(|e| e["event"] == "live.reset").cloned().collect::<Vec<_>>();

    // Stopped cleanly (SIGTERM): a goodbye, no reload, even well past the time a silent gateway is taken for dead.
    let mut clean = Gateway::start(&ws, &flags).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    clean.process.signal("TERM")?;
    clean.process.wait_exit(Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_secs(13)).await;
    assert!(resets().is_empty(), "a clean stop is not a loss: {:?}", resets());

    // Killed: the watcher's client is told to reload.
    let mut killed = Gateway::start(&ws, &flags).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    killed.process.signal("KILL")?;
    killed.process.wait_exit(Duration::from_secs(10)).await?;
    let reset = eventually(Duration::from_secs(60), "live.reset after a gateway was killed", || async {
        Ok(resets().into_iter().next())
    })
    .await?;
    assert_eq!(reset["data"]["reason"], "gateway_lost", "{reset}");
    Ok(())
}

/// A redis-server on a free port for one test, killed when dropped.
struct OwnRedis {
    child: std::process::Child,
    url: String,
}

impl OwnRedis {
    fn start() -> anyhow::Result<Self> {
        let port = free_port()?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| anyhow::anyhow!("redis-server is needed: {e}"))?;
        let redis = Self { child, url: format!("redis://127.0.0.1:{port}") };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(std::time::Instant::now() < deadline, "redis-server did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(redis)
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
