//! The shared harness of the end-to-end tests: start the real `flowork-gateway` and `flowork-engine`
//! binaries on 127.0.0.1 ephemeral ports with a fresh data directory, talk to them over HTTP, kill on drop.
//!
//! The binaries come from `FLOWORK_BIN_DIR`, else `$CARGO_TARGET_DIR/debug`, else `<workspace>/target/debug`;
//! the test command builds them first (`cargo build --workspace --bins`).

pub mod live;
pub mod tls;
pub mod wallet;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;
use tempfile::TempDir;

/// Where a built binary is.
pub fn bin(name: &str) -> PathBuf {
    if let Ok(dir) = std::env::var("FLOWORK_BIN_DIR") {
        return Path::new(&dir).join(name);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target"));
    target.join("debug").join(name)
}

/// A temporary data directory (and folder for logs and config files), removed at the end of the test; with
/// `FLOWORK_TEST_STORE=postgres`, also a fresh PostgreSQL database that every gateway and command of the test
/// uses (`--store`), on the server `with-services` started.
pub struct Workspace {
    pub dir: TempDir,
    /// The `--store` URL of this test's PostgreSQL database, when the tests run on PostgreSQL.
    pub store: Option<String>,
}

/// Which store the end-to-end tests run on: `FLOWORK_TEST_STORE=postgres` or the SQLite default.
pub fn on_postgres() -> bool {
    std::env::var("FLOWORK_TEST_STORE").is_ok_and(|s| s == "postgres")
}

impl Workspace {
    pub fn new() -> anyhow::Result<Self> {
        let store = if on_postgres() { Some(new_postgres_database()?) } else { None };
        Ok(Self { dir: tempfile::tempdir()?, store })
    }

    /// A workspace on the SQLite store whichever store the tests run on (a source for `migrate-store`).
    pub fn sqlite() -> anyhow::Result<Self> {
        Ok(Self { dir: tempfile::tempdir()?, store: None })
    }

    /// Adds `--store` (on PostgreSQL) to a gateway command.
    pub fn with_store<'a>(&self, command: &'a mut Command) -> &'a mut Command {
        if let Some(url) = &self.store {
            command.env("FLOWORK_STORE", url);
        }
        command
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs a `flowork-gateway` sub-command against this data directory.
    pub fn gateway_cli(&self, args: &[&str]) -> anyhow::Result<Output> {
        let output = self
            .with_store(&mut Command::new(bin("flowork-gateway")))
            .args(args)
            .arg("--data-dir")
            .arg(self.data_dir())
            .env("FLOWORK_LOG_FORMAT", "json")
            .output()
            .with_context(|| {
                format!("running {:?}; was `cargo build --workspace --bins` run?", bin("flowork-gateway"))
            })?;
        Ok(output)
    }

    pub fn gateway_cli_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = self.gateway_cli(args)?;
        if !output.status.success() {
            bail!("flowork-gateway {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(String::from_utf8(output.stdout)?)
    }

    /// Registers an engine owned by `alice` with `bob` on its whitelist; writes its token to `<name>.token`
    /// (0600) and returns it.
    pub fn add_engine(&self, name: &str) -> anyhow::Result<String> {
        let token = self.add_engine_owned_by(name, "alice")?;
        self.gateway_cli_ok(&["engine", "allow", name, "bob"])?;
        Ok(token)
    }

    /// Registers an engine with an owner (the only user allowed to submit until others are allowed).
    pub fn add_engine_owned_by(&self, name: &str, owner: &str) -> anyhow::Result<String> {
        let out: Value =
            serde_json::from_str(&self.gateway_cli_ok(&["engine", "add", name, "--owner", owner, "--json"])?)?;
        let token = out["token"].as_str().context("no token in engine add output")?.to_string();
        fs::write(self.token_file(name), &token)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(self.token_file(name), fs::Permissions::from_mode(0o600))?;
        }
        Ok(token)
    }

    pub fn token_file(&self, engine: &str) -> PathBuf {
        self.path(&format!("{engine}.token"))
    }

    /// Mints a user access token.
    pub fn mint(&self, user: &str, ttl: &str) -> anyhow::Result<String> {
        Ok(self.gateway_cli_ok(&["token", "mint", "--user", user, "--ttl", ttl])?.trim().to_string())
    }
}

/// Creates an empty database on the test PostgreSQL server and returns its URL.
pub fn new_postgres_database() -> anyhow::Result<String> {
    let server = std::env::var("FLOWORK_TEST_POSTGRES").context(
        "FLOWORK_TEST_STORE=postgres needs a PostgreSQL server: run the tests through \
         `cargo run -q -p flowork-tests --bin with-services -- cargo nextest run ...` (scripts/test.sh does)",
    )?;
    let name = format!("t_{}", unique());
    let output = Command::new("psql")
        .arg(&server)
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", &format!("CREATE DATABASE {name}")])
        .output()
        .context("running psql (Debian package postgresql-client)")?;
    if !output.status.success() {
        bail!("could not create a test database: {}", String::from_utf8_lossy(&output.stderr));
    }
    let base = server.rsplit_once('/').map(|(base, _)| base).unwrap_or(&server);
    Ok(format!("{base}/{name}"))
}

/// A child process killed (SIGKILL) when dropped.
pub struct Process {
    pub child: Child,
    pub log: PathBuf,
    /// Set when the test itself stopped or killed it.
    killed_on_purpose: bool,
}

impl Process {
    pub fn spawn(mut command: Command, log: PathBuf) -> anyhow::Result<Self> {
        let out = fs::File::create(&log)?;
        let child = command
            .env("FLOWORK_LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {command:?}"))?;
        Ok(Self { child, log, killed_on_purpose: false })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`KILL`, `TERM`, `STOP`, `CONT`).
    pub fn signal(&mut self, name: &str) -> anyhow::Result<()> {
        if matches!(name, "KILL" | "TERM" | "INT") {
            self.killed_on_purpose = true;
        }
        let status = Command::new("kill").arg(format!("-{name}")).arg(self.pid().to_string()).status()?;
        if !status.success() {
            bail!("kill -{name} {} failed", self.pid());
        }
        Ok(())
    }

    /// Waits for the process to exit; returns its exit code.
    pub async fn wait_exit(&mut self, within: Duration) -> anyhow::Result<Option<i32>> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status.code());
            }
            if Instant::now() > deadline {
                bail!("process {} did not exit within {within:?}", self.pid());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // A process that died on its own is a finding: show how, with the end of its log.
        if let Ok(Some(status)) = self.child.try_wait()
            && status.code() != Some(0)
            && !self.killed_on_purpose
        {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "process {} exited by itself ({status}); last log lines:\n{}",
                self.log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running gateway.
pub struct Gateway {
    pub process: Process,
    pub base: String,
    /// With TLS: the PEM file of the certificate authority that signed its certificate.
    pub ca_file: Option<PathBuf>,
    /// That authority's certificate, which `http_client` trusts.
    ca: Option<reqwest::Certificate>,
}

impl Gateway {
    /// Starts `flowork-gateway serve` on an ephemeral port and waits until `/readyz` answers.
    pub async fn start(ws: &Workspace, extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_on(ws, "127.0.0.1:0", extra).await
    }

    /// Starts `flowork-gateway serve` on `listen` (for restarts on the same port).
    pub async fn start_on(ws: &Workspace, listen: &str, extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_with_env(ws, listen, extra, &[]).await
    }

    /// Starts `flowork-gateway serve` with extra environment variables.
    pub async fn start_with_env(
        ws: &Workspace,
        listen: &str,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        Self::spawn(ws, &[], listen, extra, envs).await
    }

    /// Starts `flowork-gateway serve --tls-cert --tls-key` on an ephemeral port with a certificate for the loopback
    /// names signed by `ca`; the files are `tls-cert.pem` and `tls-key.pem` in the workspace (a test may replace
    /// them), and the CA's certificate is `ca.pem`, which the gateway's clients (`http_client`, engines) trust.
    pub async fn start_tls(ws: &Workspace, ca: &tls::TestCa, extra: &[&str]) -> anyhow::Result<Self> {
        let (cert, key, ca_file) = (ws.path("tls-cert.pem"), ws.path("tls-key.pem"), ws.path("ca.pem"));
        ca.issue("flowork test gateway")?.write(&cert, &key)?;
        ca.write(&ca_file)?;
        let mut args: Vec<String> =
            ["--tls-cert", path_str(&cert)?, "--tls-key", path_str(&key)?].iter().map(|s| s.to_string()).collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Self::spawn_with(ws, &[], "127.0.0.1:0", &args, &[], Some(ca_file)).await
    }

    /// A client of this gateway (trusting its CA when it serves TLS).
    pub fn http_client(&self) -> reqwest::Client {
        client_trusting(self.ca.clone())
    }

    /// Starts `flowork-gateway serve` on an ephemeral port through `wrapper` (a program and its arguments that
    /// end by running the command after them, e.g. `sh -c 'ulimit -Sn 128 && exec "$@"' sh`).
    pub async fn start_under(
        ws: &Workspace,
        wrapper: &[&str],
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        Self::spawn(ws, wrapper, "127.0.0.1:0", extra, envs).await
    }

    async fn spawn(
        ws: &Workspace,
        wrapper: &[&str],
        listen: &str,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        Self::spawn_with(ws, wrapper, listen, extra, envs, None).await
    }

    async fn spawn_with(
        ws: &Workspace,
        wrapper: &[&str],
        listen: &str,
        extra: &[&str],
        envs: &[(&str, &str)],
        ca_file: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        let log = ws.path(&format!("gateway-{}.log", unique()));
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(bin("flowork-gateway"));
                command
            }
            None => Command::new(bin("flowork-gateway")),
        };
        command.arg("serve").arg("--listen").arg(listen).arg("--data-dir").arg(ws.data_dir()).args(extra);
        ws.with_store(&mut command);
        command.envs(envs.iter().copied());
        let mut process = Process::spawn(command, log)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr = loop {
            if let Some(addr) = listening_addr(&process.log_text()) {
                break addr;
            }
            if let Some(status) = process.child.try_wait()? {
                bail!("gateway exited with {status}: {}", process.log_text());
            }
            if Instant::now() > deadline {
                bail!("gateway did not start: {}", process.log_text());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let base = format!("{}://{addr}", if ca_file.is_some() { "https" } else { "http" });
        let ca = match &ca_file {
            Some(path) => Some(reqwest::Certificate::from_pem(&fs::read(path)?)?),
            None => None,
        };
        let client = client_trusting(ca.clone());
        loop {
            if let Ok(r) = client.get(format!("{base}/readyz")).send().await
                && r.status().is_success()
            {
                break;
            }
            if Instant::now() > deadline {
                bail!("gateway never became ready: {}", process.log_text());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(Self { process, base, ca_file, ca })
    }
}

/// A reqwest client that also trusts `ca` (the default client without one); like `reqwest::Client::new`, it
/// panics only if the TLS backend cannot start.
pub fn client_trusting(ca: Option<reqwest::Certificate>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder();
    if let Some(ca) = ca {
        builder = builder.add_root_certificate(ca);
    }
    builder.build().expect("reqwest's TLS backend starts")
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str().with_context(|| format!("{} is not UTF-8", path.display()))
}

fn listening_addr(log: &str) -> Option<String> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|v| v["message"] == "listening")
        .and_then(|v| v["addr"].as_str().map(str::to_string))
}

fn unique() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// A running engine.
pub struct Engine {
    pub process: Process,
}

impl Engine {
    /// Starts `flowork-engine` for `engine` (registered with `Workspace::add_engine`).
    pub fn start(
        ws: &Workspace,
        gateway: &Gateway,
        engine: &str,
        workers: u32,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        Self::start_with_env(ws, gateway, engine, workers, extra, &[])
    }

    /// Starts `flowork-engine` with extra environment variables.
    pub fn start_with_env(
        ws: &Workspace,
        gateway: &Gateway,
        engine: &str,
        workers: u32,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        Self::start_binary("flowork-engine", ws, gateway, engine, workers, extra, envs)
    }

    /// Starts `binary`, an engine built on the `flowork-engine` library (same flags), for `engine`.
    pub fn start_binary(
        binary: &str,
        ws: &Workspace,
        gateway: &Gateway,
        engine: &str,
        workers: u32,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let log = ws.path(&format!("engine-{engine}-{}.log", unique()));
        let mut command = Command::new(bin(binary));
        command
            .arg("--gateway")
            .arg(&gateway.base)
            .arg("--engine-id")
            .arg(engine)
            .arg("--token-file")
            .arg(ws.token_file(engine))
            .arg("--workers")
            .arg(workers.to_string())
            .args(gateway.ca_file.iter().flat_map(|ca| [std::ffi::OsStr::new("--ca-file"), ca.as_os_str()]))
            .args(extra)
            .envs(envs.iter().copied());
        Ok(Self { process: Process::spawn(command, log)? })
    }
}

/// A user's view of the public API.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
}

/// Status, headers and JSON body of a response.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    pub async fn read(response: reqwest::Response) -> anyhow::Result<Self> {
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await?;
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).with_context(|| format!("not JSON: {text}"))?
        };
        Ok(Self { status, headers, body })
    }

    /// The machine-readable error code of an error reply.
    pub fn code(&self) -> &str {
        self.body["error"].as_str().unwrap_or("")
    }
}

impl Api {
    pub fn new(gateway: &Gateway, token: &str) -> Self {
        Self { http: gateway.http_client(), base: gateway.base.clone(), token: token.to_string() }
    }

    pub async fn post_job(&self, key: &str, body: &Value) -> anyhow::Result<Reply> {
        let response = self
            .http
            .post(format!("{}/jobs", self.base))
            .bearer_auth(&self.token)
            .header("idempotency-key", key)
            .json(body)
            .send()
            .await?;
        Reply::read(response).await
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Reply> {
        Reply::read(self.http.get(format!("{}{path}", self.base)).bearer_auth(&self.token).send().await?).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Reply> {
        Reply::read(self.http.post(format!("{}{path}", self.base)).bearer_auth(&self.token).json(body).send().await?)
            .await
    }

    pub async fn put(&self, path: &str, body: &Value) -> anyhow::Result<Reply> {
        Reply::read(self.http.put(format!("{}{path}", self.base)).bearer_auth(&self.token).json(body).send().await?)
            .await
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<Reply> {
        Reply::read(self.http.delete(format!("{}{path}", self.base)).bearer_auth(&self.token).send().await?).await
    }

    /// How many of this user's jobs are in each state (`GET /jobs/counts`): a cheap poll, where listing every job
    /// every few milliseconds would itself load the gateway under test.
    pub async fn counts(&self) -> anyhow::Result<Value> {
        let reply = self.get("/jobs/counts").await?;
        if reply.status != StatusCode::OK {
            bail!("GET /jobs/counts: {} {}", reply.status, reply.body);
        }
        Ok(reply.body)
    }

    /// Waits until this user has `total` jobs and none is queued or running (polling the counts), then lists them.
    pub async fn wait_all_final(&self, total: u64, within: Duration) -> anyhow::Result<Vec<Value>> {
        eventually(within, &format!("all {total} jobs to be final"), || async {
            let counts = self.counts().await?;
            let n = |s: &str| counts[s].as_u64().unwrap_or(0);
            let finished = n("succeeded") + n("dead") + n("cancelled");
            Ok((finished == total && n("queued") + n("running") == 0).then_some(()))
        })
        .await?;
        self.all_jobs(None).await
    }

    /// Every job of this user (following cursors), optionally of one status.
    pub async fn all_jobs(&self, status: Option<&str>) -> anyhow::Result<Vec<Value>> {
        let mut jobs = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = "/jobs?limit=500".to_string();
            if let Some(s) = status {
                path.push_str(&format!("&status={s}"));
            }
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let reply = self.get(&path).await?;
            if reply.status != StatusCode::OK {
                bail!("GET {path}: {} {}", reply.status, reply.body);
            }
            jobs.extend(reply.body["jobs"].as_array().cloned().unwrap_or_default());
            match reply.body["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => return Ok(jobs),
            }
        }
    }
}

/// An engine's view of the internal API (for protocol tests that play the engine themselves).
#[derive(Clone)]
pub struct EngineApi {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
}

impl EngineApi {
    pub fn new(gateway: &Gateway, token: &str) -> Self {
        Self { http: gateway.http_client(), base: gateway.base.clone(), token: token.to_string() }
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Reply> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .header("x-engine-token", &self.token)
            .json(body)
            .send()
            .await?;
        Reply::read(response).await
    }

    /// Claims up to `max` jobs, waiting up to `wait_ms`.
    pub async fn claim(&self, max: u32, wait_ms: u64, lease_ms: u64) -> anyhow::Result<Vec<Value>> {
        let reply = self
            .post(
                "/internal/claim",
                &serde_json::json!({"max": max, "wait_ms": wait_ms, "lease_ms": lease_ms, "worker": "test"}),
            )
            .await?;
        if reply.status != StatusCode::OK {
            bail!("claim: {} {}", reply.status, reply.body);
        }
        Ok(reply.body["leases"].as_array().cloned().unwrap_or_default())
    }
}

/// A free port on 127.0.0.1 (for a gateway that must come back on the same address).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Polls `check` until it returns `Some`, or fails after `within` (a liveness bound, not a speed assertion).
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("gave up waiting for {what} after {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
