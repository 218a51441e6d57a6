//! The canary example config in `deploy/nginx-canary.conf`, run by a real nginx (Debian's) in front of two
//! gateways on one data directory: it splits requests 90/10, and when the old gateway drains its 503s are sent on
//! to the canary, so clients see no refusals.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use flowork_tests::{Gateway, Workspace, eventually, free_port};
use reqwest::StatusCode;
use serde_json::json;

/// `flowork_http_requests_total` for created jobs, read from one gateway's `/metrics`.
async fn jobs_created(gateway: &Gateway) -> anyhow::Result<u64> {
    let text = reqwest::get(format!("{}/metrics", gateway.base)).await?.text().await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("flowork_http_requests_total{") && l.contains("route=\"/jobs\""))
        .filter(|l| l.contains("method=\"POST\"") && l.contains("status=\"201\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64)
}

/// nginx as a child process; stopped with SIGTERM when dropped, so its workers exit with it (SIGKILL would leave
/// them running).
struct Nginx(std::process::Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

fn nginx_binary() -> anyhow::Result<String> {
    for candidate in ["/usr/sbin/nginx", "/usr/bin/nginx"] {
        if Path::new(candidate).exists() {
            return Ok(candidate.into());
        }
    }
    anyhow::bail!("nginx is missing: install it with `apt-get install -y nginx` (the README's test command does)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_nginx_config_splits_90_10_and_moves_traffic_off_a_draining_gateway() -> anyhow::Result<()> {
    let nginx = nginx_binary()?;
    let ws = Workspace::new()?;
    ws.add_engine("local")?;
    let token = ws.mint("alice", "1h")?;
    // Set up as if misconfigured for Cloudflare: a CF-Connecting-IP that got through nginx would be believed and
    // refused (only loopback may call), so every success below also shows the example strips it.
    let trusting =
        ["--trusted-proxy", "127.0.0.1/32", "--client-ip-header", "cf-connecting-ip", "--allow-cidr", "127.0.0.0/8"];
    let old = Gateway::start(&ws, &trusting).await?;
    let canary = Gateway::start(&ws, &trusting).await?;
    let port_of = |g: &Gateway| g.base.rsplit(':').next().unwrap_or_default().to_string();
    let proxy_port = free_port()?;

    // The example as shipped, with its three ports swapped for this test's.
    let example = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nginx-canary.conf"))?;
    let site = example
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{}", port_of(&old)))
        .replace("127.0.0.1:8081", &format!("127.0.0.1:{}", port_of(&canary)))
        .replace("127.0.0.1:8000", &format!("127.0.0.1:{proxy_port}"));
    let prefix = ws.path("nginx");
    std::fs::create_dir_all(prefix.join("logs"))?;
    std::fs::write(prefix.join("flowork-canary.conf"), site)?;
    std::fs::write(
        prefix.join("nginx.conf"),
        format!(
            "daemon off;\nworker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/logs/error.log warn;\n\
             events {{ worker_connections 256; }}\n\
             http {{ access_log off; client_body_temp_path {p}/body; proxy_temp_path {p}/proxy;\n\
             include {p}/flowork-canary.conf; }}\n",
            p = prefix.display()
        ),
    )?;
    let _proxy = Nginx(
        Command::new(&nginx)
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(prefix.join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let base = format!("http://127.0.0.1:{proxy_port}");
    let http = reqwest::Client::new();
    eventually(Duration::from_secs(10), "nginx to listen", || {
        let url = format!("{base}/healthz");
        async move { Ok(reqwest::get(url).await.ok().filter(|r| r.status().is_success()).map(|_| ())) }
    })
    .await?;

    let post = |key: String| {
        http.post(format!("{base}/jobs"))
            .bearer_auth(&token)
            .header("Idempotency-Key", key)
            .header("CF-Connecting-IP", "10.9.9.9")
            .json(&json!({"engine": "local", "kind": "echo"}))
            .send()
    };
    for n in 0..100 {
        assert_eq!(post(format!("split-{n}")).await?.status(), StatusCode::CREATED);
    }
    let (to_old, to_canary) = (jobs_created(&old).await?, jobs_created(&canary).await?);
    assert_eq!(to_old + to_canary, 100);
    assert!((85..=95).contains(&to_old), "old {to_old}, canary {to_canary}: not a 90/10 split");

    // Drain the old build: everything still gets through, now all of it by the canary.
    let admin = ws.gateway_cli_ok(&["admin", "token", "--scope", "drain", "--ttl", "5m"])?;
    let drained = http.post(format!("{}/admin/drain", old.base)).bearer_auth(admin.trim()).send().await?;
    assert_eq!(drained.status(), StatusCode::OK);
    for n in 0..50 {
        let reply = post(format!("drained-{n}")).await?;
        assert_eq!(reply.status(), StatusCode::CREATED, "a client saw the drain: {}", reply.text().await?);
    }
    assert_eq!(jobs_created(&old).await?, to_old, "the draining gateway created nothing more");
    assert_eq!(jobs_created(&canary).await?, to_canary + 50);
    println!("nginx example: 100 jobs split {to_old}/{to_canary}; after the drain 50 of 50 created through the canary");
    Ok(())
}
