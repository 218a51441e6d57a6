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
