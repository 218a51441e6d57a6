//! Starting a throw-away gateway and engines for one measurement run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;

use crate::Args;

/// The engine every run uses.
pub const ENGINE: &str = "bench";

/// A gateway (and later engines) on a fresh data directory (or fresh PostgreSQL database), killed on drop.
pub struct Stack {
    pub base: String,
    pub token: String,
    dir: tempfile::TempDir,
    bin: PathBuf,
    children: Vec<Child>,
    /// Kept for its `Drop`: the run's database goes when the stack does (after its processes).
    _database: Option<FreshDatabase>,
}

/// A database made for one run on a PostgreSQL server, dropped when the run ends.
pub struct FreshDatabase {
    server: String,
    name: String,
    pub url: String,
}

impl FreshDatabase {
    fn create(server: &str) -> anyhow::Result<Self> {
        let name = format!("loadtest_{}", unique().replace('-', "_"));
        psql(server, &format!("CREATE DATABASE {name}"))?;
        let base = server.rsplit_once('/').map(|(base, _)| base).unwrap_or(server);
        Ok(Self { server: server.to_string(), url: format!("{base}/{name}"), name })
    }
}

impl Drop for FreshDatabase {
    fn drop(&mut self) {
        if let Err(error) = psql(&self.server, &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)) {
            eprintln!("could not drop the run's database {}: {error}", self.name);
        }
    }
}

fn psql(server: &str, sql: &str) -> anyhow::Result<()> {
    let out = Command::new("psql").args([server, "-q", "-v", "ON_ERROR_STOP=1", "-c", sql]).output()?;
    if !out.status.success() {
        bail!("psql {sql:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn bin_dir(args: &Args) -> anyhow::Result<PathBuf> {
    match &args.bin_dir {
        Some(dir) => Ok(dir.clone()),
        None => Ok(std::env::current_exe()?.parent().context("executable has no folder")?.to_path_buf()),
    }
}

/// Runs a `flowork-gateway` sub-command on a data directory (or on `store`); its standard output.
fn gateway_cli(gateway: &Path, data: &Path, store: Option<&str>, cli: &[&str]) -> anyhow::Result<String> {
    let mut command = Command::new(gateway);
    command.args(cli).arg("--data-dir").arg(data);
    if let Some(store) = store {
        command.env("FLOWORK_STORE", store);
    }
    let out = command.output()?;
    if !out.status.success() {
        bail!("flowork-gateway {cli:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// A suffix that differs between processes and calls.
pub fn unique() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Starts `flowork-gateway serve` on a free port with the abuse controls off (a load test measures the write
/// path, not rate limits or caps).
fn serve(gateway: &Path, data: &Path, store: Option<&str>) -> anyhow::Result<(Child, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut command = Command::new(gateway);
    if let Some(store) = store {
        command.env("FLOWORK_STORE", store);
    }
    let child = command
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--rate-ip", "0", "--rate-user", "0"])
        .args(["--max-queue-depth", "0", "--max-total-depth", "0", "--max-user-inflight", "0"])
        .arg("--data-dir")
        .arg(data)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting flowork-gateway")?;
    Ok((child, format!("http://127.0.0.1:{port}")))
}

/// Startup mode: registers `--shards` engines, starts the gateway and times its first accepted `POST /jobs`.
pub async fn measure_startup(args: &Args) -> anyhow::Result<f64> {
    let bin = bin_dir(args)?;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let gateway = bin.join("flowork-gateway");
    for shard in 0..args.shards.max(1) {
        gateway_cli(&gateway, &data, None, &["engine", "add", &format!("shard-{shard}"), "--owner", "loadtest"])?;
    }
    let token = gateway_cli(&gateway, &data, None, &["token", "mint", "--user", "loadtest", "--ttl", "1h"])?;
    let client = reqwest::Client::new();
    let started = Instant::now();
    let (mut child, base) = serve(&gateway, &data, None)?;
    let body = json!({"engine": "shard-0", "kind": "echo"});
    let result = loop {
        let answer = client
            .post(format!("{base}/jobs"))
            .bearer_auth(&token)
            .header("idempotency-key", "startup")
            .json(&body)
            .send()
            .await;
        if answer.is_ok_and(|r| r.status().as_u16() == 201) {
            break Ok(started.elapsed().as_secs_f64() * 1_000.0);
        }
        if started.elapsed() > Duration::from_secs(20) {
            break Err(anyhow::anyhow!("the gateway accepted no job within 20 s"));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    result
}

impl Stack {
    pub async fn start(args: &Args) -> anyhow::Result<Self> {
        let bin = bin_dir(args)?;
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        let gateway = bin.join("flowork-gateway");
        let database = args.postgres.as_deref().map(FreshDatabase::create).transpose()?;
        let store = database.as_ref().map(|d| d.url.clone());
        let run = |cli: &[&str]| gateway_cli(&gateway, &data, store.as_deref(), cli);
        let token_file = dir.path().join("engine.token");
        run(&[
            "engine",
            "add",
            ENGINE,
            "--owner",
            "loadtest",
            "--token-file",
            token_file.to_str().unwrap_or_default(),
        ])?;
        let token = run(&["token", "mint", "--user", "loadtest", "--ttl", "2h"])?;
        let (child, base) = serve(&gateway, &data, store.as_deref())?;
        let stack = Self { base, token, dir, bin, children: vec![child], _database: database };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !client.get(format!("{}/readyz", stack.base)).send().await.is_ok_and(|r| r.status().is_success()) {
            if Instant::now() > deadline {
                bail!("gateway did not become ready");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(stack)
    }

    pub fn start_engines(&mut self, args: &Args) -> anyhow::Result<()> {
        for _ in 0..args.engines {
            let child = Command::new(self.bin.join("flowork-engine"))
                .args(["--gateway", &self.base, "--engine-id", ENGINE, "--workers", &args.workers.to_string()])
                .arg("--token-file")
                .arg(self.dir.path().join("engine.token"))
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting flowork-engine")?;
            self.children.push(child);
        }
        Ok(())
    }

    /// The gateway's process id.
    pub fn gateway_pid(&self) -> Option<u32> {
        self.children.first().map(Child::id)
    }

    /// The engines' process ids.
    pub fn engine_pids(&self) -> Vec<u32> {
        self.children.iter().skip(1).map(Child::id).collect()
    }

    pub fn stop(&mut self) {
        for child in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.children.clear();
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.stop();
    }
}
