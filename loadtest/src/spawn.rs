//! Starting a throw-away gateway and engines for one measurement run.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::Args;

/// The engine every run uses.
pub const ENGINE: &str = "bench";

/// A gateway (and later engines) on a fresh data directory, killed on drop.
pub struct Stack {
    pub base: String,
    pub token: String,
    dir: tempfile::TempDir,
    bin: PathBuf,
    children: Vec<Child>,
}

fn bin_dir(args: &Args) -> anyhow::Result<PathBuf> {
    match &args.bin_dir {
        Some(dir) => Ok(dir.clone()),
        None => Ok(std::env::current_exe()?.parent().context("executable has no folder")?.to_path_buf()),
    }
}

impl Stack {
    pub async fn start(args: &Args) -> anyhow::Result<Self> {
        let bin = bin_dir(args)?;
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        let gateway = bin.join("flowork-gateway");
        let run = |cli: &[&str]| -> anyhow::Result<String> {
            let out = Command::new(&gateway).args(cli).arg("--data-dir").arg(&data).output()?;
            if !out.status.success() {
                bail!("flowork-gateway {cli:?}: {}", String::from_utf8_lossy(&out.stderr));
            }
            Ok(String::from_utf8(out.stdout)?.trim().to_string())
        };
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
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new(&gateway)
            // A load test measures the write path, not the abuse controls: no rate limits, no caps.
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--rate-ip", "0", "--rate-user", "0"])
            .args(["--max-queue-depth", "0", "--max-total-depth", "0", "--max-user-inflight", "0"])
            .arg("--data-dir")
            .arg(&data)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting flowork-gateway")?;
        let base = format!("http://127.0.0.1:{port}");
        let stack = Self { base, token, dir, bin, children: vec![child] };
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
