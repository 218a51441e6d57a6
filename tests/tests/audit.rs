//! The audit log against an attacker with write access to the database (but not to the gateway's keys), the
//! operator's actions it records, how operators read it (`audit show`, `GET /admin/audit`), and the size of its
//! rows whatever a client sends. Every test runs on the store `FLOWORK_TEST_STORE` names.

use std::process::{Command, Output};
use std::time::Duration;

use flowork_common::clock::system_now_ms;
use flowork_tests::wallet::{Wallet, sign_in_message};
use flowork_tests::{Gateway, Reply, Workspace, bin, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Runs SQL on the control database behind the gateway's back.
fn sql(ws: &Workspace, statement: &str) -> anyhow::Result<()> {
    match &ws.store {
        Some(url) => {
            let out =
                Command::new("psql").args([url.as_str(), "-q", "-v", "ON_ERROR_STOP=1", "-c", statement]).output()?;
            anyhow::ensure!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
        }
        None => {
            let conn = rusqlite::Connection::open(ws.data_dir().join("control.sqlite3"))?;
            conn.busy_timeout(Duration::from_secs(10))?;
            conn.execute_batch(statement)?;
        }
    }
    Ok(())
}

/// Every audit row as stored, oldest first.
fn stored_rows(ws: &Workspace) -> anyhow::Result<Vec<Value>> {
    let text = match &ws.store {
        Some(url) => {
            let query = "SELECT coalesce(json_agg(json_build_object('id', id, 'at', at, 'actor', actor, 'action', \
                         action, 'target', target, 'ip', ip, 'outcome', outcome, 'detail', detail, 'prev_hash', \
                         prev_hash, 'hash', hash) ORDER BY id), '[]') FROM audit_log";
            let out =
                Command::new("psql").args([url.as_str(), "-At", "-v", "ON_ERROR_STOP=1", "-c", query]).output()?;
            anyhow::ensure!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8(out.stdout)?
        }
        None => {
            let conn = rusqlite::Connection::open(ws.data_dir().join("control.sqlite3"))?;
            conn.query_row(
                "SELECT coalesce(json_group_array(json_object('id', id, 'at', at, 'actor', actor, 'action', action,
                 'target', target, 'ip', ip, 'outcome', outcome, 'detail', detail, 'prev_hash', prev_hash,
                 'hash', hash)), '[]') FROM (SELECT * FROM audit_log ORDER BY id)",
                [],
                |r| r.get::<_, String>(0),
            )?
        }
    };
    Ok(serde_json::from_str(text.trim())?)
}

/// The chain hash of a row, as the gateway computes it (without the key, everyone can).
fn chain_hash(prev_hash: &str, row: &Value) -> String {
    let encoded = json!([
        prev_hash,
        row["id"],
        row["at"],
        row["actor"],
        row["action"],
        row["target"],
        row["ip"],
        row["outcome"],
        row["detail"]
    ])
    .to_string();
    hex::encode(Sha256::digest(encoded.as_bytes()))
}

/// `audit verify`: (exit status success, stdout + stderr).
fn verify(ws: &Workspace) -> anyhow::Result<(bool, String)> {
    let out = ws.gateway_cli(&["audit", "verify"])?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), text))
}

/// A gateway sub-command run by the OS user `user`.
fn cli_as(ws: &Workspace, user: &str, args: &[&str]) -> anyhow::Result<Output> {
    let out = ws
        .with_store(&mut Command::new(bin("flowork-gateway")))
        .args(args)
        .arg("--data-dir")
        .arg(ws.data_dir())
        .env("USER", user)
        .env_remove("SUDO_USER")
        .env("FLOWORK_LOG_FORMAT", "json")
        .output()?;
    Ok(out)
}

/// `audit show --json`: one object per row.
fn shown(ws: &Workspace, extra: &[&str]) -> anyhow::Result<Vec<Value>> {
    let text = ws.gateway_cli_ok(&[&["audit", "show", "--json"], extra].concat())?;
    text.lines().map(|line| Ok(serde_json::from_str(line)?)).collect()
}

/// A few rows, each written (and the head checkpointed) by an operator command.
fn some_rows(ws: &Workspace) -> anyhow::Result<()> {
    for name in ["a", "b", "c"] {
        ws.add_engine(name)?;
    }
    Ok(())
}

#[tokio::test]
async fn deleting_the_newest_rows_is_detected() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    some_rows(&ws)?;
    let (ok, text) = verify(&ws)?;
    assert!(ok, "{text}");
    let newest = stored_rows(&ws)?.len();
    assert_eq!(newest, 6);

    // The last two rows go: the chain that is left is perfectly consistent, but the signed head remembers.
    sql(&ws, "DELETE FROM audit_log WHERE id > 4")?;
    let (ok, text) = verify(&ws)?;
    assert!(!ok, "a cut tail must fail verification: {text}");
    assert!(text.contains("rows 5 to 6 are missing"), "{text}");

    // Appending goes on past the head, leaving the gap: the cut stays visible however many rows follow.
    for user in ["carol", "dave", "erin"] {
        ws.gateway_cli_ok(&["engine", "allow", "a", user])?;
    }
    let (ok, text) = verify(&ws)?;
    assert!(!ok, "{text}");
    assert!(text.contains("rows 5 to 6 are missing"), "{text}");
    Ok(())
}

#[tokio::test]
async fn rows_written_by_a_gateway_are_covered_once_it_stops() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    let mut gw = Gateway::start(&ws, &[]).await?;
    // A few refused sign-ins: rows written by the serving gateway, fewer than a checkpoint's worth.
    for _ in 0..5 {
        let refused = reqwest::Client::new()
            .post(format!("{}/auth/verify", gw.base))
            .header("origin", &gw.base)
            .json(&json!({"message": "not a sign-in message", "signature": "0x00"}))
            .send()
            .await?;
        assert!(refused.status().is_client_error());
    }
    gw.process.signal("TERM")?;
    assert_eq!(gw.process.wait_exit(Duration::from_secs(60)).await?, Some(0));
    let rows = stored_rows(&ws)?.len();
    assert!(rows >= 6, "the refusals and the drain at SIGTERM: {rows}");
    assert!(verify(&ws)?.0);

    // At shutdown the head moved to the last row: cutting it is caught.
    sql(&ws, &format!("DELETE FROM audit_log WHERE id = {rows}"))?;
    let (ok, text) = verify(&ws)?;
    assert!(!ok, "{text}");
    assert!(text.contains(&format!("row {rows} is missing after the end of the log")), "{text}");
    Ok(())
}

#[tokio::test]
async fn rewriting_a_row_and_recomputing_the_hashes_is_detected() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    some_rows(&ws)?;
    assert!(verify(&ws)?.0);

    // Row 2 now says mallory did it, and every hash from there on is recomputed: the chain itself is intact.
    let mut rows = stored_rows(&ws)?;
    rows[1]["actor"] = json!("mallory");
    let mut prev = rows[0]["hash"].as_str().unwrap().to_string();
    let mut statements = Vec::new();
    for row in &mut rows[1..] {
        let hash = chain_hash(&prev, row);
        statements.push(format!(
            "UPDATE audit_log SET actor = '{}', prev_hash = '{prev}', hash = '{hash}' WHERE id = {};",
            row["actor"].as_str().unwrap(),
            row["id"]
        ));
        prev = hash;
    }
    sql(&ws, &statements.concat())?;
    let (ok, text) = verify(&ws)?;
    assert!(!ok, "a rewritten log must fail verification: {text}");
    assert!(text.contains("row 2: signature mismatch"), "the rewritten row is named: {text}");
    assert!(!text.contains("row 1:"), "the rows before it are fine: {text}");

    // Taking the signatures off as well does not help: the head still names the old hash of row 6.
    sql(&ws, "UPDATE audit_log SET mac = NULL")?;
    let (ok, text) = verify(&ws)?;
    assert!(!ok, "{text}");
    assert!(text.contains("row 6: does not match the head checkpoint"), "{text}");
    Ok(())
}

#[tokio::test]
async fn an_untouched_log_verifies_with_concurrent_writers() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    ws.add_engine("a")?;
    let gw = Gateway::start(&ws, &[]).await?;
    // Operator commands (separate processes) and a serving gateway append at once.
    let children: Vec<_> = (0..6)
        .map(|i| {
            ws.with_store(&mut Command::new(bin("flowork-gateway")))
                .args(["engine", "allow", "a", &format!("user{i}"), "--data-dir"])
                .arg(ws.data_dir())
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    for _ in 0..10 {
        let refused = reqwest::Client::new()
            .post(format!("{}/auth/verify", gw.base))
            .header("origin", &gw.base)
            .json(&json!({"message": "not a sign-in message", "signature": "0x00"}))
            .send()
            .await?;
        assert!(refused.status().is_client_error());
    }
    for mut child in children {
        assert!(child.wait()?.success());
    }
    let (ok, text) = verify(&ws)?;
    assert!(ok, "{text}");
    assert_eq!(stored_rows(&ws)?.len(), 2 + 6 + 10);
    drop(gw);
    assert!(verify(&ws)?.0);
    Ok(())
}

#[tokio::test]
async fn the_log_verifies_after_pruning() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    some_rows(&ws)?;
    // Let the rows age past a one-second retention; the gateway prunes at start.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let gw = Gateway::start(&ws, &["--audit-retention", "1s"]).await?;
    eventually(Duration::from_secs(30), "old rows pruned", || async {
        Ok(shown(&ws, &[])?.first().is_some_and(|row| row["id"].as_i64() >= Some(6)).then_some(()))
    })
    .await?;
    let (ok, text) = verify(&ws)?;
    assert!(ok, "{text}");
    ws.gateway_cli_ok(&["engine", "allow", "a", "carol"])?;
    let (ok, text) = verify(&ws)?;
    assert!(ok, "{text}");
    assert!(text.contains(&format!("{} rows verified", stored_rows(&ws)?.len())), "{text}");
    drop(gw);
    Ok(())
}

#[tokio::test]
async fn every_operator_command_is_audited_with_who_ran_it() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    let run = |args: &[&str]| -> anyhow::Result<String> {
        let out = cli_as(&ws, "ops-alice", args)?;
        anyhow::ensure!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        Ok(String::from_utf8(out.stdout)?)
    };
    let added: Value = serde_json::from_str(&run(&["engine", "add", "e1", "--owner", "alice", "--json"])?)?;
    let rotated: Value = serde_json::from_str(&run(&["engine", "rotate-token", "e1", "--json"])?)?;
    run(&["engine", "allow", "e1", "bob"])?;
    run(&["engine", "disallow", "e1", "bob"])?;
    run(&["engine", "revoke", "e1"])?;
    let admin = run(&["admin", "token", "--scope", "audit:read", "--ttl", "5m"])?;
    run(&["keys", "rotate"])?;
    // A refused command is recorded too, with its error.
    assert!(!cli_as(&ws, "ops-alice", &["engine", "revoke", "nope"])?.status.success());

    let rows = shown(&ws, &[])?;
    let actions: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| (r["actor"].as_str().unwrap(), r["action"].as_str().unwrap(), r["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [
            ("cli:ops-alice", "engine.add", "ok"),
            ("cli:ops-alice", "engine.rotate_token", "ok"),
            ("cli:ops-alice", "engine.allow", "ok"),
            ("cli:ops-alice", "engine.disallow", "ok"),
            ("cli:ops-alice", "engine.revoke", "ok"),
            ("cli:ops-alice", "admin.token", "ok"),
            ("cli:ops-alice", "keys.rotate", "ok"),
            ("cli:ops-alice", "engine.revoke", "error"),
        ]
    );
    assert_eq!(rows[5]["target"], "audit:read");
    assert!(rows[7]["detail"].as_str().unwrap().contains("nope"), "{}", rows[7]);
    // Never a secret: not the engine tokens, not the admin token.
    let log = serde_json::to_string(&rows)?;
    for secret in [added["token"].as_str().unwrap(), rotated["token"].as_str().unwrap(), admin.trim()] {
        assert!(!log.contains(secret), "a secret is in the audit log");
    }
    Ok(())
}

#[tokio::test]
async fn operators_read_the_log_on_the_command_line() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    some_rows(&ws)?;
    let all = shown(&ws, &[])?;
    assert_eq!(all.len(), 6);
    assert_eq!(all[0]["action"], "engine.add");
    assert!(all[0]["at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(shown(&ws, &["--since", "1h"])?.len(), 6);
    assert_eq!(shown(&ws, &["--since", "2999-01-01T00:00:00Z"])?.len(), 0);
    let text = ws.gateway_cli_ok(&["audit", "show"])?;
    assert_eq!(text.lines().count(), 6);
    assert!(text.contains("engine.allow"), "{text}");
    let bad = ws.gateway_cli(&["audit", "show", "--since", "yesterday"])?;
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("neither an RFC 3339 time nor a duration"));
    Ok(())
}

#[tokio::test]
async fn admins_read_the_log_page_by_page_with_the_audit_read_scope() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    some_rows(&ws)?;
    let reader = ws.gateway_cli_ok(&["admin", "token", "--scope", "audit:read", "--ttl", "5m"])?.trim().to_string();
    let drainer = ws.gateway_cli_ok(&["admin", "token", "--scope", "drain", "--ttl", "5m"])?.trim().to_string();
    let gw = Gateway::start(&ws, &[]).await?;
    let get = |path: String, token: Option<String>| {
        let request = reqwest::Client::new().get(format!("{}{path}", gw.base));
        let request = match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        async move { Reply::read(request.send().await?).await }
    };

    let anonymous = get("/admin/audit".into(), None).await?;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED, "{}", anonymous.body);
    let user = get("/admin/audit".into(), Some(ws.mint("alice", "5m")?)).await?;
    assert_eq!(user.status, StatusCode::UNAUTHORIZED, "a user token is no admin token: {}", user.body);
    let no_scope = get("/admin/audit".into(), Some(drainer)).await?;
    assert_eq!((no_scope.status, no_scope.code()), (StatusCode::FORBIDDEN, "missing_scope"));

    // Page through with limit=2: the rows in order, each once (the reads themselves are audited after them).
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(c) => format!("/admin/audit?limit=2&cursor={c}"),
            None => "/admin/audit?limit=2".into(),
        };
        let page = get(query, Some(reader.clone())).await?;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let entries = page.body["entries"].as_array().unwrap();
        assert!(entries.len() <= 2);
        ids.extend(entries.iter().filter(|e| e["action"] != "admin.audit_read").map(|e| e["id"].as_i64().unwrap()));
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
        assert!(ids.len() < 100, "paging must end");
    }
    assert_eq!(&ids[..6], [1, 2, 3, 4, 5, 6]);
    let recent = get("/admin/audit?since=1h&limit=1000".into(), Some(reader.clone())).await?;
    assert!(recent.body["entries"].as_array().unwrap().len() >= 6, "{}", recent.body);
    let future = get("/admin/audit?since=2999-01-01T00:00:00Z".into(), Some(reader.clone())).await?;
    assert_eq!(future.body["entries"], json!([]));

    for (query, code) in [
        ("limit=0", "invalid_limit"),
        ("limit=5000", "invalid_limit"),
        ("cursor=abc", "invalid_cursor"),
        ("since=yesterday", "invalid_since"),
    ] {
        let bad = get(format!("/admin/audit?{query}"), Some(reader.clone())).await?;
        assert_eq!((bad.status, bad.code()), (StatusCode::BAD_REQUEST, code), "{query}: {}", bad.body);
    }
    let not_a_number = get("/admin/audit?limit=many".into(), Some(reader.clone())).await?;
    assert_eq!(not_a_number.status, StatusCode::BAD_REQUEST);
    assert!(not_a_number.body["error"].is_string(), "a JSON error: {}", not_a_number.body);

    let spec = get("/openapi.json".into(), None).await?.body;
    let operation = &spec["paths"]["/admin/audit"]["get"];
    assert!(operation["parameters"].as_array().unwrap().iter().any(|p| p["name"] == "cursor"), "{operation}");
    let schema = &operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"];
    assert_eq!(schema, "#/components/schemas/AuditLogPage");
    assert!(spec["components"]["schemas"]["AuditRecord"]["properties"]["actor"].is_object());
    Ok(())
}

#[tokio::test]
async fn a_refused_sign_in_with_a_huge_message_leaves_a_bounded_audit_row() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    let gw = Gateway::start(&ws, &[]).await?;
    let nonce: Value = reqwest::get(format!("{}/auth/nonce", gw.base)).await?.json().await?;
    let wallet = Wallet::random();
    let message = sign_in_message(&gw.base, &wallet.address(), nonce["nonce"].as_str().unwrap(), 1, system_now_ms());
    // The header names a 1 MB domain: the refusal quotes it.
    let authority = gw.base.trim_start_matches("http://");
    let huge = message.replacen(authority, &"a".repeat(1 << 20), 1);
    let refused = reqwest::Client::new()
        .post(format!("{}/auth/verify", gw.base))
        .header("origin", &gw.base)
        .json(&json!({"message": huge, "signature": wallet.sign(&huge)}))
        .send()
        .await?;
    let refused = Reply::read(refused).await?;
    assert_eq!(refused.code(), "domain_mismatch", "{}", refused.body);

    let rows = stored_rows(&ws)?;
    let row = rows.iter().find(|r| r["outcome"] == "domain_mismatch").expect("the refusal is audited");
    let detail = row["detail"].as_str().unwrap();
    assert!(detail.len() <= 1024, "the stored detail is {} bytes", detail.len());
    assert!(detail.starts_with("the message is for aaaa") && detail.ends_with("…[truncated]"), "{detail}");
    assert!(serde_json::to_string(row)?.len() < 4096, "the whole row stays small");
    assert!(verify(&ws)?.0);
    Ok(())
}
