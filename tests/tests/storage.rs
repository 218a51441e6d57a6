//! Storage faults with the real gateway: a shard found damaged at start is quarantined and reported while the
//! other shards keep serving.

use std::time::Duration;

use flowork_tests::{Api, Gateway, Workspace, eventually};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn a_damaged_shard_is_quarantined_and_the_other_engines_keep_serving() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    ws.add_engine("good")?;
    ws.add_engine("bad")?;
    let token = ws.mint("alice", "1h")?;
    let gw = Gateway::start(&ws, &[]).await?;
    let api = Api::new(&gw, &token);
    for engine in ["good", "bad"] {
        let reply = api.post_job(&format!("before-{engine}"), &json!({"engine": engine, "kind": "echo"})).await?;
        assert_eq!(reply.status, StatusCode::CREATED);
    }
    drop(gw);

    // The bad shard's header is overwritten, as a failing disk or a stray write would.
    let shard = ws.data_dir().join("shards").join("bad.sqlite3");
    let mut bytes = std::fs::read(&shard)?;
    for byte in bytes.iter_mut().take(100) {
        *byte = 0x5a;
    }
    std::fs::write(&shard, bytes)?;

    let gw = Gateway::start(&ws, &[]).await?;
    let api = Api::new(&gw, &token);
    let http = reqwest::Client::new();
    let status = eventually(Duration::from_secs(20), "the damaged shard to be reported", || async {
        let status: serde_json::Value = http.get(format!("{}/status", gw.base)).send().await?.json().await?;
        Ok((status["quarantined"] == json!(["bad"])).then_some(status))
    })
    .await?;
    let bad_entry = status["engines"].as_array().and_then(|e| e.iter().find(|e| e["id"] == "bad")).cloned();
    assert_eq!(bad_entry.map(|e| e["quarantined"].clone()), Some(json!(true)));

    let refused = api.post_job("after-bad", &json!({"engine": "bad", "kind": "echo"})).await?;
    assert_eq!((refused.status, refused.code()), (StatusCode::SERVICE_UNAVAILABLE, "shard_quarantined"));
    assert!(refused.body["message"].as_str().unwrap_or("").contains("restore it from a backup"), "{}", refused.body);
    assert!(!refused.body["message"].as_str().unwrap_or("").contains('/'), "no paths to clients");
    let accepted = api.post_job("after-good", &json!({"engine": "good", "kind": "echo"})).await?;
    assert_eq!(accepted.status, StatusCode::CREATED, "{}", accepted.body);
    let listed = api.all_jobs(None).await?;
    assert_eq!(listed.len(), 2, "the good engine's jobs are listed: {listed:?}");
    for path in ["/metrics", "/drain", "/readyz"] {
        let answer = http.get(format!("{}{path}", gw.base)).send().await?;
        assert_eq!(answer.status(), StatusCode::OK, "{path}");
    }
    let quarantine: Vec<String> = std::fs::read_dir(ws.data_dir().join("quarantine"))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().to_string()))
        .collect();
    assert!(quarantine.iter().any(|name| name.starts_with("bad-") && name.ends_with(".sqlite3")), "{quarantine:?}");
    assert!(!shard.exists(), "the damaged file was moved, not left in place");
    assert!(gw.process.log_text().contains("a shard is damaged"));
    Ok(())
}

/// A size-limited tmpfs mounted over the workspace's data directory, unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(at: &std::path::Path, size: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(at)?;
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(at)
            .status()?;
        anyhow::ensure!(
            status.success(),
            "mounting a {size} tmpfs failed: this test needs root (or CAP_SYS_ADMIN) to make a small real file system"
        );
        Ok(Self(at.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazy: processes that still hold files there are killed by their own drops.
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system holding `dir` with one file; returns it.
fn fill(dir: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path)?;
    let chunk = vec![0u8; 64 * 1024];
    loop {
        if file.write_all(&chunk).is_err() {
            break;
        }
    }
    // Whatever is left below a chunk.
    while file.write_all(&[0u8; 512]).is_ok() {}
    let _ = file.sync_all();
    Ok(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503_storage_full_and_recovers_without_losing_a_job() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    let disk = SmallDisk::mount(&ws.data_dir(), "8m")?;
    ws.add_engine("local")?;
    let token = ws.mint("alice", "1h")?;
    let gw = Gateway::start(&ws, &[]).await?;
    let api = Api::new(&gw, &token);
    let payload = json!({"blob": "x".repeat(4_000)});
    let job = |n: usize| json!({"engine": "local", "kind": "echo", "payload": {"n": n, "data": payload}});
    let mut acknowledged = Vec::new();
    for n in 0..20 {
        let reply = api.post_job(&format!("before-{n}"), &job(n)).await?;
        assert_eq!(reply.status, StatusCode::CREATED);
        acknowledged.push(reply.body["id"].as_str().unwrap_or_default().to_string());
    }

    let filler = fill(&ws.data_dir())?;
    let mut full = None;
    for n in 0..500 {
        let reply = api.post_job(&format!("full-{n}"), &job(n)).await?;
        match reply.status {
            StatusCode::CREATED => acknowledged.push(reply.body["id"].as_str().unwrap_or_default().to_string()),
            StatusCode::SERVICE_UNAVAILABLE => {
                full = Some(reply);
                break;
            }
            other => anyhow::bail!("unexpected answer on a full disk: {other} {}", reply.body),
        }
    }
    let full = full.ok_or_else(|| anyhow::anyhow!("500 jobs fitted on a full disk"))?;
    assert_eq!(full.code(), "storage_full", "{}", full.body);
    assert!(full.headers.contains_key("retry-after"));
    assert!(full.body["message"].as_str().unwrap_or_default().contains("disk is full"));
    assert_eq!(reqwest::get(format!("{}/healthz", gw.base)).await?.status(), StatusCode::OK, "the gateway lives on");

    // Space returns: the same request now succeeds, and every job acknowledged before is intact.
    std::fs::remove_file(&filler)?;
    let recovered = eventually(Duration::from_secs(20), "enqueues to succeed again", || {
        let api = api.clone();
        let body = job(9_999);
        async move {
            let reply = api.post_job("after-space-returns", &body).await?;
            Ok((reply.status == StatusCode::CREATED).then_some(reply))
        }
    })
    .await?;
    acknowledged.push(recovered.body["id"].as_str().unwrap_or_default().to_string());
    for id in &acknowledged {
        let reply = api.get(&format!("/jobs/{id}")).await?;
        assert_eq!(reply.status, StatusCode::OK, "job {id} was lost");
    }
    drop(gw);
    let conn = rusqlite::Connection::open(ws.data_dir().join("shards").join("local.sqlite3"))?;
    let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    assert_eq!(check, "ok");
    let jobs: i64 = conn.query_row("SELECT count(*) FROM jobs", [], |r| r.get(0))?;
    assert_eq!(jobs as usize, acknowledged.len(), "exactly the acknowledged jobs, nothing half-written");
    println!(
        "full disk: {} jobs acknowledged, 503 storage_full once full, recovered, quick_check ok",
        acknowledged.len()
    );
    drop(conn);
    drop(disk);
    Ok(())
}
