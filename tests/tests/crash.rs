//! Crash safety with real processes: the gateway is killed with SIGKILL twenty times under load and restarted;
//! an engine is frozen (SIGSTOP) mid-job until its lease lapses, then thawed. Nothing acknowledged is lost, a
//! client retrying with the same Idempotency-Key gets the original job, and a stale engine is fenced off.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowork_tests::{Api, Engine, Gateway, Workspace, eventually, free_port};
use reqwest::StatusCode;
use serde_json::{Value, json};

const KILLS: usize = 20;

/// What one client learnt: key → job id for answered posts, and the keys whose answer was lost in a crash.
#[derive(Default)]
struct Ledger {
    acknowledged: HashMap<String, String>,
    uncertain: Vec<String>,
}

fn body() -> Value {
    json!({"engine": "local", "kind": "sleep", "payload": {"ms": 5}})
}

/// Posts jobs until `stop`, recording each answer (or its loss) in the ledger.
async fn client(api: Api, name: String, ledger: Arc<Mutex<Ledger>>, stop: Arc<AtomicBool>) {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("{name}-{n}");
        n += 1;
        match api.post_job(&key, &body()).await {
            Ok(reply) if reply.status == StatusCode::CREATED || reply.status == StatusCode::OK => {
                let id = reply.body["id"].as_str().unwrap_or_default().to_string();
                if let Ok(mut ledger) = ledger.lock() {
                    ledger.acknowledged.insert(key, id);
                }
            }
            // Connection refused or reset, or a 503 while starting: the client does not know; it retries later.
            _ => {
                if let Ok(mut ledger) = ledger.lock() {
                    ledger.uncertain.push(key);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        // Steady load, not a flood: the point is a kill in the middle of writes, not a deep queue.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_gateway_kills_under_load_lose_no_acknowledged_job() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    ws.add_engine("local")?;
    let token = ws.mint("alice", "1h")?;
    let listen = format!("127.0.0.1:{}", free_port()?);
    let mut gw = Gateway::start_on(&ws, &listen, &[]).await?;
    let _engine = Engine::start(&ws, &gw, "local", 4, &["--lease-ms", "3000"])?;
    let api = Api::new(&gw, &token);

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> =
        (0..4).map(|i| tokio::spawn(client(api.clone(), format!("c{i}"), ledger.clone(), stop.clone()))).collect();
    for kill in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(150 + (kill as u64 * 37) % 300)).await;
        gw.process.signal("KILL")?;
        gw.process.wait_exit(Duration::from_secs(5)).await?;
        gw = Gateway::start_on(&ws, &listen, &[]).await?;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await?;
    }
    let (mut acknowledged, uncertain) = {
        let ledger = ledger.lock().map_err(|_| anyhow::anyhow!("ledger poisoned"))?;
        (ledger.acknowledged.clone(), ledger.uncertain.clone())
    };
    let before_retry = acknowledged.len();

    // Retrying the uncertain keys: each gets its original job if the crash came after the commit, or a new one.
    let mut replayed = 0;
    for key in &uncertain {
        let reply = api.post_job(key, &body()).await?;
        assert!(reply.status == StatusCode::CREATED || reply.status == StatusCode::OK, "{key}: {}", reply.body);
        replayed += usize::from(reply.status == StatusCode::OK);
        acknowledged.insert(key.clone(), reply.body["id"].as_str().unwrap_or_default().to_string());
    }
    // And an acknowledged key sent again is always the same job.
    for (key, id) in acknowledged.iter().take(50) {
        let again = api.post_job(key, &body()).await?;
        assert_eq!((again.status, again.body["id"].as_str()), (StatusCode::OK, Some(id.as_str())), "{key}");
    }

    let http = reqwest::Client::new();
    eventually(Duration::from_secs(240), "the queue to empty", || async {
        let status: Value = http.get(format!("{}/status", gw.base)).send().await?.json().await?;
        let engine = &status["engines"][0];
        Ok((engine["queued"] == 0 && engine["running"] == 0).then_some(()))
    })
    .await?;
    let jobs = api.all_jobs(None).await?;
    let unfinished: Vec<&Value> = jobs.iter().filter(|j| j["status"] != "succeeded").collect();
    assert!(unfinished.is_empty(), "every job succeeds: {unfinished:?}");
    let by_id: HashMap<&str, &Value> = jobs.iter().filter_map(|j| Some((j["id"].as_str()?, j))).collect();
    for (key, id) in &acknowledged {
        assert!(by_id.contains_key(id.as_str()), "job {id} (key {key}) was acknowledged and then lost");
    }
    assert_eq!(jobs.len(), acknowledged.len(), "one job per key: no duplicates from retries after crashes");
    let rerun = jobs.iter().filter(|j| j["attempts"].as_u64().unwrap_or(0) > 1).count();
    println!(
        "{KILLS} kills survived; {before_retry} jobs acknowledged under load, {} uncertain keys retried ({replayed} \
         replayed the original job); {} jobs, 0 lost; {rerun} ran twice (lease expired while the gateway was down)",
        uncertain.len(),
        jobs.len()
    );
    assert!(before_retry > 100, "load ran between the kills: {before_retry}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_engine_loses_its_lease_and_its_late_report_is_refused() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    ws.add_engine("local")?;
    let gw = Gateway::start(&ws, &["--reap-interval-ms", "100"]).await?;
    let api = Api::new(&gw, &ws.mint("alice", "1h")?);
    let mut frozen = Engine::start(&ws, &gw, "local", 1, &["--lease-ms", "1000"])?;
    let created = api.post_job("slow", &json!({"engine": "local", "kind": "sleep", "payload": {"ms": 1500}})).await?;
    let id = created.body["id"].as_str().unwrap_or_default().to_string();
    eventually(Duration::from_secs(10), "the job to start", || async {
        Ok((api.get(&format!("/jobs/{id}")).await?.body["status"] == "running").then_some(()))
    })
    .await?;
    frozen.process.signal("STOP")?;
    // Its lease lapses; a second engine runs the job again and finishes it.
    let _healthy = Engine::start(&ws, &gw, "local", 1, &["--lease-ms", "5000"])?;
    let done = eventually(Duration::from_secs(20), "the job to be run again", || async {
        let job = api.get(&format!("/jobs/{id}")).await?.body;
        Ok((job["status"] == "succeeded").then_some(job))
    })
    .await?;
    assert_eq!(done["attempts"], 2, "one lapsed attempt, one that finished");
    // Thawed, the stale engine finishes its sleep and reports: the gateway refuses it and the job stays as is.
    frozen.process.signal("CONT")?;
    eventually(Duration::from_secs(10), "the stale engine's refused report", || async {
        let log = frozen.process.log_text();
        Ok((log.contains("lease_lost") || log.contains("lease lost")).then_some(()))
    })
    .await?;
    let after = api.get(&format!("/jobs/{id}")).await?.body;
    assert_eq!((after["status"].as_str(), &after["attempts"]), (Some("succeeded"), &json!(2)));
    assert_eq!(after["finished_at"], done["finished_at"], "the late report changed nothing");
    Ok(())
}
