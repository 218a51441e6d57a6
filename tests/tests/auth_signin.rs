//! Wallet sign-in over real HTTP with real secp256k1 keys and real EIP-4361 text, the refresh-token
//! lifecycle, and one sign-in by an independent wallet implementation (Python's eth-account).

use std::process::Command;

use flowork_common::clock::system_now_ms;
use flowork_tests::wallet::{Wallet, sign_in_message};
use flowork_tests::{Api, Gateway, Reply, Workspace};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn nonce(gw: &Gateway) -> anyhow::Result<String> {
    let body: Value = reqwest::get(format!("{}/auth/nonce", gw.base)).await?.json().await?;
    Ok(body["nonce"].as_str().unwrap().to_string())
}

async fn verify(gw: &Gateway, origin: &str, message: &str, signature: &str) -> anyhow::Result<Reply> {
    let response = reqwest::Client::new()
        .post(format!("{}/auth/verify", gw.base))
        .header("origin", origin)
        .json(&json!({"message": message, "signature": signature}))
        .send()
        .await?;
    Reply::read(response).await
}

async fn post(gw: &Gateway, path: &str, body: Value) -> anyhow::Result<Reply> {
    Reply::read(reqwest::Client::new().post(format!("{}{path}", gw.base)).json(&body).send().await?).await
}

async fn audit_rows(ws: &Workspace) -> anyhow::Result<u64> {
    let out = ws.gateway_cli_ok(&["audit", "verify"])?;
    Ok(out.split_whitespace().find_map(|w| w.parse().ok()).unwrap_or(0))
}

#[tokio::test]
async fn a_wallet_signs_in_refreshes_and_logs_out() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    let gw = Gateway::start(&ws, &[]).await?;
    let wallet = Wallet::random();
    let message = sign_in_message(&gw.base, &wallet.address(), &nonce(&gw).await?, 1, system_now_ms());
    let signed = verify(&gw, &gw.base, &message, &wallet.sign(&message)).await?;
    assert_eq!(signed.status, StatusCode::OK, "{}", signed.body);
    assert_eq!(signed.body["token_type"], "Bearer");
    assert_eq!(signed.body["expires_in"], 900);
    assert_eq!(signed.body["user"], wallet.user().as_str());

    // The access token works, as this wallet's lowercase address.
    ws.add_engine_owned_by("mine", &wallet.user())?;
    let api = Api::new(&gw, signed.body["access_token"].as_str().unwrap());
    let job = api.post_job("k1", &json!({"engine": "mine", "kind": "echo"})).await?;
    assert_eq!(job.status, StatusCode::CREATED, "{}", job.body);
    assert_eq!(job.body["user"], wallet.user().as_str());

    // Refresh rotates; the new pair works.
    let first = signed.body["refresh_token"].as_str().unwrap().to_string();
    let rotated = post(&gw, "/auth/refresh", json!({"refresh_token": first})).await?;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.body);
    let second = rotated.body["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(second, first);
    let api2 = Api::new(&gw, rotated.body["access_token"].as_str().unwrap());
    assert_eq!(api2.get("/jobs").await?.status, StatusCode::OK);

    // Presenting the rotated token again is theft: the whole family is revoked.
    let reuse = post(&gw, "/auth/refresh", json!({"refresh_token": first})).await?;
    assert_eq!((reuse.status, reuse.code()), (StatusCode::UNAUTHORIZED, "refresh_reused"));
    let after = post(&gw, "/auth/refresh", json!({"refresh_token": second})).await?;
    assert_eq!((after.status, after.code()), (StatusCode::UNAUTHORIZED, "refresh_revoked"));
    let junk = post(&gw, "/auth/refresh", json!({"refresh_token": "fwr_nonsense"})).await?;
    assert_eq!((junk.status, junk.code()), (StatusCode::UNAUTHORIZED, "invalid_refresh_token"));

    // Logout revokes a fresh sign-in's refresh token.
    let message = sign_in_message(&gw.base, &wallet.address(), &nonce(&gw).await?, 1, system_now_ms());
    let again = verify(&gw, &gw.base, &message, &wallet.sign(&message)).await?;
    let token = again.body["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(post(&gw, "/auth/logout", json!({"refresh_token": token})).await?.status, StatusCode::OK);
    let dead = post(&gw, "/auth/refresh", json!({"refresh_token": token})).await?;
    assert_eq!(dead.code(), "refresh_revoked");
    assert!(audit_rows(&ws).await? >= 6, "sign-ins, refreshes, reuse and logout are audited");

    // None of the secrets of this session reached the gateway's log.
    let log = gw.process.log_text();
    assert!(!log.is_empty());
    let access = signed.body["access_token"].as_str().unwrap().to_string();
    for secret in [first, second, token, access, wallet.sign(&message)] {
        assert!(!log.contains(&secret), "a secret was logged");
    }
    Ok(())
}

#[tokio::test]
async fn every_sign_in_failure_is_a_401_with_its_code_and_is_audited() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    let gw = Gateway::start(&ws, &["--chain-id", "1", "--chain-id", "10"]).await?;
    let wallet = Wallet::random();
    let now = system_now_ms();
    let fresh = |nonce: String| sign_in_message(&gw.base, &wallet.address(), &nonce, 1, now);
    let rows_before = audit_rows(&ws).await?;
    let mut failures = 0;
    let mut expect = |reply: Reply, code: &str| {
        assert_eq!((reply.status, reply.code()), (StatusCode::UNAUTHORIZED, code), "{}", reply.body);
        failures += 1;
    };

    // Replay: the same signed message twice.
    let message = fresh(nonce(&gw).await?);
    let signature = wallet.sign(&message);
    assert_eq!(verify(&gw, &gw.base, &message, &signature).await?.status, StatusCode::OK);
    expect(verify(&gw, &gw.base, &message, &signature).await?, "nonce_reused");

    let unknown = fresh("0123456789abcdef0123456789abcdef".into());
    expect(verify(&gw, &gw.base, &unknown, &wallet.sign(&unknown)).await?, "nonce_unknown");

    let m = fresh(nonce(&gw).await?);
    expect(verify(&gw, "http://evil.example", &m, &wallet.sign(&m)).await?, "origin_mismatch");
    let m = fresh(nonce(&gw).await?).replacen("127.0.0.1", "evil.example", 1);
    expect(verify(&gw, &gw.base, &m, &wallet.sign(&m)).await?, "domain_mismatch");
    // EIP-4361: a scheme in the header must be the origin's (the gateway's origin is http://).
    let m = fresh(nonce(&gw).await?).replacen("127.0.0.1", "https://127.0.0.1", 1);
    expect(verify(&gw, &gw.base, &m, &wallet.sign(&m)).await?, "scheme_mismatch");
    let m = sign_in_message(&gw.base, &wallet.address(), &nonce(&gw).await?, 5, now);
    expect(verify(&gw, &gw.base, &m, &wallet.sign(&m)).await?, "chain_id_not_allowed");
    let m = sign_in_message(&gw.base, &wallet.address(), &nonce(&gw).await?, 1, now - 600_000);
    expect(verify(&gw, &gw.base, &m, &wallet.sign(&m)).await?, "expired_message");
    let m = sign_in_message(&gw.base, &wallet.address(), &nonce(&gw).await?, 1, now + 120_000);
    expect(verify(&gw, &gw.base, &m, &wallet.sign(&m)).await?, "issued_in_future");
    let m = fresh(nonce(&gw).await?);
    expect(verify(&gw, &gw.base, &m, &Wallet::random().sign(&m)).await?, "bad_signature");
    expect(verify(&gw, &gw.base, &m, "0x1234").await?, "bad_signature");
    // The malleable high-s twin of a valid signature.
    let good = hex_bytes(&wallet.sign(&m));
    expect(verify(&gw, &gw.base, &m, &high_s_twin(&good)).await?, "bad_signature");
    expect(verify(&gw, &gw.base, "hello", &wallet.sign("hello")).await?, "malformed_message");
    let lower = fresh(nonce(&gw).await?).replace(&wallet.address(), &wallet.user());
    expect(verify(&gw, &gw.base, &lower, &wallet.sign(&lower)).await?, "invalid_address");
    // The failed attempts did not use up the nonce of `m`: it still signs in.
    assert_eq!(verify(&gw, &gw.base, &m, &wallet.sign(&m)).await?.status, StatusCode::OK);

    let rows_after = audit_rows(&ws).await?;
    assert!(
        rows_after >= rows_before + failures as u64 + 2,
        "every attempt is audited ({rows_before} -> {rows_after})"
    );
    Ok(())
}

fn hex_bytes(signature: &str) -> Vec<u8> {
    (2..signature.len()).step_by(2).map(|i| u8::from_str_radix(&signature[i..i + 2], 16).unwrap()).collect()
}

/// (r, n - s, v ^ 1): a second valid-looking signature that EIP-2 forbids.
fn high_s_twin(raw: &[u8]) -> String {
    use k256::ecdsa::Signature;
    let sig = Signature::from_slice(&raw[..64]).unwrap();
    let (r, s) = sig.split_scalars();
    let twin = Signature::from_scalars(r.to_bytes(), (-*s).to_bytes()).unwrap();
    let mut out = twin.to_bytes().to_vec();
    out.push(if raw[64] == 27 { 28 } else { 27 });
    format!("0x{}", out.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

#[tokio::test]
async fn an_independent_wallet_implementation_signs_in() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    let gw = Gateway::start(&ws, &[]).await?;
    // Python's eth-account creates the key, and signs the message as MetaMask's personal_sign would.
    let script = r#"
import sys, json
from eth_account import Account
from eth_account.messages import encode_defunct
account = Account.create()
print(json.dumps({"address": account.address, "key": account.key.hex()}))
sys.stdout.flush()
for line in sys.stdin:
    message = line.rstrip("\n").encode().decode("unicode_escape")
    signed = Account.sign_message(encode_defunct(text=message), account.key)
    print(json.dumps({"signature": "0x" + signed.signature.hex().removeprefix("0x")}))
    sys.stdout.flush()
"#;
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    use std::io::{BufRead, BufReader, Write};
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line)?;
    let account: Value =
        serde_json::from_str(&line).map_err(|e| anyhow::anyhow!("eth-account missing? {e}: {line}"))?;
    let address = account["address"].as_str().unwrap().to_string();
    let mut stdin = child.stdin.take().unwrap();
    let mut sign = |message: &str| -> anyhow::Result<String> {
        writeln!(stdin, "{}", message.replace('\n', "\\n"))?;
        line.clear();
        stdout.read_line(&mut line)?;
        Ok(serde_json::from_str::<Value>(&line)?["signature"].as_str().unwrap_or_default().to_string())
    };
    let message = sign_in_message(&gw.base, &address, &nonce(&gw).await?, 1, system_now_ms());
    let reply = verify(&gw, &gw.base, &message, &sign(&message)?).await?;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["user"], address.to_lowercase().as_str());
    // The optional scheme of the header (EIP-4361): the origin's is accepted, another is refused.
    let with_scheme = |scheme: &str, nonce: &str| {
        sign_in_message(&gw.base, &address, nonce, 1, system_now_ms()).replacen(
            "127.0.0.1",
            &format!("{scheme}://127.0.0.1"),
            1,
        )
    };
    let message = with_scheme("http", &nonce(&gw).await?);
    assert_eq!(verify(&gw, &gw.base, &message, &sign(&message)?).await?.status, StatusCode::OK);
    let message = with_scheme("https", &nonce(&gw).await?);
    let reply = verify(&gw, &gw.base, &message, &sign(&message)?).await?;
    assert_eq!((reply.status, reply.code()), (StatusCode::UNAUTHORIZED, "scheme_mismatch"), "{}", reply.body);
    drop(stdin);
    child.wait()?;
    Ok(())
}
