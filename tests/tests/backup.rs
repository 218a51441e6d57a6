//! Disaster-recovery drill with the real binaries: back up while the gateway serves under load, destroy the data
//! directory, restore, and find every job acknowledged before the backup, with the old tokens still working.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use flowork_tests::{Api, Engine, Gateway, Workspace, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Posts jobs one after another until `stop`; returns the ids answered 201.
async fn keep_posting(api: Api, prefix: &'static str, stop: Arc<AtomicBool>) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let body = json!({"engine": "local", "kind": "sleep", "payload": {"ms": 1}});
        let reply = api.post_job(&format!("{prefix}-{i}"), &body).await?;
        if reply.status == StatusCode::CREATED {
            ids.push(reply.body["id"].as_str().unwrap_or_default().to_string());
        }
        i += 1;
    }
    Ok(ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_under_load_restores_every_acknowledged_job() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    ws.add_engine("local")?;
    let token = ws.mint("alice", "1h")?;
    let gw = Gateway::start(&ws, &[]).await?;
    let api = Api::new(&gw, &token);
    // Short leases: jobs running at the moment of the backup come back after it is restored.
    let engine = Engine::start(&ws, &gw, "local", 2, &["--lease-ms", "1500"])?;

    // Load before the backup: every job answered 201 by now must be in it.
    let stop = Arc::new(AtomicBool::new(false));
    let before = tokio::spawn(keep_posting(api.clone(), "before", stop.clone()));
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    stop.store(true, Ordering::Relaxed);
    let acknowledged = before.await??;
    assert!(acknowledged.len() > 20, "{} jobs", acknowledged.len());

    // The backup runs while another client keeps posting and the engine keeps finishing jobs.
    let during_stop = Arc::new(AtomicBool::new(false));
    let during = tokio::spawn(keep_posting(api.clone(), "during", during_stop.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let backup_dir = ws.path("backup-1");
    let out = ws.gateway_cli_ok(&["backup", "--to", backup_dir.to_str().unwrap_or_default()])?;
    during_stop.store(true, Ordering::Relaxed);
    let during_ids = during.await??;
    assert!(out.contains("backed up 2 databases"), "{out}");
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(backup_dir.join("manifest.json"))?)?;
    assert!(manifest["jobs"].as_u64().unwrap_or(0) >= acknowledged.len() as u64, "{manifest}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777).unwrap_or(0);
        assert_eq!(mode(&backup_dir), 0o700);
        assert_eq!(mode(&backup_dir.join("control.sqlite3")), 0o600);
        let key = std::fs::read_dir(backup_dir.join("keys"))?.next().expect("a signing key")?.path();
        assert_eq!(mode(&key), 0o600, "signing keys stay private in the backup");
    }

    // Disaster: everything under the data directory is gone.
    drop(engine);
    drop(gw);
    std::fs::remove_dir_all(ws.data_dir())?;
    let restored = ws.gateway_cli_ok(&["restore", "--from", backup_dir.to_str().unwrap_or_default()])?;
    println!("{}", restored.trim());
    assert!(restored.contains("restored 2 databases"), "{restored}");

    // The old user token and the old engine token work; every acknowledged job is back; the queue drains.
    let gw = Gateway::start(&ws, &[]).await?;
    let api = Api::new(&gw, &token);
    for id in &acknowledged {
        let job = api.get(&format!("/jobs/{id}")).await?;
        assert_eq!(job.status, StatusCode::OK, "job {id} acknowledged before the backup is missing");
    }
    let _engine = Engine::start(&ws, &gw, "local", 2, &[])?;
    let all = eventually(Duration::from_secs(30), "the restored queue to drain", || async {
        let jobs = api.all_jobs(None).await?;
        Ok(jobs.iter().all(|j| j["status"] == "succeeded").then_some(jobs))
    })
    .await?;
    assert!(all.len() >= acknowledged.len());
    assert!(!during_ids.is_empty(), "the load went on during the backup");
    // Jobs acknowledged while the backup ran are in it or not, but never half there.
    let restored_ids: std::collections::HashSet<&str> = all.iter().filter_map(|j| j["id"].as_str()).collect();
    let in_backup = during_ids.iter().filter(|id| restored_ids.contains(id.as_str())).count();
    println!(
        "{} jobs acknowledged before the backup, all restored; {in_backup} of {} posted during it",
        acknowledged.len(),
        during_ids.len()
    );
    drop(gw);

    // Restoring over live data needs --force and keeps the old data aside; a damaged backup is refused.
    let refused = ws.gateway_cli(&["restore", "--from", backup_dir.to_str().unwrap_or_default()])?;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--force"));
    let forced = ws.gateway_cli_ok(&["restore", "--force", "--from", backup_dir.to_str().unwrap_or_default()])?;
    assert!(forced.contains("moved the previous data directory aside"), "{forced}");
    let shard = backup_dir.join("shards").join("local.sqlite3");
    let mut bytes = std::fs::read(&shard)?;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&shard, bytes)?;
    let damaged = ws.gateway_cli(&["restore", "--force", "--from", backup_dir.to_str().unwrap_or_default()])?;
    assert!(!damaged.status.success());
    assert!(String::from_utf8_lossy(&damaged.stderr).contains("does not match the manifest"));
    let again = ws.gateway_cli(&["backup", "--to", backup_dir.to_str().unwrap_or_default()])?;
    assert!(!again.status.success(), "a backup never overwrites an earlier one");
    Ok(())
}
