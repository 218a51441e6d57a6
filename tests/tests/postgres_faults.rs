//! PostgreSQL faults with the real gateway: a server that turns read-only is reported to clients as
//! `storage_read_only` (503 with Retry-After, no driver detail), reads keep working, and writes resume once it is
//! writable again. The SQLite faults (full disk, damaged shard) are in `storage.rs`.

use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use flowork_tests::{Api, Gateway, Workspace, eventually, on_postgres};
use reqwest::StatusCode;
use serde_json::json;

/// Runs SQL as the test server's superuser.
fn psql(sql: &str) -> anyhow::Result<()> {
    let server = std::env::var("FLOWORK_TEST_POSTGRES").context("FLOWORK_TEST_POSTGRES")?;
    let output = Command::new("psql").arg(&server).args(["-v", "ON_ERROR_STOP=1", "-q", "-c", sql]).output()?;
    anyhow::ensure!(output.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&output.stderr));
    Ok(())
}

/// Sets the database's default read-only mode and drops its open sessions, so the gateway reconnects with it.
fn set_read_only(database: &str, read_only: bool) -> anyhow::Result<()> {
    let setting = if read_only { "on" } else { "off" };
    psql(&format!("ALTER DATABASE {database} SET default_transaction_read_only = {setting}"))?;
    psql(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}' AND pid <> pg_backend_pid()"
    ))
}

#[tokio::test]
async fn a_read_only_server_is_reported_as_such_and_writes_resume_when_it_is_writable() -> anyhow::Result<()> {
    if !on_postgres() {
        eprintln!("PostgreSQL only: runs in the PostgreSQL pass of scripts/test.sh");
        return Ok(());
    }
    let ws = Workspace::new()?;
    let url = ws.store.clone().context("a PostgreSQL workspace has a store URL")?;
    let database = url.rsplit('/').next().context("a database name")?.split('?').next().unwrap_or_default().to_string();
    ws.add_engine("e1")?;
    let token = ws.mint("alice", "1h")?;
    let gw = Gateway::start(&ws, &[]).await?;
    let api = Api::new(&gw, &token);
    let first = api.post_job("before", &json!({"engine": "e1", "kind": "echo"})).await?;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);

    set_read_only(&database, true)?;
    // The first requests may meet a session that was just cut (store_unavailable); then the server's refusal.
    let mut attempt = 0;
    let refused = eventually(Duration::from_secs(30), "a write to be refused as read-only", || {
        attempt += 1;
        let key = format!("while-read-only-{attempt}");
        let api = &api;
        async move {
            let reply = api.post_job(&key, &json!({"engine": "e1", "kind": "echo"})).await?;
            Ok((reply.code() == "storage_read_only").then_some(reply))
        }
    })
    .await?;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers.get("retry-after").is_some(), "a 503 says when to retry");
    let message = refused.body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("read-only") && !message.contains("PostgreSQL") && !message.contains("25006"),
        "{message}"
    );
    let listed = api.all_jobs(None).await?;
    assert_eq!(listed.len(), 1, "reads still work: {listed:?}");

    set_read_only(&database, false)?;
    let mut attempt = 0;
    eventually(Duration::from_secs(30), "writes to resume", || {
        attempt += 1;
        let key = format!("after-{attempt}");
        let api = &api;
        async move {
            Ok((api.post_job(&key, &json!({"engine": "e1", "kind": "echo"})).await?.status == StatusCode::CREATED)
                .then_some(()))
        }
    })
    .await?;
    assert!(gw.process.log_text().contains("25006"), "the log keeps the server's code");
    Ok(())
}
