//! The engine-protocol version header (`Flowork-Protocol`, docs/engine-protocol.md): the gateway serves engines
//! that send a major it speaks or no header at all, refuses an unknown major with a JSON error before looking at
//! the token, names its own version on every engine answer, and the Rust engine sends the header.

use std::time::Duration;

use flowork_tests::{EngineApi, Gateway, Process, Workspace, bin};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn claim_with(engine: &EngineApi, version: Option<&str>) -> anyhow::Result<(StatusCode, Option<String>, Value)> {
    let mut request = engine
        .http
        .post(format!("{}/internal/claim", engine.base))
        .header("x-engine-token", &engine.token)
        .json(&json!({"max": 1, "wait_ms": 0, "lease_ms": 30_000, "worker": "test"}));
    if let Some(version) = version {
        request = request.header("Flowork-Protocol", version);
    }
    let response = request.send().await?;
    let status = response.status();
    let spoken = response.headers().get("flowork-protocol").and_then(|v| v.to_str().ok()).map(str::to_string);
    Ok((status, spoken, response.json().await?))
}

#[tokio::test]
async fn the_gateway_serves_known_majors_and_refuses_unknown_ones() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    let token = ws.add_engine("local")?;
    let gw = Gateway::start(&ws, &[]).await?;
    let engine = EngineApi::new(&gw, &token);

    // Engines from before the header, and engines speaking major 1 (any minor), are served.
    for version in [None, Some("1"), Some("1.0"), Some("1.9")] {
        let (status, spoken, body) = claim_with(&engine, version).await?;
        assert_eq!(status, StatusCode::OK, "{version:?}: {body}");
        assert_eq!(spoken.as_deref(), Some(flowork_common::wire::PROTOCOL_VERSION), "{version:?}");
        assert_eq!(body["leases"], json!([]));
    }
    // An unknown major or a header that is no version: a clear refusal naming what the gateway speaks.
    for version in ["2", "2.0", "banana"] {
        let (status, spoken, body) = claim_with(&engine, Some(version)).await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{version}: {body}");
        assert_eq!(body["error"], "unsupported_protocol", "{body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains("major 1") && message.contains(version), "{message}");
        assert_eq!(spoken.as_deref(), Some(flowork_common::wire::PROTOCOL_VERSION));
    }
    // The version is checked before the token: an incompatible engine learns that first.
    let stranger = EngineApi::new(&gw, "not-a-token");
    let (status, _, body) = claim_with(&stranger, Some("2")).await?;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("unsupported_protocol")));
    let (status, _, body) = claim_with(&stranger, Some("1")).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    // The public API does not care about the header.
    let reply =
        reqwest::Client::new().get(format!("{}/healthz", gw.base)).header("Flowork-Protocol", "9").send().await?;
    assert_eq!(reply.status(), StatusCode::OK);
    Ok(())
}

#[tokio::test]
async fn the_rust_engine_sends_its_protocol_version() -> anyhow::Result<()> {
    // A stand-in gateway that records the engine's first request (its token check) and hangs up.
    let ws = Workspace::new()?;
    ws.add_engine("local")?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let mut command = std::process::Command::new(bin("flowork-engine"));
    command
        .arg("--gateway")
        .arg(format!("http://{}", listener.local_addr()?))
        .args(["--engine-id", "local", "--token-file"])
        .arg(ws.token_file("local"));
    let mut engine = Process::spawn(command, ws.path("engine.log"))?;
    let (mut socket, _) = tokio::time::timeout(Duration::from_secs(30), listener.accept()).await??;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(30), socket.read(&mut buf)).await??;
        anyhow::ensure!(n > 0, "the engine closed the connection before sending a request");
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    socket.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await?;
    engine.signal("KILL")?;
    assert!(head.starts_with("get /internal/whoami"), "{head}");
    let sent = format!("\r\nflowork-protocol: {}\r\n", flowork_common::wire::PROTOCOL_VERSION);
    assert!(head.contains(&sent), "{head}");
    Ok(())
}
