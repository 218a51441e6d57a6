//! TLS on the gateway's listen port, with a certificate authority made in the test: HTTPS and HTTP/2 by ALPN (curl,
//! reqwest, headless Chromium), TLS 1.1 refused, a certificate swapped under a running gateway, a bad pair refused at
//! start, the engine and a Socket.IO client (WSS) working through it, and the handshake bound by the header-read
//! timeout, the connection cap and the idle timeout held under TLS, and HTTP/2 in clear text only with `--h2c`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use flowork_tests::live::Listener;
use flowork_tests::tls::{TestCa, write_private};
use flowork_tests::{Api, Engine, Gateway, Process, Workspace, bin, eventually};
use reqwest::StatusCode;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use serde_json::json;

fn addr(gw: &Gateway) -> &str {
    gw.base.trim_start_matches("https://")
}

/// A rustls client trusting only `ca`, limited to `versions`, offering HTTP/1.1 by ALPN.
fn client_config(ca: &TestCa, versions: &[&'static rustls::SupportedProtocolVersion]) -> anyhow::Result<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(ca.der()))?;
    let mut config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(versions)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A blocking TLS connection to the gateway with its handshake done (bounded by socket timeouts).
type Tls = StreamOwned<ClientConnection, TcpStream>;

fn connect(addr: &str, config: &ClientConfig) -> anyhow::Result<Tls> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
    tcp.set_write_timeout(Some(Duration::from_secs(30)))?;
    let connection = ClientConnection::new(Arc::new(config.clone()), ServerName::try_from("127.0.0.1")?.to_owned())?;
    let mut stream = StreamOwned::new(connection, tcp);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(stream)
}

/// The certificate the server presented on `stream`.
fn served_cert(stream: &Tls) -> anyhow::Result<Vec<u8>> {
    let chain = stream.conn.peer_certificates().ok_or_else(|| anyhow::anyhow!("no server certificate"))?;
    Ok(chain.first().ok_or_else(|| anyhow::anyhow!("an empty chain"))?.to_vec())
}

/// `GET /healthz` on a kept-alive HTTP/1.1 connection; returns the status line.
fn healthz_on(stream: &mut Tls) -> anyhow::Result<String> {
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")?;
    let mut seen = Vec::new();
    let mut buffer = [0u8; 1024];
    let head_end = loop {
        if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let read = stream.read(&mut buffer)?;
        anyhow::ensure!(read > 0, "the connection closed before the answer");
        seen.extend_from_slice(&buffer[..read]);
    };
    let head = String::from_utf8_lossy(&seen[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while seen.len() < head_end + length {
        let read = stream.read(&mut buffer)?;
        anyhow::ensure!(read > 0, "the connection closed inside the answer");
        seen.extend_from_slice(&buffer[..read]);
    }
    Ok(head.lines().next().unwrap_or_default().to_string())
}

/// The first certificate of a PEM file, DER.
fn cert_der(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    Ok(CertificateDer::from_pem_file(path)?.to_vec())
}

#[tokio::test]
async fn https_with_http2_by_alpn_for_curl_and_reqwest() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    let ca = TestCa::new("flowork test CA")?;
    let gw = Gateway::start_tls(&ws, &ca, &[]).await?;
    let url = format!("{}/healthz", gw.base);

    // reqwest (rustls, offering h2 and http/1.1) gets HTTP/2; one limited to HTTP/1.1 still gets an answer.
    let h2 = gw.http_client().get(&url).send().await?;
    assert_eq!((h2.status(), h2.version()), (StatusCode::OK, reqwest::Version::HTTP_2));
    let ca_cert = reqwest::Certificate::from_pem(ca.pem().as_bytes())?;
    let h1 = reqwest::Client::builder().add_root_certificate(ca_cert).http1_only().build()?;
    let h1 = h1.get(&url).send().await?;
    assert_eq!((h1.status(), h1.version()), (StatusCode::OK, reqwest::Version::HTTP_11));

    // curl (OpenSSL, ALPN h2) trusting the CA file.
    let ca_file = gw.ca_file.clone().ok_or_else(|| anyhow::anyhow!("no CA file"))?;
    let curl = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "60", "--http2", "-o", "/dev/null", "-w", "%{http_version} %{http_code}"])
        .arg("--cacert")
        .arg(&ca_file)
        .arg(&url)
        .output()
        .map_err(|e| anyhow::anyhow!("curl (Debian package curl) is needed: {e}"))?;
    assert!(curl.status.success(), "curl failed: {}", String::from_utf8_lossy(&curl.stderr));
    assert_eq!(String::from_utf8_lossy(&curl.stdout), "2 200");

    // Without the CA, the certificate is not trusted; plain HTTP on the TLS port gets no HTTP answer.
    assert!(reqwest::Client::new().get(&url).send().await.is_err(), "an unknown CA is refused");
    let plain = reqwest::Client::new().get(format!("http://{}/healthz", addr(&gw))).send().await;
    assert!(plain.is_err(), "plain HTTP answered on the TLS port: {plain:?}");
    Ok(())
}

/// A TLS 1.1 ClientHello (no `supported_versions` extension), as an old client would send.
fn tls11_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x02];
    body.extend_from_slice(&[7u8; 32]);
    body.push(0); // no session id
    body.extend_from_slice(&[0x00, 0x04, 0xc0, 0x13, 0x00, 0x2f]); // ECDHE-RSA-AES128-SHA, AES128-SHA
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    let len = body.len() as u32;
    let mut handshake = vec![0x01, (len >> 16) as u8, (len >> 8) as u8, len as u8];
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01, (handshake.len() >> 8) as u8, handshake.len() as u8];
    record.extend_from_slice(&handshake);
    record
}

#[tokio::test]
async fn tls_1_1_is_refused_and_1_2_and_1_3_are_served() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    let ca = TestCa::new("flowork test CA")?;
    let gw = Gateway::start_tls(&ws, &ca, &[]).await?;
    let addr = addr(&gw).to_string();
    let tls12 = client_config(&ca, &[&rustls::version::TLS12])?;
    let tls13 = client_config(&ca, &[&rustls::version::TLS13])?;
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut old = TcpStream::connect(&addr)?;
        old.set_read_timeout(Some(Duration::from_secs(30)))?;
        old.write_all(&tls11_client_hello())?;
        let mut answer = Vec::new();
        let _ = old.read_to_end(&mut answer);
        // A fatal alert record (content type 21, level 2) and no ServerHello (a handshake record, 22).
        assert!(answer.len() >= 7, "no alert for TLS 1.1: {answer:?}");
        assert_eq!((answer[0], answer[5]), (0x15, 2), "not a fatal alert: {answer:?}");

        for (config, version) in [(tls12, rustls::ProtocolVersion::TLSv1_2), (tls13, rustls::ProtocolVersion::TLSv1_3)]
        {
            let mut stream = connect(&addr, &config)?;
            assert_eq!(stream.conn.protocol_version(), Some(version));
            assert_eq!(healthz_on(&mut stream)?, "HTTP/1.1 200 OK");
        }
        Ok(())
    })
    .await??;
    Ok(())
}

#[tokio::test]
async fn a_swapped_certificate_is_served_to_new_connections_while_an_open_one_keeps_working() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    let ca = TestCa::new("flowork test CA")?;
    let gw = Gateway::start_tls(&ws, &ca, &["--idle-timeout", "10m"]).await?;
    let (cert_file, key_file) = (ws.path("tls-cert.pem"), ws.path("tls-key.pem"));
    let first = cert_der(&cert_file)?;
    let config = client_config(&ca, &[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let addr = addr(&gw).to_string();

    let mut open = {
        let (addr, config) = (addr.clone(), config.clone());
        tokio::task::spawn_blocking(move || -> anyhow::Result<Tls> {
            let mut open = connect(&addr, &config)?;
            assert_eq!(healthz_on(&mut open)?, "HTTP/1.1 200 OK");
            Ok(open)
        })
        .await??
    };
    assert_eq!(served_cert(&open)?, first);

    // The operator renews: a new key, then the certificate (a moment with a mismatched pair on disk).
    let second = ca.issue("flowork renewed gateway")?;
    second.write(&cert_file, &key_file)?;
    eventually(Duration::from_secs(60), "the renewed certificate on a new connection", || {
        let (addr, config, want) = (addr.clone(), config.clone(), second.der.clone());
        async move {
            let served = tokio::task::spawn_blocking(move || served_cert(&connect(&addr, &config)?)).await??;
            Ok((served == want).then_some(()))
        }
    })
    .await?;
    // The connection opened before still works, on the certificate it was made with.
    let open = tokio::task::spawn_blocking(move || -> anyhow::Result<Tls> {
        assert_eq!(healthz_on(&mut open)?, "HTTP/1.1 200 OK");
        Ok(open)
    })
    .await??;
    assert_eq!(served_cert(&open)?, first);
    assert!(gw.process.log_text().contains("TLS certificate reloaded"), "the reload is logged");

    // A broken key file is not taken: a warning, and the renewed certificate is still served.
    write_private(&key_file, b"not a key")?;
    eventually(Duration::from_secs(60), "a warning about the broken key", || async {
        Ok(gw.process.log_text().contains("TLS certificate not reloaded").then_some(()))
    })
    .await?;
    let served = tokio::task::spawn_blocking(move || served_cert(&connect(&addr, &config)?)).await??;
    assert_eq!(served, second.der);
    assert!(!gw.process.log_text().contains("BEGIN PRIVATE KEY"), "key material is never logged");
    Ok(())
}

/// Starts `serve` with the given TLS files and returns its exit code and log once it has exited by itself.
async fn refused_start(ws: &Workspace, cert: &std::path::Path, key: &std::path::Path) -> anyhow::Result<String> {
    let mut command = std::process::Command::new(bin("flowork-gateway"));
    command.args(["serve", "--listen", "127.0.0.1:0"]).arg("--data-dir").arg(ws.data_dir());
    command.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key).env("RUST_BACKTRACE", "0");
    ws.with_store(&mut command);
    let mut process = Process::spawn(command, ws.path(&format!("refused-{}.log", uuid_like())))?;
    let code = process.wait_exit(Duration::from_secs(60)).await?;
    let log = process.log_text();
    assert_ne!(code, Some(0), "started with a bad pair: {log}");
    assert!(!log.contains("panicked"), "a panic instead of an error: {log}");
    assert!(!log.contains("\"listening\""), "listened with a bad pair: {log}");
    process.signal("KILL").ok();
    Ok(log)
}

fn uuid_like() -> String {
    format!("{:?}", std::time::SystemTime::now()).chars().filter(char::is_ascii_digit).collect()
}

#[tokio::test]
async fn a_mismatched_garbage_or_missing_pair_is_a_clear_error_at_start() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    let ca = TestCa::new("flowork test CA")?;
    let (one, other) = (ca.issue("one")?, ca.issue("other")?);
    one.write(&ws.path("one.pem"), &ws.path("one.key"))?;
    other.write(&ws.path("other.pem"), &ws.path("other.key"))?;
    std::fs::write(ws.path("garbage.pem"), "this is not PEM\n")?;

    let log = refused_start(&ws, &ws.path("one.pem"), &ws.path("other.key")).await?;
    assert!(log.contains("does not belong to the certificate"), "{log}");
    let log = refused_start(&ws, &ws.path("garbage.pem"), &ws.path("one.key")).await?;
    assert!(log.contains("holds no PEM certificate"), "{log}");
    let log = refused_start(&ws, &ws.path("one.pem"), &ws.path("garbage.pem")).await?;
    assert!(log.contains("holds no PEM private key"), "{log}");
    let log = refused_start(&ws, &ws.path("one.pem"), &ws.path("missing.key")).await?;
    assert!(log.contains("cannot read the TLS key"), "{log}");
    Ok(())
}

#[tokio::test]
async fn the_engine_and_a_socket_io_client_work_over_https_and_wss() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    ws.add_engine("secure")?;
    let alice = ws.mint("alice", "1h")?;
    let ca = TestCa::new("flowork test CA")?;
    let gw = Gateway::start_tls(&ws, &ca, &[]).await?;
    let listener = Listener::start(&gw, &alice)?;
    eventually(Duration::from_secs(30), "the socket.io client to connect over WSS", || async {
        Ok(listener.events().iter().any(|e| e["event"] == "connected").then_some(()))
    })
    .await?;
    // The engine is given the CA with --ca-file (the harness passes the gateway's).
    let _engine = Engine::start(&ws, &gw, "secure", 2, &[])?;
    let api = Api::new(&gw, &alice);
    let created =
        api.post_job("tls-1", &json!({"engine": "secure", "kind": "echo", "payload": {"over": "tls"}})).await?;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = created.body["id"].as_str().unwrap_or_default().to_string();
    let done = eventually(Duration::from_secs(60), "the job to finish over HTTPS", || async {
        let job = api.get(&format!("/jobs/{id}")).await?.body;
        Ok((job["status"] == "succeeded").then_some(job))
    })
    .await?;
    assert_eq!(done["result"], json!({"over": "tls"}));
    eventually(Duration::from_secs(30), "job.created and its success over WSS", || async {
        let events = listener.events();
        let about = |name: &str| events.iter().any(|e| e["event"] == name && e["data"]["id"] == id.as_str());
        let succeeded = events.iter().any(|e| {
            e["event"] == "job.updated" && e["data"]["id"] == id.as_str() && e["data"]["status"] == "succeeded"
        });
        Ok((about("job.created") && succeeded).then_some(()))
    })
    .await?;

    // Without the CA, the engine refuses the gateway's certificate and says so.
    let mut untrusting = Process::spawn(
        {
            let mut command = std::process::Command::new(bin("flowork-engine"));
            command.args(["--gateway", &gw.base, "--engine-id", "secure", "--token-file"]).arg(ws.token_file("secure"));
            command
        },
        ws.path("untrusting-engine.log"),
    )?;
    assert_ne!(untrusting.wait_exit(Duration::from_secs(60)).await?, Some(0));
    untrusting.signal("KILL").ok();
    Ok(())
}

#[tokio::test]
async fn a_stalled_handshake_is_closed_by_the_header_read_timeout() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    let ca = TestCa::new("flowork test CA")?;
    let gw = Gateway::start_tls(&ws, &ca, &["--header-read-timeout", "2s"]).await?;
    let addr = addr(&gw).to_string();
    let config = client_config(&ca, &[&rustls::version::TLS13])?;
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        // One socket says nothing, one stops halfway through its ClientHello.
        let silent = TcpStream::connect(&addr)?;
        let mut partial = TcpStream::connect(&addr)?;
        partial.write_all(&tls11_client_hello()[..20])?;
        for mut socket in [silent, partial] {
            socket.set_read_timeout(Some(Duration::from_secs(90)))?;
            let mut rest = Vec::new();
            // Closed by the gateway (end of stream or reset), not by our read timeout.
            match socket.read_to_end(&mut rest) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
                Err(e) => anyhow::bail!("the gateway kept a stalled handshake open: {e}"),
            }
        }
        // Others are still served.
        assert_eq!(healthz_on(&mut connect(&addr, &config)?)?, "HTTP/1.1 200 OK");
        Ok(())
    })
    .await??;
    Ok(())
}

#[tokio::test]
async fn the_connection_cap_and_the_idle_timeout_hold_under_tls() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    let ca = TestCa::new("flowork test CA")?;
    let gw = Gateway::start_tls(&ws, &ca, &["--max-connections", "2", "--idle-timeout", "2s"]).await?;
    let addr = addr(&gw).to_string();
    let config = client_config(&ca, &[&rustls::version::TLS13])?;
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        // Two connections in use take both slots (the harness's readiness connection idles out first).
        let mut held = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while held.len() < 2 {
            anyhow::ensure!(std::time::Instant::now() < deadline, "could not open two connections");
            let tcp = TcpStream::connect(&addr)?;
            tcp.set_read_timeout(Some(Duration::from_secs(2)))?;
            let connection =
                ClientConnection::new(Arc::new(config.clone()), ServerName::try_from("127.0.0.1")?.to_owned())?;
            let mut stream = StreamOwned::new(connection, tcp);
            if healthz_on(&mut stream).is_ok() {
                stream.sock.set_read_timeout(Some(Duration::from_secs(30)))?;
                held.push(stream);
            }
        }
        // A third waits in the backlog: its handshake gets no answer while both slots are held...
        let third = TcpStream::connect(&addr)?;
        third.set_read_timeout(Some(Duration::from_secs(1)))?;
        let connection =
            ClientConnection::new(Arc::new(config.clone()), ServerName::try_from("127.0.0.1")?.to_owned())?;
        let mut waiting = StreamOwned::new(connection, third);
        assert!(waiting.conn.complete_io(&mut waiting.sock).is_err(), "a third connection was served past a cap of 2");
        // ...and the held ones, quiet past the idle timeout, are closed by the gateway, which frees the slots.
        for mut stream in held {
            let mut rest = Vec::new();
            match stream.read_to_end(&mut rest) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
                Err(e) => anyhow::bail!("an idle TLS connection was kept open: {e}"),
            }
        }
        waiting.sock.set_read_timeout(Some(Duration::from_secs(30)))?;
        assert_eq!(healthz_on(&mut waiting)?, "HTTP/1.1 200 OK");
        Ok(())
    })
    .await??;
    Ok(())
}

#[tokio::test]
async fn plain_http_is_http_1_1_unless_h2c_is_asked_for() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    let h2c = || reqwest::Client::builder().http2_prior_knowledge().build();
    let plain = Gateway::start(&ws, &[]).await?;
    assert!(h2c()?.get(format!("{}/healthz", plain.base)).send().await.is_err(), "h2c answered by default");
    let ok = reqwest::get(format!("{}/healthz", plain.base)).await?;
    assert_eq!((ok.status(), ok.version()), (StatusCode::OK, reqwest::Version::HTTP_11));
    drop(plain);
    let with_h2c = Gateway::start(&ws, &["--h2c"]).await?;
    let answer = h2c()?.get(format!("{}/healthz", with_h2c.base)).send().await?;
    assert_eq!((answer.status(), answer.version()), (StatusCode::OK, reqwest::Version::HTTP_2));
    Ok(())
}

/// `--ignore-certificate-errors-spki-list` of a key: base64 of the SHA-256 of its SubjectPublicKeyInfo.
fn spki_pin(key_pem: &str) -> anyhow::Result<String> {
    use base64::Engine as _;
    use rcgen::PublicKeyData;
    use sha2::Digest;
    let key = rcgen::KeyPair::from_pem(key_pem)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(key.subject_public_key_info())))
}

/// Headless Chromium loading `url` (its DOM) and its network log, trusting the key `pin` when given.
async fn chromium(ws: &Workspace, url: &str, pin: Option<&str>, name: &str) -> anyhow::Result<(String, String)> {
    let (dom, net_log, profile) = (
        ws.path(&format!("{name}.html")),
        ws.path(&format!("{name}.netlog.json")),
        ws.path(&format!("{name}.profile")),
    );
    let mut command = std::process::Command::new("chromium");
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--log-net-log={}", net_log.display()))
        .args(pin.map(|pin| format!("--ignore-certificate-errors-spki-list={pin}")))
        .args(["--dump-dom", url]);
    let mut browser = Process::spawn(command, ws.path(&format!("{name}.log")))?;
    browser.wait_exit(Duration::from_secs(120)).await?;
    // --dump-dom writes to stdout, which Process sends to the log file with stderr.
    std::fs::copy(&browser.log, &dom)?;
    Ok((std::fs::read_to_string(dom)?, std::fs::read_to_string(net_log).unwrap_or_default()))
}

#[tokio::test]
async fn chromium_loads_the_gateway_over_https_and_http2_with_its_key_pinned() -> anyhow::Result<()> {
    if std::process::Command::new("chromium").arg("--version").output().is_err() {
        eprintln!("SKIPPED: chromium is missing (Debian package chromium; scripts/test.sh installs it)");
        return Ok(());
    }
    let ws = Workspace::new()?;
    let ca = TestCa::new("flowork test CA")?;
    let gw = Gateway::start_tls(&ws, &ca, &[]).await?;
    let url = format!("{}/healthz", gw.base);
    let pin = spki_pin(&std::fs::read_to_string(ws.path("tls-key.pem"))?)?;
    let (dom, net_log) = chromium(&ws, &url, Some(&pin), "pinned").await?;
    assert!(dom.contains(r#"{"status":"ok"}"#), "the page: {dom}");
    assert!(net_log.contains(r#""negotiated_protocol":"h2""#), "Chromium did not negotiate h2");
    // Without the pin, the browser refuses the private CA's certificate.
    let (dom, _) = chromium(&ws, &url, None, "unpinned").await?;
    assert!(!dom.contains(r#"{"status":"ok"}"#), "a certificate from an unknown CA was accepted");
    Ok(())
}

#[tokio::test]
async fn a_sighup_reads_the_pair_again_and_the_gateway_goes_on_serving() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    let ca = TestCa::new("flowork test CA")?;
    let mut gw = Gateway::start_tls(&ws, &ca, &[]).await?;
    // `systemctl reload flowork-gateway` (ExecReload) sends SIGHUP.
    gw.process.signal("HUP")?;
    eventually(Duration::from_secs(30), "the SIGHUP to be taken as a reload", || async {
        Ok(gw.process.log_text().contains("SIGHUP: reading the TLS certificate and key again").then_some(()))
    })
    .await?;
    let answer = gw.http_client().get(format!("{}/healthz", gw.base)).send().await?;
    assert_eq!(answer.status(), StatusCode::OK);
    Ok(())
}
