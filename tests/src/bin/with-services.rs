//! Runs a command beside a throw-away PostgreSQL server (and, with `--redis`, a Redis server), as the tests of
//! the fleet store need: `with-services [--redis] -- cargo nextest run ...`.
//!
//! PostgreSQL comes from Debian's `postgresql` package: `initdb` into a temporary folder, `postgres` on a free
//! loopback port (as the `postgres` user when run as root, which PostgreSQL refuses to run as), stopped and
//! deleted at the end. The command sees `FLOWORK_TEST_POSTGRES` (a URL of the server's `postgres` database; the
//! harness makes one database per test) and `FLOWORK_TEST_REDIS`. A missing server binary is an error that says
//! what to install: a fleet test never silently skips.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

fn main() -> ExitCode {
    match run() {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("with-services: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// The folder of PostgreSQL's server binaries (the newest installed major version).
fn postgres_bin_dir() -> anyhow::Result<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| Some((entry.file_name().to_str()?.parse().ok()?, entry.path().join("bin"))))
        .filter(|(_, bin): &(u32, PathBuf)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).context(
        "PostgreSQL's server binaries are missing: install them with `apt-get install -y postgresql` \
         (scripts/test.sh does)",
    )
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

/// A command run as the `postgres` user when this process is root.
fn as_server_user(program: &Path, root: bool) -> Command {
    if root {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// A server child process, stopped (and waited for) when dropped.
struct Server(Child, &'static str);

impl Drop for Server {
    fn drop(&mut self) {
        // SIGINT is PostgreSQL's fast shutdown; Redis exits on it too.
        let _ = Command::new("kill").arg("-INT").arg(self.0.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("with-services: {} did not stop; killing it", self.1);
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until a TCP port accepts connections.
fn wait_for_port(port: u16, what: &str, child: &mut Child) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited with {status} before accepting connections");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what} did not accept connections on port {port} within 30 s")
}

/// The PostgreSQL server, stopped with `pg_ctl stop -m fast` when dropped.
struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    root: bool,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let stopped = as_server_user(&self.bin.join("pg_ctl"), self.root)
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "stop"])
            .stdout(Stdio::null())
            .status();
        if !stopped.is_ok_and(|s| s.success()) {
            eprintln!("with-services: pg_ctl could not stop the test server in {}", self.data.display());
        }
    }
}

fn start_postgres(dir: &Path) -> anyhow::Result<(Postgres, String)> {
    let bin = postgres_bin_dir()?;
    let root = is_root();
    if root {
        let status = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir).status()?;
        anyhow::ensure!(status.success(), "could not hand {} to the postgres user", dir.display());
    }
    let data = dir.join("data");
    let initdb = as_server_user(&bin.join("initdb"), root)
        .arg("-D")
        .arg(&data)
        .args(["-U", "flowork", "--auth=trust", "-E", "UTF8", "--no-sync"])
        .stdout(Stdio::null())
        .output()
        .context("running initdb")?;
    anyhow::ensure!(initdb.status.success(), "initdb failed: {}", String::from_utf8_lossy(&initdb.stderr));
    let port = free_port()?;
    // Throw-away data: durability off makes the test server fast; the store's own rules do not depend on it.
    let options = format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=400 -c fsync=off \
         -c synchronous_commit=off -c full_page_writes=off",
        dir.display()
    );
    let started = as_server_user(&bin.join("pg_ctl"), root)
        .arg("-D")
        .arg(&data)
        .arg("-o")
        .arg(options)
        .arg("-l")
        .arg(dir.join("postgres.log"))
        .args(["-w", "-t", "30", "start"])
        .stdout(Stdio::null())
        .status()
        .context("starting postgres with pg_ctl")?;
    let server = Postgres { bin, data, root };
    if !started.success() {
        let log = std::fs::read_to_string(dir.join("postgres.log")).unwrap_or_default();
        bail!("postgres did not start: {log}");
    }
    Ok((server, format!("postgres://flowork@127.0.0.1:{port}/postgres")))
}

fn start_redis() -> anyhow::Result<(Server, String)> {
    let found = Command::new("redis-server").arg("--version").output().is_ok_and(|o| o.status.success());
    anyhow::ensure!(
        found,
        "redis-server is missing: install it with `apt-get install -y redis-server` (scripts/test.sh does)"
    );
    let port = free_port()?;
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .context("starting redis-server")?;
    wait_for_port(port, "redis-server", &mut child)?;
    Ok((Server(child, "redis-server"), format!("redis://127.0.0.1:{port}")))
}

fn run() -> anyhow::Result<u8> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let split = args.iter().position(|a| a == "--").context("usage: with-services [--redis] -- COMMAND ...")?;
    let (options, command) = (&args[..split], &args[split + 1..]);
    let program = command.first().context("no command given after --")?;
    let dir = tempfile::Builder::new().prefix("flowork-pg-").tempdir()?;
    let (_postgres, postgres_url) = start_postgres(dir.path())?;
    let redis = if options.iter().any(|o| o == "--redis") { Some(start_redis()?) } else { None };
    let mut child = Command::new(program);
    child.args(&command[1..]).env("FLOWORK_TEST_POSTGRES", &postgres_url);
    if let Some((_, url)) = &redis {
        child.env("FLOWORK_TEST_REDIS", url);
    }
    eprintln!(
        "with-services: PostgreSQL at {postgres_url}{}",
        redis.as_ref().map(|(_, u)| format!(", Redis at {u}")).unwrap_or_default()
    );
    let status = child.status().with_context(|| format!("running {program}"))?;
    Ok(status.code().map(|c| c.clamp(0, 255) as u8).unwrap_or(1))
}
