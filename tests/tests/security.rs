//! Authorisation and abuse controls over real HTTP: whitelists, admin scopes, engine token rules, rate
//! limits, CIDR rules, forwarded-address spoofing, CORS, and tamper detection in the audit chain.

use std::time::Duration;

use flowork_tests::{Api, EngineApi, Gateway, Reply, Workspace, eventually};
use reqwest::StatusCode;
use serde_json::json;

fn echo(engine: &str) -> serde_json::Value {
    json!({"engine": engine, "kind": "echo"})
}

#[tokio::test]
async fn whitelists_decide_who_may_submit_and_changes_apply_at_once() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    ws.add_engine_owned_by("shared", "alice")?;
    let gw = Gateway::start(&ws, &[]).await?;
    let alice = Api::new(&gw, &ws.mint("alice", "1h")?);
    let carol = Api::new(&gw, &ws.mint("carol", "1h")?);

    let refused = carol.post_job("c1", &echo("shared")).await?;
    assert_eq!((refused.status, refused.code()), (StatusCode::FORBIDDEN, "not_whitelisted"));

    // The owner allows carol through the API: the very next request passes.
    let allowed =
        alice.http.put(format!("{}/engines/shared/users/carol", gw.base)).bearer_auth(&alice.token).send().await?;
    assert_eq!(allowed.status(), StatusCode::OK);
    assert_eq!(carol.post_job("c2", &echo("shared")).await?.status, StatusCode::CREATED);

    // Carol is not the owner: she cannot edit or read the whitelist.
    let not_owner =
        carol.http.put(format!("{}/engines/shared/users/dave", gw.base)).bearer_auth(&carol.token).send().await?;
    assert_eq!(not_owner.status(), StatusCode::FORBIDDEN);
    assert_eq!(carol.get("/engines/shared/users").await?.code(), "not_owner");
    let listed = alice.get("/engines/shared/users").await?;
    assert_eq!(listed.body["users"].as_array().unwrap().len(), 2);

    // The operator's CLI removes her; again at once.
    ws.gateway_cli_ok(&["engine", "disallow", "shared", "carol"])?;
    assert_eq!(carol.post_job("c3", &echo("shared")).await?.code(), "not_whitelisted");
    // Another user's job stays invisible whatever the whitelist says.
    let alices = alice.post_job("a1", &echo("shared")).await?;
    let id = alices.body["id"].as_str().unwrap();
    assert_eq!(carol.get(&format!("/jobs/{id}")).await?.status, StatusCode::NOT_FOUND);
    Ok(())
}

#[tokio::test]
async fn admin_tokens_need_their_scope_and_expire() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    ws.add_engine("local")?;
    let gw = Gateway::start(&ws, &[]).await?;
    let mint = |scope: &str, ttl: &str| {
        ws.gateway_cli_ok(&["admin", "token", "--scope", scope, "--ttl", ttl]).map(|t| t.trim().to_string())
    };
    let call = |token: String, method: reqwest::Method, path: &str| {
        let request = reqwest::Client::new().request(method, format!("{}{path}", gw.base)).bearer_auth(token);
        async move { Reply::read(request.send().await?).await }
    };

    let reader = mint("engines:read", "5m")?;
    assert_eq!(call(reader.clone(), reqwest::Method::GET, "/admin/engines").await?.status, StatusCode::OK);
    let denied = call(reader.clone(), reqwest::Method::PUT, "/admin/engines/local/users/zed").await?;
    assert_eq!((denied.status, denied.code()), (StatusCode::FORBIDDEN, "missing_scope"));
    let writer = mint("engines:write", "5m")?;
    assert_eq!(call(writer, reqwest::Method::PUT, "/admin/engines/local/users/zed").await?.status, StatusCode::OK);
    let zed = Api::new(&gw, &ws.mint("zed", "1h")?);
    assert_eq!(zed.post_job("z", &echo("local")).await?.status, StatusCode::CREATED);

    // A user token is not an admin token, and an admin token is not a user token.
    let user = ws.mint("alice", "1h")?;
    assert_eq!(call(user, reqwest::Method::GET, "/admin/engines").await?.code(), "invalid_token");
    assert_eq!(call(reader, reqwest::Method::GET, "/jobs").await?.code(), "invalid_token");

    // Admin tokens live at most 15 minutes, and expire.
    assert!(!ws.gateway_cli(&["admin", "token", "--scope", "drain", "--ttl", "16m"])?.status.success());
    assert!(!ws.gateway_cli(&["admin", "token", "--scope", "root", "--ttl", "1m"])?.status.success());
    let short = mint("audit:read", "1s")?;
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert_eq!(call(short, reqwest::Method::GET, "/admin/audit/verify").await?.code(), "token_expired");

    let auditor = mint("audit:read", "5m")?;
    let verdict = call(auditor, reqwest::Method::GET, "/admin/audit/verify").await?;
    assert_eq!(verdict.body["intact"], true);
    Ok(())
}

#[tokio::test]
async fn engine_tokens_only_open_the_engine_api_and_rotation_has_a_grace_period() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    let old = ws.add_engine("local")?;
    let gw = Gateway::start(&ws, &[]).await?;
    // An engine token is not a user token.
    let as_user = Api::new(&gw, &old);
    assert_eq!(as_user.get("/jobs").await?.status, StatusCode::UNAUTHORIZED);

    let claim = json!({"max": 1, "wait_ms": 0, "lease_ms": 1000, "worker": "t"});
    let rotated = ws.gateway_cli_ok(&["engine", "rotate-token", "local", "--grace", "3s", "--json"])?;
    let new = serde_json::from_str::<serde_json::Value>(&rotated)?["token"].as_str().unwrap().to_string();
    let (old_engine, new_engine) = (EngineApi::new(&gw, &old), EngineApi::new(&gw, &new));
    assert_eq!(
        old_engine.post("/internal/claim", &claim).await?.status,
        StatusCode::OK,
        "old token works during the grace"
    );
    assert_eq!(new_engine.post("/internal/claim", &claim).await?.status, StatusCode::OK);
    eventually(Duration::from_secs(10), "the old token to stop working", || async {
        Ok((old_engine.post("/internal/claim", &claim).await?.code() == "invalid_engine_token").then_some(()))
    })
    .await?;
    assert_eq!(new_engine.post("/internal/claim", &claim).await?.status, StatusCode::OK);
    Ok(())
}

#[tokio::test]
async fn rate_limits_answer_429_with_the_ietf_headers() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    ws.add_engine("local")?;
    let gw = Gateway::start(&ws, &["--rate-user", "5/m", "--rate-ip", "1000/s"]).await?;
    let alice = Api::new(&gw, &ws.mint("alice", "1h")?);
    for i in 0..5 {
        assert_eq!(alice.post_job(&format!("r{i}"), &echo("local")).await?.status, StatusCode::CREATED);
    }
    let limited = alice.post_job("r5", &echo("local")).await?;
    assert_eq!((limited.status, limited.code()), (StatusCode::TOO_MANY_REQUESTS, "rate_limited"));
    let retry: u64 = limited.headers["retry-after"].to_str()?.parse()?;
    assert!((1..=60).contains(&retry));
    assert_eq!(limited.headers["ratelimit-policy"], "\"per-user\";q=5;w=60");
    assert!(limited.headers["ratelimit"].to_str()?.starts_with("\"per-user\";r=0;t="));
    // Another user has their own bucket.
    let bob = Api::new(&gw, &ws.mint("bob", "1h")?);
    assert_eq!(bob.post_job("b", &echo("local")).await?.status, StatusCode::CREATED);

    let ws2 = Workspace::new()?;
    let gw2 = Gateway::start(&ws2, &["--rate-ip", "3/m"]).await?;
    let mut codes = Vec::new();
    for _ in 0..4 {
        codes.push(reqwest::get(format!("{}/auth/nonce", gw2.base)).await?.status());
    }
    assert_eq!(codes[..3], [StatusCode::OK; 3]);
    assert_eq!(codes[3], StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        reqwest::get(format!("{}/healthz", gw2.base)).await?.status(),
        StatusCode::OK,
        "probes are never limited"
    );
    Ok(())
}

#[tokio::test]
async fn cidr_rules_and_forwarded_addresses() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    let engine_token = ws.add_engine("local")?;
    let gw = Gateway::start(&ws, &["--deny-cidr", "127.0.0.0/8", "--engine-allow-cidr", "127.0.0.1/32"]).await?;
    let alice = Api::new(&gw, &ws.mint("alice", "1h")?);
    let denied = alice.get("/jobs").await?;
    assert_eq!((denied.status, denied.code()), (StatusCode::FORBIDDEN, "ip_denied"));
    let engine = EngineApi::new(&gw, &engine_token);
    let claim = json!({"max": 1, "wait_ms": 0, "lease_ms": 1000, "worker": "t"});
    assert_eq!(
        engine.post("/internal/claim", &claim).await?.status,
        StatusCode::OK,
        "the engine API has its own rules"
    );
    drop(gw);

    // Only 10.0.0.0/8 may use the API. A client on loopback that claims to be 10.1.1.1 is not believed...
    let gw = Gateway::start(&ws, &["--allow-cidr", "10.0.0.0/8"]).await?;
    let spoofed = alice
        .http
        .get(format!("{}/jobs", gw.base))
        .bearer_auth(&alice.token)
        .header("x-forwarded-for", "10.1.1.1")
        .send()
        .await?;
    assert_eq!(spoofed.status(), StatusCode::FORBIDDEN);
    drop(gw);
    // ...unless loopback is a trusted proxy.
    let gw = Gateway::start(&ws, &["--allow-cidr", "10.0.0.0/8", "--trusted-proxy", "127.0.0.1/32"]).await?;
    let forwarded = alice
        .http
        .get(format!("{}/jobs", gw.base))
        .bearer_auth(&alice.token)
        .header("x-forwarded-for", "10.1.1.1")
        .send()
        .await?;
    assert_eq!(forwarded.status(), StatusCode::OK);
    let outside = alice
        .http
        .get(format!("{}/jobs", gw.base))
        .bearer_auth(&alice.token)
        .header("x-forwarded-for", "192.0.2.1")
        .send()
        .await?;
    assert_eq!(outside.status(), StatusCode::FORBIDDEN);
    Ok(())
}

#[tokio::test]
async fn cors_answers_only_the_gui_origins() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    let gw = Gateway::start(&ws, &["--allowed-origin", "https://app.example.com"]).await?;
    let preflight = |origin: &str| {
        reqwest::Client::new()
            .request(reqwest::Method::OPTIONS, format!("{}/jobs", gw.base))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization,idempotency-key,content-type")
            .send()
    };
    let allowed = preflight("https://app.example.com").await?;
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://app.example.com");
    let other = preflight("https://evil.example").await?;
    assert!(other.headers().get("access-control-allow-origin").is_none());
    Ok(())
}

#[tokio::test]
async fn an_edited_or_deleted_audit_row_is_detected() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    for name in ["a", "b", "c"] {
        ws.add_engine(name)?;
    }
    let intact = ws.gateway_cli(&["audit", "verify"])?;
    assert!(intact.status.success(), "{}", String::from_utf8_lossy(&intact.stderr));
    // An attacker with write access to the database, behind the gateway's back.
    let db = ws.data_dir().join("control.sqlite3");
    let sql = |statement: &str| {
        let status = match &ws.store {
            Some(url) => std::process::Command::new("psql")
                .args([url.as_str(), "-q", "-v", "ON_ERROR_STOP=1", "-c", statement])
                .status()
                .expect("psql runs"),
            None => std::process::Command::new("python3")
                .args(["-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute(sys.argv[2]); c.commit()"])
                .arg(&db)
                .arg(statement)
                .status()
                .expect("python3 runs"),
        };
        assert!(status.success());
    };
    sql("UPDATE audit_log SET actor = 'mallory' WHERE id = 2");
    let edited = ws.gateway_cli(&["audit", "verify"])?;
    assert!(!edited.status.success());
    assert!(String::from_utf8_lossy(&edited.stderr).contains("row 2"), "{}", String::from_utf8_lossy(&edited.stderr));
    sql("UPDATE audit_log SET actor = 'cli' WHERE id = 2");
    assert!(ws.gateway_cli(&["audit", "verify"])?.status.success(), "restoring the row restores the chain");
    sql("DELETE FROM audit_log WHERE id = 3");
    assert!(!ws.gateway_cli(&["audit", "verify"])?.status.success());
    Ok(())
}

/// `GET /drain` with forwarding headers, from loopback (a trusted proxy in these tests).
async fn via_proxy(gw: &Gateway, headers: &[(&str, &str)]) -> anyhow::Result<StatusCode> {
    let mut request = reqwest::Client::new().get(format!("{}/drain", gw.base));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    Ok(request.send().await?.status())
}

#[tokio::test]
async fn cf_connecting_ip_is_believed_only_when_the_proxies_are_named_cloudflare() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    let rules = ["--trusted-proxy", "127.0.0.1/32", "--deny-cidr", "198.51.100.0/24"];
    // Behind an nginx that sets X-Forwarded-For and passes a client's own CF-Connecting-IP through, a denied
    // client cannot name another address.
    let gw = Gateway::start(&ws, &rules).await?;
    let forged = [("x-forwarded-for", "198.51.100.9"), ("cf-connecting-ip", "10.9.9.9")];
    assert_eq!(via_proxy(&gw, &forged).await?, StatusCode::FORBIDDEN, "CF-Connecting-IP was believed");
    assert_eq!(via_proxy(&gw, &[("x-forwarded-for", "10.9.9.9")]).await?, StatusCode::OK);
    drop(gw);

    // Behind Cloudflare (which overwrites CF-Connecting-IP) the operator says so, and only that header counts.
    let gw = Gateway::start_with_env(&ws, "127.0.0.1:0", &rules, &[("FLOWORK_CLIENT_IP_HEADER", "cf-connecting-ip")])
        .await?;
    assert_eq!(via_proxy(&gw, &[("cf-connecting-ip", "198.51.100.9")]).await?, StatusCode::FORBIDDEN);
    assert_eq!(via_proxy(&gw, &forged).await?, StatusCode::OK);
    assert_eq!(via_proxy(&gw, &[("x-forwarded-for", "198.51.100.9")]).await?, StatusCode::OK, "XFF is not read");
    Ok(())
}

#[tokio::test]
async fn ipv6_clients_share_a_rate_limit_bucket_per_64() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    let gw = Gateway::start(&ws, &["--trusted-proxy", "127.0.0.1/32", "--rate-ip", "3/m"]).await?;
    // One client rotating through the addresses of its /64 gets one bucket's worth of requests...
    for n in 1..=3 {
        let from = format!("2001:db8:1:2::{n}");
        assert_eq!(via_proxy(&gw, &[("x-forwarded-for", &from)]).await?, StatusCode::OK);
    }
    let rotated = via_proxy(&gw, &[("x-forwarded-for", "2001:db8:1:2:ffff:ffff:ffff:ffff")]).await?;
    assert_eq!(rotated, StatusCode::TOO_MANY_REQUESTS, "a new address of the same /64 got a fresh bucket");
    // ...while the next /64 is another client.
    assert_eq!(via_proxy(&gw, &[("x-forwarded-for", "2001:db8:1:3::1")]).await?, StatusCode::OK);
    drop(gw);

    // --rate-ip-v6-prefix 128 goes back to one bucket per address.
    let gw =
        Gateway::start(&ws, &["--trusted-proxy", "127.0.0.1/32", "--rate-ip", "1/m", "--rate-ip-v6-prefix", "128"])
            .await?;
    for n in 1..=3 {
        let from = format!("2001:db8:1:2::{n}");
        assert_eq!(via_proxy(&gw, &[("x-forwarded-for", &from)]).await?, StatusCode::OK);
    }
    Ok(())
}

#[tokio::test]
async fn store_passwords_never_reach_error_messages() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    ws.add_engine("local")?; // so migrate-store gets as far as opening its target
    // Every place libpq takes a password, in strings that fail (bad form, unknown option, nobody listening).
    for (store, secret) in [
        ("host=127.0.0.1 port=1 user=u password=s3cret-kv dbname=d", "s3cret-kv"),
        ("host=127.0.0.1 port=1 password='s3cret quoted'", "s3cret quoted"),
        ("postgres://u@127.0.0.1:1/d?password=s3cret-query&no_such_option=1", "s3cret-query"),
        ("postgresql://u:s3cret%2Dpct@127.0.0.1:1/d?no_such_option=1", "s3cret"),
        ("postgres://u@127.0.0.1:1/d?password=s3cret-q2", "s3cret-q2"),
    ] {
        for args in [vec!["engine", "list", "--store", store], vec!["migrate-store", "--to", store]] {
            let output = ws.gateway_cli(&args)?;
            let text =
                format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
            assert!(!output.status.success(), "{args:?} succeeded");
            assert!(!text.contains(secret), "{args:?} showed the password: {text}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_second_rotation_during_the_grace_is_refused_unless_forced() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    let first = ws.add_engine("local")?;
    let gw = Gateway::start(&ws, &[]).await?;
    let claim = json!({"max": 1, "wait_ms": 0, "lease_ms": 1000, "worker": "t"});
    let works = |token: String| {
        let (gw, claim) = (&gw, &claim);
        async move { Ok::<_, anyhow::Error>(EngineApi::new(gw, &token).post("/internal/claim", claim).await?.status) }
    };
    let rotate = |extra: &[&str]| -> anyhow::Result<std::process::Output> {
        ws.gateway_cli(&[&["engine", "rotate-token", "local", "--json"][..], extra].concat())
    };
    let token_of = |output: &std::process::Output| -> anyhow::Result<String> {
        let value: serde_json::Value = serde_json::from_slice(&output.stdout)?;
        Ok(value["token"].as_str().unwrap_or_default().to_string())
    };

    // The help says what happens by default.
    let help = String::from_utf8(ws.gateway_cli(&["engine", "rotate-token", "--help"])?.stdout)?;
    assert!(help.contains("keeps working for --grace (default 5m)"), "{help}");
    assert!(!help.contains("stops working at once"), "{help}");

    let second = rotate(&["--grace", "1h"])?;
    assert!(second.status.success());
    let second = token_of(&second)?;
    // Again within the hour: refused, and both tokens keep working.
    let refused = rotate(&["--grace", "1h"])?;
    assert!(!refused.status.success(), "a second rotation ended the first one's grace");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("still works until") && said.contains("--force"), "{said}");
    assert_eq!(works(first.clone()).await?, StatusCode::OK, "the first token lost its grace");
    assert_eq!(works(second.clone()).await?, StatusCode::OK);

    // --force: the token of the running grace stops at once, the current one gets the new grace.
    let third = rotate(&["--grace", "1h", "--force"])?;
    assert!(third.status.success());
    let third = token_of(&third)?;
    eventually(Duration::from_secs(10), "the first token to stop", || async {
        Ok((works(first.clone()).await? == StatusCode::UNAUTHORIZED).then_some(()))
    })
    .await?;
    assert_eq!(works(second).await?, StatusCode::OK);
    assert_eq!(works(third).await?, StatusCode::OK);
    Ok(())
}

#[tokio::test]
async fn an_allowed_origin_that_can_never_match_is_refused_at_start() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    for (origin, says) in [("app.example.com", "not an origin"), ("https://app.example.com/gui", "path")] {
        let output = std::process::Command::new(flowork_tests::bin("flowork-gateway"))
            .args(["serve", "--listen", "127.0.0.1:0", "--allowed-origin", origin])
            .arg("--data-dir")
            .arg(ws.data_dir())
            .output()?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "a usage error for {origin}: {stderr}");
        assert!(stderr.contains("--allowed-origin") && stderr.contains(says), "{origin}: {stderr}");
    }
    Ok(())
}
