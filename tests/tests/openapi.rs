//! `/openapi.json` against the code and against the running gateway: it names every public route of the router,
//! and schemathesis (from PyPI) drives every operation with generated valid and invalid input — as a user, then
//! the admin operations with an admin token — checking that nothing answers 5xx and every answer (status, content
//! type, body) matches the document.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use flowork_tests::{Gateway, Workspace};
use serde_json::Value;

/// The paths the router serves, the engine API's included, read from its source.
fn routed_paths() -> anyhow::Result<BTreeSet<String>> {
    let source = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../gateway/src/api/mod.rs"))?;
    Ok(source.split(".route(\"").skip(1).filter_map(|rest| rest.split('"').next()).map(str::to_string).collect())
}

/// Runs schemathesis with `header` on every request; returns how many test cases it generated (all passed, or
/// this fails with its report).
fn schemathesis(url: &str, header: &str, extra: &[&str], scratch: &Path) -> anyhow::Result<u64> {
    let output = Command::new("schemathesis")
        // Its example database and reports go to the test's folder, not the repository.
        .current_dir(scratch)
        .args(["run", url, "--header", header])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance",
        ])
        .args(["--max-examples", "20", "--generation-deterministic", "--no-color"])
        .args(extra)
        .output()
        .map_err(|e| {
            anyhow::anyhow!("schemathesis could not run ({e}): install it with `python3 -m pip install schemathesis`")
        })?;
    let report = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(output.status.success(), "schemathesis found problems:\n{report}");
    // The summary line: "<n> generated, <n> passed".
    let generated = report
        .lines()
        .filter(|l| l.contains(" generated, "))
        .find_map(|l| l.trim().split(' ').next()?.parse().ok())
        .unwrap_or(0);
    anyhow::ensure!(generated > 0, "schemathesis ran no test case:\n{report}");
    Ok(generated)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_covers_every_public_route_and_the_gateway_keeps_to_it() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    let engine_token = ws.add_engine("local")?;
    let token = ws.mint("alice", "1h")?;
    let admin = ws.gateway_cli_ok(&[
        "admin",
        "token",
        "--scope",
        "drain,engines:read,engines:write,audit:read",
        "--ttl",
        "15m",
    ])?;
    let gw = Gateway::start(
        &ws,
        &[
            "--rate-ip",
            "100000/s",
            "--rate-user",
            "100000/s",
            "--max-user-inflight",
            "1000000",
            "--reap-interval-ms",
            "50",
        ],
    )
    .await?;
    let url = format!("{}/openapi.json", gw.base);
    let document: Value = reqwest::get(&url).await?.json().await?;
    assert!(document["openapi"].as_str().unwrap_or_default().starts_with("3."), "{document}");
    let documented: BTreeSet<String> =
        document["paths"].as_object().map(|paths| paths.keys().cloned().collect()).unwrap_or_default();
    assert_eq!(documented, routed_paths()?, "the document and the router disagree");
    // API keys: their own operation ids and typed answers.
    let keys = &document["paths"];
    for (path, method, id, schema) in [
        ("/auth/keys", "post", "create_api_key", "CreatedApiKey"),
        ("/auth/keys", "get", "list_api_keys", "ApiKeyList"),
        ("/auth/keys/{id}", "delete", "delete_api_key", "DeletedApiKey"),
    ] {
        let operation = &keys[path][method];
        assert_eq!(operation["operationId"], id, "{operation}");
        assert!(operation["responses"].to_string().contains(&format!("#/components/schemas/{schema}")), "{operation}");
    }

    let scratch = ws.path("schemathesis");
    std::fs::create_dir_all(&scratch)?;
    let (user, admin) = (format!("Authorization: Bearer {token}"), format!("Authorization: Bearer {}", admin.trim()));
    let as_user = schemathesis(&url, &user, &["--exclude-tag", "admin", "--exclude-tag", "engine"], &scratch)?;
    let as_admin = schemathesis(&url, &admin, &["--include-tag", "admin"], &scratch)?;
    // The engine API, as the engine. Queued jobs make each valid claim answer at once instead of long-polling
    // for up to a minute; the short leases it takes lapse back to the queue (the reaper runs every 50 ms).
    let api = flowork_tests::Api::new(&gw, &token);
    for batch in 0..20 {
        let jobs: Vec<Value> = (0..1_000)
            .map(|i| serde_json::json!({"idempotency_key": format!("q{batch}-{i}"), "engine": "local", "kind": "echo"}))
            .collect();
        let queued = api.post("/jobs/batch", &serde_json::json!({ "jobs": jobs })).await?;
        anyhow::ensure!(queued.status == reqwest::StatusCode::OK, "{}", queued.body);
    }
    let as_engine =
        schemathesis(&url, &format!("X-Engine-Token: {engine_token}"), &["--include-tag", "engine"], &scratch)?;
    println!(
        "schemathesis: {as_user} cases as a user, {as_admin} as an admin and {as_engine} as an engine over {} paths, \
         all passed",
        documented.len()
    );
    Ok(())
}
