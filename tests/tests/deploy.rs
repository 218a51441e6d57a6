//! What installs Flowork: the systemd units (`systemd-analyze verify` on a throw-away root, and their hardening),
//! the binaries' sd_notify readiness on a real `NOTIFY_SOCKET`, SIGHUP (`systemctl reload`) not stopping the
//! gateway, and the Containerfile (buildah as far as it goes without pulling an image, and its structure).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use flowork_tests::{Engine, Gateway, Workspace, bin, eventually};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn found(program: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {program}")]).output().is_ok_and(|o| o.status.success())
}

fn run(command: &mut Command) -> anyhow::Result<std::process::Output> {
    command.output().map_err(|e| anyhow::anyhow!("running {command:?}: {e}"))
}

/// A file system root with what `systemd-analyze verify --root` needs: the host's unit library (the targets the
/// units name), `kill` (ExecReload), the binaries where the units expect them, and our units.
fn systemd_root(dir: &Path) -> anyhow::Result<PathBuf> {
    let root = dir.join("root");
    for sub in ["usr/local/bin", "usr/bin", "usr/lib/systemd", "etc/systemd/system"] {
        std::fs::create_dir_all(root.join(sub))?;
    }
    #[cfg(unix)]
    std::os::unix::fs::symlink("usr/bin", root.join("bin"))?;
    let library = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .into_iter()
        .find(|p| Path::new(p).join("multi-user.target").exists())
        .ok_or_else(|| anyhow::anyhow!("no systemd unit library on this host"))?;
    let copied = run(Command::new("cp").arg("-a").arg(library).arg(root.join("usr/lib/systemd/")))?;
    anyhow::ensure!(copied.status.success(), "copying {library}: {}", String::from_utf8_lossy(&copied.stderr));
    let kill = ["/usr/bin/kill", "/bin/kill"].into_iter().find(|p| Path::new(p).exists());
    std::fs::copy(kill.ok_or_else(|| anyhow::anyhow!("no kill"))?, root.join("usr/bin/kill"))?;
    for binary in ["flowork-gateway", "flowork-engine"] {
        std::fs::copy(bin(binary), root.join("usr/local/bin").join(binary))?;
    }
    for unit in std::fs::read_dir(repo().join("deploy/systemd"))? {
        let unit = unit?.path();
        if unit.extension().is_some_and(|e| e == "service") {
            std::fs::copy(&unit, root.join("etc/systemd/system").join(unit.file_name().unwrap_or_default()))?;
        }
    }
    Ok(root)
}

#[test]
fn the_systemd_units_verify_and_are_hardened() -> anyhow::Result<()> {
    let units = repo().join("deploy/systemd");
    for (unit, must) in [
        ("flowork-gateway.service", &["User=flowork", "StateDirectory=flowork", "ExecReload="][..]),
        ("flowork-engine@.service", &["DynamicUser=yes", "LoadCredential=token:", "FLOWORK_ENGINE_ID=%i"][..]),
    ] {
        let text = std::fs::read_to_string(units.join(unit))?;
        let common = [
            "Type=notify",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "CapabilityBoundingSet=\n",
            "SystemCallFilter=@system-service",
            "RestrictAddressFamilies=",
            "UMask=0077",
        ];
        for directive in common.iter().chain(must) {
            assert!(text.contains(directive), "{unit} lacks {directive:?}");
        }
    }
    if !found("systemd-analyze") {
        eprintln!("SKIPPED: systemd-analyze is missing (Debian package systemd; scripts/test.sh installs it)");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let root = systemd_root(dir.path())?;
    for unit in ["flowork-gateway.service", "flowork-engine@gpu-1.service"] {
        let output = run(Command::new("systemd-analyze")
            .arg("verify")
            .arg(format!("--root={}", root.display()))
            .arg(root.join("etc/systemd/system").join(unit)))?;
        let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success() && said.trim().is_empty(), "systemd-analyze verify {unit}:\n{said}");
    }
    // The check is real: a mistake in a unit is reported.
    let broken = root.join("etc/systemd/system/flowork-gateway.service");
    let text = std::fs::read_to_string(&broken)?.replace("Type=notify", "Type=notifyy");
    std::fs::write(&broken, text)?;
    let output =
        run(Command::new("systemd-analyze").arg("verify").arg(format!("--root={}", root.display())).arg(&broken))?;
    assert!(String::from_utf8_lossy(&output.stderr).contains("notifyy"), "a bad Type= went unnoticed");
    Ok(())
}

/// Receives sd_notify datagrams on `socket` until one says `state` (e.g. `READY=1`).
#[cfg(target_os = "linux")]
async fn notified(socket: &std::sync::Arc<std::os::unix::net::UnixDatagram>, state: &str) -> anyhow::Result<()> {
    let (socket, state) = (socket.clone(), state.to_string());
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        socket.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut buffer = [0u8; 4096];
        loop {
            let read = socket.recv(&mut buffer).map_err(|e| anyhow::anyhow!("no {state} notification: {e}"))?;
            if String::from_utf8_lossy(&buffer[..read]).lines().any(|line| line == state) {
                return Ok(());
            }
        }
    })
    .await?
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn both_binaries_tell_systemd_when_they_are_ready_and_when_they_stop() -> anyhow::Result<()> {
    use std::os::unix::net::UnixDatagram;
    use std::sync::Arc;

    let ws = Workspace::new()?;
    ws.add_engine("svc")?;
    let gateway_socket_path = ws.path("gateway.notify");
    let gateway_socket = Arc::new(UnixDatagram::bind(&gateway_socket_path)?);
    let socket_env = gateway_socket_path.to_string_lossy().to_string();
    let mut gw = Gateway::start_with_env(&ws, "127.0.0.1:0", &[], &[("NOTIFY_SOCKET", &socket_env)]).await?;
    notified(&gateway_socket, "READY=1").await?;

    // `systemctl reload` (SIGHUP) without TLS: logged, and the gateway goes on serving.
    gw.process.signal("HUP")?;
    eventually(Duration::from_secs(30), "the SIGHUP to be logged", || async {
        Ok(gw.process.log_text().contains("nothing to reload").then_some(()))
    })
    .await?;
    let health = reqwest::get(format!("{}/healthz", gw.base)).await?;
    assert!(health.status().is_success(), "the gateway stopped serving after SIGHUP");

    let engine_socket_path = ws.path("engine.notify");
    let engine_socket = Arc::new(UnixDatagram::bind(&engine_socket_path)?);
    let engine_env = engine_socket_path.to_string_lossy().to_string();
    let mut engine = Engine::start_with_env(&ws, &gw, "svc", 1, &[], &[("NOTIFY_SOCKET", &engine_env)])?;
    notified(&engine_socket, "READY=1").await?;
    engine.process.signal("TERM")?;
    notified(&engine_socket, "STOPPING=1").await?;
    assert_eq!(engine.process.wait_exit(Duration::from_secs(60)).await?, Some(0));

    gw.process.signal("TERM")?;
    notified(&gateway_socket, "STOPPING=1").await?;
    assert_eq!(gw.process.wait_exit(Duration::from_secs(60)).await?, Some(0));
    Ok(())
}

/// The Containerfile's instructions, continuation lines joined, comments dropped.
fn instructions(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines().map(str::trim).filter(|l| !l.starts_with('#') && !l.is_empty()) {
        match line.strip_suffix('\\') {
            Some(start) => current.push_str(start),
            None => {
                current.push_str(line);
                out.push(std::mem::take(&mut current));
            }
        }
    }
    out
}

#[test]
fn the_containerfile_is_multi_stage_and_runs_as_a_non_root_user() -> anyhow::Result<()> {
    let containerfile = repo().join("deploy/container/Containerfile");
    let steps = instructions(&std::fs::read_to_string(&containerfile)?);
    let stages: Vec<usize> = steps.iter().enumerate().filter(|(_, s)| s.starts_with("FROM ")).map(|(i, _)| i).collect();
    assert_eq!(stages.len(), 2, "a build stage and a runtime stage: {steps:#?}");
    assert!(steps[stages[0]].ends_with(" AS build"), "{}", steps[stages[0]]);
    let build = &steps[stages[0]..stages[1]];
    let runtime = &steps[stages[1]..];
    assert!(build.iter().any(|s| s.starts_with("RUN cargo build --release --locked")), "{build:#?}");
    assert!(runtime.iter().all(|s| !s.starts_with("RUN ")), "the runtime stage has no shell to RUN with: {runtime:#?}");
    let user = runtime.iter().rev().find_map(|s| s.strip_prefix("USER ")).ok_or_else(|| anyhow::anyhow!("no USER"))?;
    let uid = user.split(':').next().unwrap_or_default();
    assert!(!["0", "root", ""].contains(&uid), "the image runs as root: USER {user}");
    assert!(runtime.iter().any(|s| s.starts_with("COPY --from=build ")), "{runtime:#?}");
    assert!(runtime.iter().any(|s| s.starts_with("ENTRYPOINT [\"/usr/local/bin/flowork-gateway\"]")), "{runtime:#?}");
    let ignored = std::fs::read_to_string(repo().join(".containerignore"))?;
    assert!(ignored.lines().any(|l| l == "target"), "the build context would carry target/");

    if !found("buildah") {
        eprintln!("SKIPPED the buildah half: buildah is missing (Debian package buildah; scripts/test.sh installs it)");
        return Ok(());
    }
    // No image can be pulled here, nor a container run: the base images are stood in for by empty local ones, so
    // buildah parses the whole file, resolves both stages and sends the context, and stops at the first RUN.
    let storage = tempfile::tempdir()?;
    let buildah = || {
        let mut command = Command::new("buildah");
        command
            .arg("--root")
            .arg(storage.path().join("root"))
            .arg("--runroot")
            .arg(storage.path().join("run"))
            .args(["--storage-driver", "vfs"]);
        command
    };
    for base in stages.iter().filter_map(|&i| steps[i].split_whitespace().nth(1)) {
        let from = run(buildah().args(["from", "scratch"]))?;
        anyhow::ensure!(from.status.success(), "buildah from scratch: {}", String::from_utf8_lossy(&from.stderr));
        let container = String::from_utf8_lossy(&from.stdout).trim().to_string();
        let commit = run(buildah().args(["commit", "-q", &container, base]))?;
        anyhow::ensure!(commit.status.success(), "buildah commit: {}", String::from_utf8_lossy(&commit.stderr));
    }
    let build =
        run(buildah().args(["build", "--pull=never", "--isolation=chroot", "-f"]).arg(&containerfile).arg(repo()))?;
    let said = format!("{}{}", String::from_utf8_lossy(&build.stdout), String::from_utf8_lossy(&build.stderr));
    assert!(said.contains("STEP 3/4: COPY . ."), "buildah did not get to the context copy:\n{said}");
    assert!(said.contains("building at STEP \"RUN cargo build"), "buildah stopped before the build step:\n{said}");
    Ok(())
}
