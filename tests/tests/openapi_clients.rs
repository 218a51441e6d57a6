//! `/openapi.json` as the tools clients are made with see it: openapi-spec-validator and Redocly's recommended
//! rules accept it without an error, and clients generated from it — Python by openapi-python-client, TypeScript by
//! openapi-typescript with openapi-fetch, type-checked with `tsc --strict` — use every public route of a real
//! gateway as documented (`tests/contract/`). The tools are pinned in `tests/contract/` and installed there by
//! `scripts/test.sh`; generated code goes to the test's temporary folder only.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use flowork_tests::{Gateway, Workspace};

/// Where the contract test's scripts and pinned tools are.
fn contract_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contract")
}

/// A tool installed by `scripts/test.sh`, or an error that says how to install it.
fn tool(relative: &str) -> anyhow::Result<PathBuf> {
    let path = contract_dir().join(relative);
    anyhow::ensure!(
        path.exists(),
        "{} is missing: run scripts/test.sh, which installs the contract tools (npm ci and a Python venv in tests/contract)",
        path.display()
    );
    Ok(path)
}

/// Runs a command to its end; its output on success, or an error with everything it printed.
fn run(command: &mut Command) -> anyhow::Result<String> {
    let shown = format!("{command:?}");
    let output = command
        .env("REDOCLY_TELEMETRY", "off")
        .env("REDOCLY_SUPPRESS_UPDATE_NOTICE", "true")
        .output()
        .with_context(|| format!("starting {shown}"))?;
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    anyhow::ensure!(output.status.success(), "{shown} failed ({}):\n{stdout}\n{stderr}", output.status);
    Ok(format!("{stdout}{stderr}"))
}

/// A gateway with two engines owned by `alice` (`py` and `ts`, one per client), and the document it serves
/// saved as `openapi.json` in the workspace.
struct Served {
    ws: Workspace,
    gateway: Gateway,
    document: PathBuf,
    user_token: String,
    admin_token: String,
}

impl Served {
    async fn start() -> anyhow::Result<Self> {
        let ws = Workspace::new()?;
        for engine in ["py", "ts"] {
            ws.add_engine(engine)?;
        }
        let user_token = ws.mint("alice", "1h")?;
        let scopes = "drain,engines:read,engines:write,audit:read";
        let admin_token = ws.gateway_cli_ok(&["admin", "token", "--scope", scopes, "--ttl", "15m"])?.trim().to_string();
        let gateway = Gateway::start(&ws, &["--rate-ip", "100000/s", "--rate-user", "100000/s"]).await?;
        let text = reqwest::get(format!("{}/openapi.json", gateway.base)).await?.error_for_status()?.text().await?;
        let document = ws.path("openapi.json");
        std::fs::write(&document, text)?;
        Ok(Self { ws, gateway, document, user_token, admin_token })
    }

    /// What a client script needs to reach this gateway as `engine`'s owner, as an operator and as the engine.
    fn client_env(&self, engine: &str) -> anyhow::Result<Vec<(&'static str, String)>> {
        let engine_token = std::fs::read_to_string(self.ws.token_file(engine))?;
        Ok(vec![
            ("FLOWORK_URL", self.gateway.base.clone()),
            ("FLOWORK_ENGINE", engine.to_string()),
            ("FLOWORK_USER_TOKEN", self.user_token.clone()),
            ("FLOWORK_ADMIN_TOKEN", self.admin_token.clone()),
            ("FLOWORK_ENGINE_TOKEN", engine_token.trim().to_string()),
        ])
    }

    /// A new folder in the workspace for generated code.
    fn scratch(&self, name: &str) -> anyhow::Result<PathBuf> {
        let dir = self.ws.path(name);
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_passes_openapi_spec_validator_and_redocly_recommended() -> anyhow::Result<()> {
    let served = Served::start().await?;
    let validated = run(Command::new(tool(".venv/bin/openapi-spec-validator")?).arg(&served.document))?;
    assert!(validated.contains(": OK"), "{validated}");
    // Exit status 0: no error (warnings are printed, not failed on).
    let linted = run(Command::new("node")
        .arg(tool("node_modules/@redocly/cli/bin/cli.js")?)
        .args(["lint", "--extends", "recommended", "--format", "stylish"])
        .arg(&served.document))?;
    println!("openapi-spec-validator: {}\nredocly lint --extends recommended:\n{linted}", validated.trim());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_python_client_uses_every_public_route_as_documented() -> anyhow::Result<()> {
    let served = Served::start().await?;
    let out = served.scratch("python")?;
    let venv_bin = tool(".venv/bin")?;
    // The generator formats with ruff from the same venv; /metrics is text (OpenMetrics), which it reads as such.
    let config = out.join("config.yaml");
    std::fs::write(
        &config,
        "package_name_override: flowork_client\ncontent_type_overrides:\n  \
         \"application/openmetrics-text; version=1.0.0; charset=utf-8\": text/plain\n",
    )?;
    let path = format!("{}:{}", venv_bin.display(), std::env::var("PATH").unwrap_or_default());
    let generated = run(Command::new(venv_bin.join("openapi-python-client"))
        .current_dir(&out)
        .env("PATH", &path)
        .args(["generate", "--meta", "none", "--fail-on-warning", "--config"])
        .arg(&config)
        .arg("--path")
        .arg(&served.document)
        .arg("--output-path")
        .arg(out.join("flowork_client")))?;
    let report = run(Command::new(venv_bin.join("python"))
        .arg(contract_dir().join("python_client.py"))
        .env("PYTHONPATH", &out)
        .envs(served.client_env("py")?))
    .with_context(|| format!("the generator said:\n{generated}"))?;
    println!("{report}");
    assert_every_public_route(&served.document, &report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_typescript_client_type_checks_strictly_and_uses_every_public_route() -> anyhow::Result<()> {
    let served = Served::start().await?;
    let out = served.scratch("typescript")?;
    let modules = tool("node_modules")?;
    std::os::unix::fs::symlink(&modules, out.join("node_modules"))?;
    std::fs::write(out.join("package.json"), "{\"type\": \"module\"}\n")?;
    std::fs::copy(contract_dir().join("typescript_client.ts"), out.join("client.ts"))?;
    run(Command::new("node")
        .arg(tool("node_modules/openapi-typescript/bin/cli.js")?)
        .arg(&served.document)
        .arg("--output")
        .arg(out.join("schema.ts")))?;
    // Strict type-checking of the generated types and their use; nothing is emitted when a check fails.
    run(Command::new("node")
        .arg(tool("node_modules/typescript/bin/tsc")?)
        .current_dir(&out)
        .args(["--strict", "--noEmitOnError", "--skipLibCheck", "--target", "es2022", "--module", "nodenext"])
        .args(["--moduleResolution", "nodenext", "--types", "node", "--outDir", "dist", "client.ts", "schema.ts"]))?;
    let report = run(Command::new("node").arg(out.join("dist/client.js")).envs(served.client_env("ts")?))?;
    println!("{report}");
    assert_every_public_route(&served.document, &report)
}

/// Every operation of the document (the engine API's included) is among the routes a client script reports it
/// called, `METHOD /path` on a line of its own.
fn assert_every_public_route(document: &Path, report: &str) -> anyhow::Result<()> {
    let document: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(document)?)?;
    let called: std::collections::BTreeSet<&str> = report.lines().map(str::trim).collect();
    let mut missing = Vec::new();
    for (path, item) in document["paths"].as_object().context("no paths")? {
        for method in item.as_object().context("no operations")?.keys() {
            let route = format!("{} {path}", method.to_uppercase());
            if !called.contains(route.as_str()) {
                missing.push(route);
            }
        }
    }
    anyhow::ensure!(missing.is_empty(), "routes the client never called: {missing:?}\n{report}");
    Ok(())
}
