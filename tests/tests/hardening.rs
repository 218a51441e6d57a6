//! Hardening of the unauthenticated surface (#21): slow or idle connections, the connection cap, the open-file limit,
//! the nonce flood, `nosniff` on every answer, and the GUI's `_headers` file.
//!
//! The new settings are given as environment variables, so a gateway that lacks them still starts and the test
//! fails on the behaviour, not on an unknown flag.

use std::time::Duration;

use flowork_tests::{Gateway, Workspace, eventually};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sockets that start a request and never finish it.
const SLOWLORIS: usize = 300;

/// A fresh connection each time (no pool), as a new client would make; bounded so a stuck gateway fails the test.
async fn healthz(gw: &Gateway) -> anyhow::Result<StatusCode> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).timeout(Duration::from_secs(30)).build()?;
    Ok(client.get(format!("{}/healthz", gw.base)).send().await?.status())
}

fn addr(gw: &Gateway) -> &str {
    gw.base.trim_start_matches("http://")
}

/// Waits until the server closes `socket` (end of stream or reset), reading and dropping whatever it sends.
async fn closed_by_server(mut socket: TcpStream) -> anyhow::Result<()> {
    let mut buffer = [0u8; 1024];
    let read_all = async {
        loop {
            match socket.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(90), read_all)
        .await
        .map_err(|_| anyhow::anyhow!("the gateway kept an idle connection open"))
}

/// One complete request on a kept-alive connection; returns once its answer has arrived.
async fn one_request(socket: &mut TcpStream) -> anyhow::Result<()> {
    socket.write_all(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n").await?;
    let mut seen = Vec::new();
    let mut buffer = [0u8; 1024];
    while !String::from_utf8_lossy(&seen).contains("\r\n\r\n") {
        let read = socket.read(&mut buffer).await?;
        anyhow::ensure!(read > 0, "connection closed before the answer");
        seen.extend_from_slice(&buffer[..read]);
    }
    anyhow::ensure!(seen.starts_with(b"HTTP/1.1 200"), "unexpected answer: {}", String::from_utf8_lossy(&seen));
    Ok(())
}

#[tokio::test]
async fn slowloris_sockets_are_closed_and_healthz_keeps_answering() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    // Started with a soft limit below the number of sockets: without raising it the gateway runs out of
    // descriptors and stops accepting anyone.
    let gw = Gateway::start_under(
        &ws,
        &["sh", "-c", "ulimit -Sn 128 && exec \"$0\" \"$@\""],
        &[],
        &[("FLOWORK_HEADER_READ_TIMEOUT", "3s"), ("FLOWORK_IDLE_TIMEOUT", "3s")],
    )
    .await?;

    let mut sockets = Vec::new();
    for _ in 0..SLOWLORIS {
        let mut socket = TcpStream::connect(addr(&gw)).await?;
        socket.write_all(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Slow: ").await?;
        sockets.push(socket);
    }
    // Kept-alive connections that went quiet after one request.
    for _ in 0..5 {
        let mut socket = TcpStream::connect(addr(&gw)).await?;
        one_request(&mut socket).await?;
        sockets.push(socket);
    }
    for _ in 0..3 {
        assert_eq!(healthz(&gw).await?, StatusCode::OK, "/healthz answers while the slow sockets are open");
    }
    let closes: Vec<_> = sockets.into_iter().map(|socket| tokio::spawn(closed_by_server(socket))).collect();
    for close in closes {
        close.await??;
    }
    assert_eq!(healthz(&gw).await?, StatusCode::OK);

    // The raise is logged, and on Linux visible in the process's limits.
    let log = gw.process.log_text();
    let line = log
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["message"] == "open-file limit")
        .ok_or_else(|| anyhow::anyhow!("no open-file limit line in the log"))?;
    assert_eq!(line["before"], 128);
    let raised = line["open_files"].as_u64().unwrap_or(0);
    assert!(raised > 128, "the soft limit was raised: {line}");
    if cfg!(target_os = "linux") {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", gw.process.pid()))?;
        let soft: u64 = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        assert_eq!(soft, raised);
    }
    Ok(())
}

#[tokio::test]
async fn a_connection_past_the_cap_waits_for_a_free_slot() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    let gw = Gateway::start_with_env(&ws, "127.0.0.1:0", &[], &[("FLOWORK_MAX_CONNECTIONS", "8")]).await?;
    // The harness's readiness client may still hold a connection: let it go before the slots are counted.
    let mut held = eventually(Duration::from_secs(30), "eight held connections", || {
        let gw = &gw;
        async move {
            let mut held = Vec::new();
            for _ in 0..8 {
                let mut socket = TcpStream::connect(addr(gw)).await?;
                if tokio::time::timeout(Duration::from_secs(2), one_request(&mut socket)).await.is_err() {
                    return Ok(None);
                }
                held.push(socket);
            }
            Ok(Some(held))
        }
    })
    .await?;
    let ninth = tokio::spawn({
        let base = gw.base.clone();
        async move {
            let client = reqwest::Client::builder().pool_max_idle_per_host(0).build()?;
            anyhow::Ok(client.get(format!("{base}/healthz")).send().await?.status())
        }
    });
    // Not a speed check: with every slot held, nothing can answer it, however long we wait.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!ninth.is_finished(), "a ninth connection was served past a cap of 8");
    drop(held.pop());
    let status = tokio::time::timeout(Duration::from_secs(30), ninth).await???;
    assert_eq!(status, StatusCode::OK, "a freed slot lets the waiting connection in");
    Ok(())
}

/// The nonces in the control database (SQLite file or PostgreSQL).
fn nonces_stored(ws: &Workspace) -> anyhow::Result<u64> {
    if let Some(url) = &ws.store {
        let output =
            std::process::Command::new("psql").arg(url).args(["-tAc", "SELECT count(*) FROM auth_nonces"]).output()?;
        anyhow::ensure!(output.status.success(), "psql: {}", String::from_utf8_lossy(&output.stderr));
        return Ok(String::from_utf8_lossy(&output.stdout).trim().parse()?);
    }
    let db = rusqlite::Connection::open(ws.data_dir().join("control.sqlite3"))?;
    Ok(db.query_row("SELECT count(*) FROM auth_nonces", [], |r| r.get::<_, i64>(0))? as u64)
}

/// `GET /auth/nonce` as the client `ip` (through a trusted proxy's `X-Forwarded-For`).
async fn nonce_as(gw: &Gateway, ip: &str) -> anyhow::Result<reqwest::Response> {
    Ok(reqwest::Client::new().get(format!("{}/auth/nonce", gw.base)).header("x-forwarded-for", ip).send().await?)
}

#[tokio::test]
async fn a_nonce_flood_is_limited_per_address_and_bounded_in_total() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    let gw = Gateway::start_with_env(
        &ws,
        "127.0.0.1:0",
        &["--trusted-proxy", "127.0.0.1/32"],
        &[("FLOWORK_RATE_NONCE", "5/m"), ("FLOWORK_MAX_NONCES", "12"), ("FLOWORK_NONCE_TTL", "3s")],
    )
    .await?;

    // One client: five, then 429 with Retry-After.
    for _ in 0..5 {
        assert_eq!(nonce_as(&gw, "203.0.113.1").await?.status(), StatusCode::OK);
    }
    let refused = nonce_as(&gw, "203.0.113.1").await?;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers()["retry-after"].to_str()?.parse::<u64>()? >= 1);
    let body: Value = refused.json().await?;
    assert_eq!(body["error"], "rate_limited");

    // Many clients: the total stops at the bound, whatever the addresses.
    let mut codes = Vec::new();
    for client in 2..=5 {
        for _ in 0..5 {
            let answer = nonce_as(&gw, &format!("203.0.113.{client}")).await?;
            let status = answer.status();
            if status == StatusCode::TOO_MANY_REQUESTS {
                assert!(answer.headers().contains_key("retry-after"));
                let body: Value = answer.json().await?;
                codes.push(body["error"].as_str().unwrap_or_default().to_string());
            } else {
                assert_eq!(status, StatusCode::OK);
                codes.push("ok".into());
            }
        }
    }
    assert_eq!(codes.iter().filter(|c| *c == "ok").count(), 7, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| *c == "too_many_nonces").count(), 13, "{codes:?}");
    assert_eq!(nonces_stored(&ws)?, 12);
    // Past the last one's lifetime (3 s), every kept nonce has expired.
    tokio::time::sleep(Duration::from_millis(3_500)).await;

    // Once they expire, the expired ones are pruned and nonces are issued again; the table never passed the bound.
    let mut client = 10;
    eventually(Duration::from_secs(60), "a nonce after the others expired", || {
        // A new address each time, so the per-address limit does not get in the way.
        client = client % 250 + 1;
        let (gw, ip) = (&gw, format!("198.51.100.{client}"));
        async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok((nonce_as(gw, &ip).await?.status() == StatusCode::OK).then_some(()))
        }
    })
    .await?;
    assert_eq!(nonces_stored(&ws)?, 1, "the expired nonces were pruned");
    Ok(())
}

#[tokio::test]
async fn every_api_answer_says_nosniff() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    let gw = Gateway::start(&ws, &[]).await?;
    let token = ws.mint("alice", "1h")?;
    let client = reqwest::Client::new();
    let answers = [
        client.get(format!("{}/jobs", gw.base)).bearer_auth(&token).send().await?,
        client.get(format!("{}/jobs", gw.base)).send().await?,
        client.get(format!("{}/jobs/00000000-0000-0000-0000-000000000000", gw.base)).bearer_auth(&token).send().await?,
        client.get(format!("{}/no/such/route", gw.base)).send().await?,
        client.delete(format!("{}/jobs", gw.base)).send().await?,
        client.get(format!("{}/healthz", gw.base)).send().await?,
        client.get(format!("{}/auth/nonce", gw.base)).send().await?,
        client.get(format!("{}/openapi.json", gw.base)).send().await?,
    ];
    let mut statuses = Vec::new();
    for answer in answers {
        statuses.push(answer.status().as_u16());
        assert_eq!(
            answer.headers().get("x-content-type-options").map(|v| v.as_bytes()),
            Some(&b"nosniff"[..]),
            "{} {}",
            answer.status(),
            answer.url()
        );
    }
    assert_eq!(statuses, [200, 401, 404, 404, 405, 200, 200, 200]);
    Ok(())
}

#[tokio::test]
async fn the_gui_is_served_with_its_security_headers_but_not_its_headers_file() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    let gui = ws.path("gui");
    std::fs::create_dir_all(&gui)?;
    std::fs::write(gui.join("index.html"), "<!doctype html><title>flowork</title>")?;
    std::fs::write(
        gui.join("_headers"),
        "/*\n  Content-Security-Policy: default-src 'none'; script-src 'self'\n  X-Frame-Options: DENY\n",
    )?;
    std::fs::write(gui.join("_redirects"), "/old /new 301\n")?;
    let gui_dir = gui.to_string_lossy().to_string();
    let gw = Gateway::start(&ws, &["--gui-dir", &gui_dir]).await?;
    let client = reqwest::Client::new();

    let page = client.get(format!("{}/", gw.base)).send().await?;
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.headers()["content-security-policy"], "default-src 'none'; script-src 'self'");
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");

    for path in ["/_headers", "/%5Fheaders", "/%5fHeaders", "/_redirects"] {
        let answer = client.get(format!("{}{path}", gw.base)).send().await?;
        assert_eq!(answer.status(), StatusCode::NOT_FOUND, "{path}");
        let body: Value = answer.json().await?;
        assert_eq!(body["error"], "route_not_found", "{path}");
    }
    drop(gw);

    // A GUI folder without `_headers` still gets a Content-Security-Policy and frame protection.
    std::fs::remove_file(gui.join("_headers"))?;
    let gw = Gateway::start(&ws, &["--gui-dir", &gui_dir]).await?;
    let page = client.get(format!("{}/", gw.base)).send().await?;
    assert!(page.headers()["content-security-policy"].to_str()?.contains("frame-ancestors 'none'"));
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    Ok(())
}
