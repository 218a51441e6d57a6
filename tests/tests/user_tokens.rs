//! User tokens: `token revoke` (by id and by user) takes effect on every gateway of a data directory or fleet
//! within the documented bound, with the user's other tokens untouched; self-service API keys (`/auth/keys`)
//! carry exactly their scopes, die when deleted or expired, stay private to their user, and are found by the
//! secret scanner. Both stores (`FLOWORK_TEST_STORE=postgres`).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use flowork_common::clock::system_now_ms;
use flowork_tests::wallet::{Wallet, sign_in_message};
use flowork_tests::{Api, Gateway, Reply, Workspace, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// How long a revocation may take to reach every gateway: the documented bound (5 s) with room for a busy machine.
const REVOCATION_BOUND: Duration = Duration::from_secs(30);

/// Mints a token for `user`; returns (token, jti).
fn mint(ws: &Workspace, user: &str) -> anyhow::Result<(String, String)> {
    let out: Value =
        serde_json::from_str(&ws.gateway_cli_ok(&["token", "mint", "--user", user, "--ttl", "1h", "--json"])?)?;
    let token = out["access_token"].as_str().unwrap_or_default().to_string();
    let jti = out["jti"].as_str().unwrap_or_default().to_string();
    anyhow::ensure!(!token.is_empty() && !jti.is_empty(), "token mint --json printed {out}");
    Ok((token, jti))
}

async fn list_jobs(gw: &Gateway, token: &str) -> anyhow::Result<Reply> {
    Api::new(gw, token).get("/jobs").await
}

/// Waits until `token` is refused as revoked by `gw`.
async fn until_revoked(gw: &Gateway, token: &str) -> anyhow::Result<()> {
    eventually(REVOCATION_BOUND, "the revocation to reach the gateway", || async {
        let reply = list_jobs(gw, token).await?;
        if reply.status == StatusCode::OK {
            return Ok(None);
        }
        assert_eq!((reply.status, reply.code()), (StatusCode::UNAUTHORIZED, "token_revoked"), "{}", reply.body);
        Ok(Some(()))
    })
    .await
}

async fn audit_rows(ws: &Workspace) -> anyhow::Result<u64> {
    let out = ws.gateway_cli_ok(&["audit", "verify"])?;
    Ok(out.split_whitespace().find_map(|w| w.parse().ok()).unwrap_or(0))
}

#[tokio::test]
async fn revoking_a_token_or_a_user_reaches_every_gateway_and_spares_the_rest() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    let gateways = [Gateway::start(&ws, &[]).await?, Gateway::start(&ws, &[]).await?];
    let rows = audit_rows(&ws).await?;
    let (first, first_jti) = mint(&ws, "alice")?;
    let (second, _) = mint(&ws, "alice")?;
    let (bob, _) = mint(&ws, "bob")?;
    assert_eq!(audit_rows(&ws).await?, rows + 3, "every mint is audited");
    for gw in &gateways {
        for token in [&first, &second, &bob] {
            assert_eq!(list_jobs(gw, token).await?.status, StatusCode::OK);
        }
    }

    ws.gateway_cli_ok(&["token", "revoke", "--jti", &first_jti])?;
    assert_eq!(audit_rows(&ws).await?, rows + 4, "the revocation is audited");
    for gw in &gateways {
        until_revoked(gw, &first).await?;
        assert_eq!(list_jobs(gw, &second).await?.status, StatusCode::OK, "another token of the same user");
        assert_eq!(list_jobs(gw, &bob).await?.status, StatusCode::OK, "another user");
    }

    ws.gateway_cli_ok(&["token", "revoke", "--user", "alice"])?;
    assert_eq!(audit_rows(&ws).await?, rows + 5);
    for gw in &gateways {
        until_revoked(gw, &second).await?;
        assert_eq!(list_jobs(gw, &bob).await?.status, StatusCode::OK, "another user");
    }
    // Tokens issued after the revocation (a later second: `iat` has whole seconds) work.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let (fresh, _) = mint(&ws, "alice")?;
    for gw in &gateways {
        assert_eq!(list_jobs(gw, &fresh).await?.status, StatusCode::OK, "a token issued after the revocation");
        assert_eq!(list_jobs(gw, &first).await?.code(), "token_revoked", "still revoked");
    }

    // The audit log names the token by its id, never the token itself (SQLite: the file is readable here).
    if !flowork_tests::on_postgres() {
        let mut bytes = std::fs::read(ws.data_dir().join("control.sqlite3"))?;
        bytes.extend(std::fs::read(ws.data_dir().join("control.sqlite3-wal")).unwrap_or_default());
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains(&first_jti), "the mint and the revocation name the token id");
        assert!(!text.contains(&first), "a token was stored");
    }
    let bad = ws.gateway_cli(&["token", "revoke", "--jti", "not a token id"])?;
    assert!(!bad.status.success());
    let neither = ws.gateway_cli(&["token", "revoke"])?;
    assert!(!neither.status.success(), "--jti or --user is required");
    Ok(())
}

#[tokio::test]
async fn revoking_a_user_ends_their_wallet_sign_ins_too() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    let gw = Gateway::start(&ws, &[]).await?;
    let wallet = Wallet::random();
    let nonce: Value = reqwest::get(format!("{}/auth/nonce", gw.base)).await?.json().await?;
    let message = sign_in_message(&gw.base, &wallet.address(), nonce["nonce"].as_str().unwrap(), 1, system_now_ms());
    let http = reqwest::Client::new();
    let signed = Reply::read(
        http.post(format!("{}/auth/verify", gw.base))
            .header("origin", &gw.base)
            .json(&json!({"message": message, "signature": wallet.sign(&message)}))
            .send()
            .await?,
    )
    .await?;
    assert_eq!(signed.status, StatusCode::OK, "{}", signed.body);
    let access = signed.body["access_token"].as_str().unwrap().to_string();
    let refresh = signed.body["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(list_jobs(&gw, &access).await?.status, StatusCode::OK);

    // Spelt as the wallet shows it (checksummed): still the user's lowercase id.
    ws.gateway_cli_ok(&["token", "revoke", "--user", &wallet.address()])?;
    until_revoked(&gw, &access).await?;
    let refreshed = Reply::read(
        http.post(format!("{}/auth/refresh", gw.base)).json(&json!({"refresh_token": refresh})).send().await?,
    )
    .await?;
    assert_eq!(
        (refreshed.status, refreshed.code()),
        (StatusCode::UNAUTHORIZED, "refresh_revoked"),
        "{}",
        refreshed.body
    );
    Ok(())
}

/// Makes an API key for the bearer of `api`; returns (id, key).
async fn make_key(api: &Api, scopes: &[&str], ttl: Option<&str>) -> anyhow::Result<(String, String)> {
    let mut body = json!({"name": "script", "scopes": scopes});
    if let Some(ttl) = ttl {
        body["ttl"] = json!(ttl);
    }
    let made = api.post("/auth/keys", &body).await?;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
    let key = made.body["key"].as_str().unwrap_or_default().to_string();
    assert!(key.starts_with("fwk_") && key.len() == 55, "{key}");
    Ok((made.body["id"].as_str().unwrap_or_default().to_string(), key))
}

/// One request that needs `scope`, as (method, path, body).
fn request_needing(scope: &str) -> (&'static str, &'static str, Value) {
    match scope {
        "jobs:read" => ("GET", "/jobs", Value::Null),
        "jobs:write" => ("POST", "/jobs", json!({"engine": "mine", "kind": "echo"})),
        "schedules:read" => ("GET", "/schedules", Value::Null),
        "schedules:write" => ("POST", "/schedules", json!({"engine": "mine", "kind": "echo", "cron": "0 0 * * *"})),
        "engines:read" => ("GET", "/engines/mine/users", Value::Null),
        "engines:write" => ("POST", "/engines/mine/resume", json!({})),
        other => panic!("no request for {other}"),
    }
}

async fn send(gw: &Gateway, token: &str, (method, path, body): (&str, &str, Value)) -> anyhow::Result<Reply> {
    let http = reqwest::Client::new();
    let url = format!("{}{path}", gw.base);
    let request = match method {
        "GET" => http.get(url),
        _ => http.post(url).header("idempotency-key", uuid::Uuid::new_v4().to_string()).json(&body),
    };
    Reply::read(request.bearer_auth(token).send().await?).await
}

const SCOPES: &[&str] =
    &["jobs:read", "jobs:write", "schedules:read", "schedules:write", "engines:read", "engines:write"];

#[tokio::test]
async fn api_keys_carry_exactly_their_scopes() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    ws.add_engine_owned_by("mine", "alice")?;
    let gw = Gateway::start(&ws, &[]).await?;
    let alice = Api::new(&gw, &ws.mint("alice", "1h")?);

    for scope in SCOPES {
        // A key with every scope but this one is refused, naming it; a key with only this one gets through.
        let others: Vec<&str> = SCOPES.iter().copied().filter(|s| s != scope).collect();
        let (_, without) = make_key(&alice, &others, None).await?;
        let refused = send(&gw, &without, request_needing(scope)).await?;
        assert_eq!(
            (refused.status, refused.code()),
            (StatusCode::FORBIDDEN, "missing_scope"),
            "{scope}: {}",
            refused.body
        );
        assert!(refused.body["message"].as_str().unwrap_or("").contains(scope), "{}", refused.body);
        let (id, with) = make_key(&alice, &[scope], None).await?;
        let allowed = send(&gw, &with, request_needing(scope)).await?;
        assert!(allowed.status.is_success(), "{scope}: {} {}", allowed.status, allowed.body);
        // The JWT of a signed-in user keeps full access.
        assert!(send(&gw, &alice.token, request_needing(scope)).await?.status.is_success(), "{scope} with a JWT");
        for key in [without, with] {
            let reply = Api::new(&gw, &key).get("/auth/keys").await?;
            assert_eq!((reply.status, reply.code()), (StatusCode::FORBIDDEN, "key_not_allowed"), "a key lists no keys");
        }
        assert_eq!(alice.delete(&format!("/auth/keys/{id}")).await?.status, StatusCode::OK);
    }
    // A job made with a key belongs to the key's user.
    let (_, writer) = make_key(&alice, &["jobs:write"], None).await?;
    let job = send(&gw, &writer, request_needing("jobs:write")).await?;
    assert_eq!(job.body["user"], "alice");
    let made_by_key = Api::new(&gw, &writer).post("/auth/keys", &json!({"name": "x", "scopes": ["jobs:read"]})).await?;
    assert_eq!((made_by_key.status, made_by_key.code()), (StatusCode::FORBIDDEN, "key_not_allowed"));
    Ok(())
}

#[tokio::test]
async fn deleted_expired_and_foreign_keys_are_refused() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    let gw = Gateway::start(&ws, &[]).await?;
    let alice = Api::new(&gw, &ws.mint("alice", "1h")?);
    let bob = Api::new(&gw, &ws.mint("bob", "1h")?);

    let (id, key) = make_key(&alice, &["jobs:read"], None).await?;
    let listed = alice.get("/auth/keys").await?;
    assert_eq!(listed.body["keys"][0]["id"], id.as_str());
    assert_eq!(listed.body["keys"][0]["scopes"], json!(["jobs:read"]));
    assert!(!listed.body.to_string().contains(&key[4..]), "a listing shows no secret");
    assert_eq!(Api::new(&gw, &key).get("/jobs").await?.status, StatusCode::OK);

    // Another user neither sees nor deletes it.
    assert_eq!(bob.get("/auth/keys").await?.body["keys"], json!([]));
    let foreign = bob.delete(&format!("/auth/keys/{id}")).await?;
    assert_eq!((foreign.status, foreign.code()), (StatusCode::NOT_FOUND, "key_not_found"));
    assert_eq!(Api::new(&gw, &key).get("/jobs").await?.status, StatusCode::OK);

    // Deleted: refused at once.
    assert_eq!(alice.delete(&format!("/auth/keys/{id}")).await?.status, StatusCode::OK);
    let gone = Api::new(&gw, &key).get("/jobs").await?;
    assert_eq!((gone.status, gone.code()), (StatusCode::UNAUTHORIZED, "invalid_key"));
    assert_eq!(alice.delete(&format!("/auth/keys/{id}")).await?.status, StatusCode::NOT_FOUND);
    let mangled = Api::new(&gw, &format!("{}x", &key[..54])).get("/jobs").await?;
    assert_eq!((mangled.status, mangled.code()), (StatusCode::UNAUTHORIZED, "invalid_key"));

    // Expired: refused.
    let (_, short) = make_key(&alice, &["jobs:read"], Some("1s")).await?;
    eventually(Duration::from_secs(30), "the key to expire", || async {
        let reply = Api::new(&gw, &short).get("/jobs").await?;
        Ok((reply.status == StatusCode::UNAUTHORIZED).then(|| reply.code().to_string()))
    })
    .await
    .map(|code| assert_eq!(code, "key_expired"))?;

    // `token revoke --user` deletes the user's keys.
    let (_, kept) = make_key(&alice, &["jobs:read"], None).await?;
    ws.gateway_cli_ok(&["token", "revoke", "--user", "alice"])?;
    assert_eq!(Api::new(&gw, &kept).get("/jobs").await?.code(), "invalid_key");
    Ok(())
}

#[tokio::test]
async fn key_requests_are_validated_and_bounded() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    let gw = Gateway::start(&ws, &[]).await?;
    let alice = Api::new(&gw, &ws.mint("alice", "1h")?);
    let cases = [
        (json!({"name": "", "scopes": ["jobs:read"]}), "invalid_name", "name"),
        (json!({"name": "a/b", "scopes": ["jobs:read"]}), "invalid_name", "name"),
        (json!({"name": "x", "scopes": []}), "invalid_scopes", "scopes"),
        (json!({"name": "x", "scopes": ["drain"]}), "invalid_scopes", "scopes"),
        (json!({"name": "x", "scopes": ["jobs:read"], "ttl": "forever"}), "invalid_ttl", "ttl"),
        (json!({"name": "x", "scopes": ["jobs:read"], "ttl": "400d"}), "invalid_ttl", "ttl"),
        (json!({"scopes": ["jobs:read"]}), "invalid_body", "name"),
        (json!({"name": "x", "scopes": ["jobs:read"], "owner": "bob"}), "invalid_body", "owner"),
    ];
    for (body, code, field) in cases {
        let reply = alice.post("/auth/keys", &body).await?;
        assert_eq!((reply.status, reply.code()), (StatusCode::UNPROCESSABLE_ENTITY, code), "{body}: {}", reply.body);
        assert!(reply.body["message"].as_str().unwrap_or("").contains(field), "{body}: {}", reply.body);
    }
    for _ in 0..20 {
        make_key(&alice, &["jobs:read"], None).await?;
    }
    let over = alice.post("/auth/keys", &json!({"name": "one more", "scopes": ["jobs:read"]})).await?;
    assert_eq!((over.status, over.code()), (StatusCode::CONFLICT, "too_many_keys"));
    let unauthenticated =
        Reply::read(reqwest::Client::new().get(format!("{}/auth/keys", gw.base)).send().await?).await?;
    assert_eq!(unauthenticated.status, StatusCode::UNAUTHORIZED);
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

#[tokio::test]
async fn the_secret_scanner_finds_an_api_key() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    let gw = Gateway::start(&ws, &[]).await?;
    let (_, key) = make_key(&Api::new(&gw, &ws.mint("alice", "1h")?), &["jobs:read"], None).await?;
    let repo = ws.path("repo");
    std::fs::create_dir_all(&repo)?;
    git(&repo, &["init", "-q"])?;
    std::fs::write(repo.join("script.env"), format!("FLOWORK_KEY={key}\n"))?;
    git(&repo, &["add", "."])?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/secret-scan.py");
    let output = Command::new("python3").arg(script).arg(&repo).output()?;
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "the planted key was not found: {out}");
    assert!(out.contains("work tree: script.env: API key fwk_"), "{out}");
    assert!(!out.contains(&key), "the report must not repeat the secret: {out}");
    Ok(())
}
