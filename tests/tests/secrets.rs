//! Issued secrets carry a prefix and a checksum: a token with a wrong checksum is refused (before any lookup), and
//! `scripts/secret-scan.py` finds a real token planted in a repository's history, with no false positive on a
//! look-alike.

use std::path::Path;
use std::process::Command;

use flowork_tests::{Gateway, Workspace};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The same token with its last checksum digit changed.
fn bad_checksum(token: &str) -> String {
    let mut bad = token.to_string();
    let last = bad.pop().unwrap_or('0');
    bad.push(if last == '0' { '1' } else { '0' });
    bad
}

#[tokio::test]
async fn tokens_with_a_wrong_checksum_are_refused() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    let engine_token = ws.add_engine("local")?;
    assert!(engine_token.starts_with("fwe_") && engine_token.len() == 55, "{engine_token}");
    let admin = ws.gateway_cli_ok(&["admin", "token", "--scope", "drain", "--ttl", "5m"])?.trim().to_string();
    assert!(admin.starts_with("fwa_"), "{admin}");
    let gw = Gateway::start(&ws, &[]).await?;
    let http = reqwest::Client::new();

    let claim = |token: String| {
        http.post(format!("{}/internal/claim", gw.base))
            .header("X-Engine-Token", token)
            .json(&json!({"max": 1, "wait_ms": 0, "lease_ms": 1000, "worker": "w"}))
            .send()
    };
    assert_eq!(claim(engine_token.clone()).await?.status(), StatusCode::OK);
    let refused = claim(bad_checksum(&engine_token)).await?;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(refused.json::<Value>().await?["error"], "invalid_engine_token");

    let drain = |token: String| http.get(format!("{}/admin/engines", gw.base)).bearer_auth(token).send();
    let wrong_scope = drain(admin.clone()).await?;
    assert_eq!(wrong_scope.status(), StatusCode::FORBIDDEN, "a well-formed admin token gets as far as its scopes");
    let refused = drain(bad_checksum(&admin)).await?;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let inner = admin.trim_start_matches("fwa_").rsplit_once('.').map(|(jwt, _)| jwt.to_string()).unwrap_or_default();
    assert_eq!(drain(inner).await?.status(), StatusCode::UNAUTHORIZED, "the bare JWT inside is not an admin token");

    let refresh = http
        .post(format!("{}/auth/refresh", gw.base))
        .json(&json!({"refresh_token": bad_checksum(&format!("fwr_{}", "A".repeat(51)))}))
        .send()
        .await?;
    assert_eq!(refresh.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(refresh.json::<Value>().await?["error"], "invalid_refresh_token");
    Ok(())
}

fn git(repo: &Path, args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["-c", "user.name=test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false"])
        .args(args)
        .status()?;
    anyhow::ensure!(status.success(), "git {args:?} failed");
    Ok(())
}

fn scan(repo: &Path) -> anyhow::Result<(bool, String)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/secret-scan.py");
    let output = Command::new("python3").arg(script).arg(repo).output()?;
    Ok((output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned()))
}

#[test]
fn the_scanner_finds_a_token_planted_in_history_and_ignores_look_alikes() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    let token = ws.add_engine("local")?;
    let repo = ws.path("repo");
    std::fs::create_dir_all(&repo)?;
    git(&repo, &["init", "-q"])?;
    // Look-alikes: the right prefix and length, a wrong checksum; and a bare prefix in prose.
    std::fs::write(repo.join("README.md"), format!("tokens look like fwe_… e.g. {}\n", bad_checksum(&token)))?;
    git(&repo, &["add", "."])?;
    git(&repo, &["commit", "-q", "-m", "docs"])?;
    let (clean, out) = scan(&repo)?;
    assert!(clean, "a false positive: {out}");

    // The real token committed, then deleted: it stays in the history.
    std::fs::write(repo.join("engine.env"), format!("FLOWORK_ENGINE_TOKEN={token}\n"))?;
    git(&repo, &["add", "."])?;
    git(&repo, &["commit", "-q", "-m", "oops"])?;
    git(&repo, &["rm", "-q", "engine.env"])?;
    git(&repo, &["commit", "-q", "-m", "remove it"])?;
    let (clean, out) = scan(&repo)?;
    assert!(!clean, "the planted token was not found");
    assert!(out.contains("history: commit") && out.contains("engine token fwe_"), "{out}");
    assert!(!out.contains(&token), "the report must not repeat the secret: {out}");

    // A private key in the work tree.
    // Spelt in two halves, so this source file itself does not hold the marker the scan looks for.
    let marker = ["PRIVATE", "KEY"].join(" ");
    std::fs::write(
        repo.join("key.pem"),
        format!("-----BEGIN EC {marker}-----\nMHcCAQEE\n-----END EC {marker}-----\n"),
    )?;
    git(&repo, &["add", "."])?;
    let (_, out) = scan(&repo)?;
    assert!(out.contains("work tree: key.pem: private key"), "{out}");
    Ok(())
}
