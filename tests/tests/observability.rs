//! Logs and metrics of a full run: fixed request-log fields on both binaries, no secret in any log line, and
//! both `/metrics` endpoints parsed by the official Prometheus client's OpenMetrics parser (Python).

use std::time::Duration;

use flowork_common::logging::REQUEST_FIELDS;
use flowork_tests::{Api, Engine, Gateway, Workspace, eventually, free_port};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The JSON request lines of a log.
fn request_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "flowork::request")
        .collect()
}

/// Metric family names and types, as the official parser reads them.
fn parse_metrics(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    let script = r#"
import sys, json
from prometheus_client.openmetrics.parser import text_string_to_metric_families
families = [[f.name, f.type] for f in text_string_to_metric_families(sys.stdin.read())]
print(json.dumps(families))
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    use std::io::Write;
    child.stdin.take().unwrap().write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(out.status.success(), "the parser refused the metrics: {}", String::from_utf8_lossy(&out.stderr));
    Ok(serde_json::from_slice(&out.stdout)?)
}

#[tokio::test]
async fn logs_carry_fixed_fields_without_secrets_and_metrics_parse() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    let engine_token = ws.add_engine("local")?;
    let gw = Gateway::start(&ws, &[]).await?;
    let user_token = ws.mint("alice", "1h")?;
    let api = Api::new(&gw, &user_token);
    let metrics_port = free_port()?;
    let listen = format!("127.0.0.1:{metrics_port}");
    let mut engine = Engine::start(&ws, &gw, "local", 2, &["--metrics-listen", &listen])?;

    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace}-00f067aa0ba902b7-01");
    let created = api
        .http
        .post(format!("{}/jobs", gw.base))
        .bearer_auth(&user_token)
        .header("idempotency-key", "traced")
        .header("traceparent", &traceparent)
        .json(&json!({"engine": "local", "kind": "echo", "payload": {"x": 1}}))
        .send()
        .await?;
    assert_eq!(created.status(), StatusCode::CREATED);
    let id = created.json::<Value>().await?["id"].as_str().unwrap().to_string();
    // The second job goes in only once the first is final: two outcomes ready together travel in one batch
    // (`POST /internal/finish`), and this test follows the traced job's own finish call.
    eventually(Duration::from_secs(30), "the traced job final", || async {
        let job = api.get(&format!("/jobs/{id}")).await?.body;
        Ok((job["status"] == "succeeded").then_some(()))
    })
    .await?;
    api.post_job("untraced", &json!({"engine": "local", "kind": "nope"})).await?;
    eventually(Duration::from_secs(30), "both jobs final", || async {
        let jobs = api.all_jobs(None).await?;
        Ok(jobs.iter().all(|j| j["status"] == "succeeded" || j["status"] == "dead").then_some(()))
    })
    .await?;
    assert_eq!(api.get("/jobs?status=bogus").await?.status, StatusCode::BAD_REQUEST);

    // Gateway metrics.
    let text = reqwest::get(format!("{}/metrics", gw.base)).await?.text().await?;
    let families = parse_metrics(&text)?;
    for (name, kind) in [
        ("flowork_queue_depth", "gauge"),
        ("flowork_running_jobs", "gauge"),
        ("flowork_claim_latency_seconds", "histogram"),
        ("flowork_http_requests", "counter"),
        ("flowork_job_outcomes", "counter"),
        ("flowork_engine_workers", "gauge"),
        ("flowork_engine_busy_ratio", "gauge"),
        ("flowork_autoscaler_decisions", "gauge"),
    ] {
        assert!(families.contains(&(name.to_string(), kind.to_string())), "{name} ({kind}) missing: {families:?}");
    }
    assert!(text.contains(r#"flowork_job_outcomes_total{engine="local",kind="echo",outcome="succeeded"} 1"#), "{text}");
    // A kind no handler ran successfully is counted under `other` (users choose kinds; labels stay bounded).
    assert!(text.contains(r#"flowork_job_outcomes_total{engine="local",kind="other",outcome="dead"} 1"#), "{text}");
    assert!(!text.contains("nope"), "{text}");
    assert!(text.contains(r#"route="/jobs",method="POST",status="201""#));

    // Engine metrics.
    let text = reqwest::get(format!("http://{listen}/metrics")).await?.text().await?;
    let families = parse_metrics(&text)?;
    for (name, kind) in [
        ("flowork_engine_workers", "gauge"),
        ("flowork_engine_busy_workers", "gauge"),
        ("flowork_engine_job_duration_seconds", "histogram"),
        ("flowork_engine_claim_round_trip_seconds", "histogram"),
        ("flowork_engine_autoscale_decisions", "counter"),
    ] {
        assert!(families.contains(&(name.to_string(), kind.to_string())), "{name} ({kind}) missing: {families:?}");
    }
    assert!(text.contains(r#"kind="other",outcome="failed""#) && !text.contains("nope"), "{text}");

    engine.process.signal("TERM")?;
    engine.process.wait_exit(Duration::from_secs(20)).await?;
    let gateway_log = gw.process.log_text();
    let engine_log = engine.process.log_text();

    // Every request line has every fixed field.
    let gateway_lines = request_lines(&gateway_log);
    let engine_lines = request_lines(&engine_log);
    assert!(gateway_lines.len() >= 5 && !engine_lines.is_empty());
    for line in gateway_lines.iter().chain(&engine_lines) {
        for field in REQUEST_FIELDS {
            assert!(line.get(field).is_some(), "{field} missing in {line}");
        }
    }
    let post = gateway_lines.iter().find(|l| l["route"] == "/jobs" && l["status"] == 201 && l["job_id"] == id.as_str());
    let post = post.expect("the POST /jobs line");
    assert_eq!((post["user_id"].as_str(), post["engine_id"].as_str()), (Some("alice"), Some("local")));
    assert_eq!(post["trace_id"], trace);
    assert!(post["ip"].as_str().is_some() && post["latency_ms"].as_f64().is_some());
    let finish =
        gateway_lines.iter().find(|l| l["route"] == "/internal/jobs/{id}/finish" && l["job_id"] == id.as_str());
    assert_eq!(
        finish.expect("the engine's finish, seen by the gateway")["trace_id"],
        trace,
        "the trace reaches the engine"
    );
    let engine_finish =
        engine_lines.iter().find(|l| l["job_id"] == id.as_str() && l["route"] == "/internal/jobs/{id}/finish");
    let engine_finish = engine_finish.expect("the engine's own line for the finish");
    assert_eq!((engine_finish["trace_id"].as_str(), engine_finish["status"].as_u64()), (Some(trace), Some(200)));
    let bad = gateway_lines.iter().find(|l| l["status"] == 400).expect("the bad request line");
    assert_eq!(bad["job_id"], Value::Null, "absent values are null");

    // No secret in any log line.
    for secret in [&user_token, &engine_token] {
        assert!(!gateway_log.contains(secret.as_str()) && !engine_log.contains(secret.as_str()), "a secret was logged");
    }
    Ok(())
}

#[tokio::test]
async fn an_alert_fires_once_and_resolves_once_at_a_webhook() -> anyhow::Result<()> {
    use std::sync::{Arc, Mutex};
    let received: Arc<Mutex<Vec<Value>>> = Arc::default();
    let sink = received.clone();
    let receiver = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(body);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, receiver).await });

    let ws = Workspace::new()?;
    ws.add_engine("local")?;
    let gw = Gateway::start(&ws, &["--alert-webhook", &hook, "--alert-queue-depth", "3", "--alert-interval", "200ms"])
        .await?;
    let api = Api::new(&gw, &ws.mint("alice", "1h")?);
    for i in 0..5 {
        api.post_job(&format!("a{i}"), &json!({"engine": "local", "kind": "sleep", "payload": {"ms": 20}})).await?;
    }
    eventually(Duration::from_secs(20), "the alert to fire", || async {
        Ok((received.lock().unwrap().len() == 1).then_some(()))
    })
    .await?;
    let _engine = Engine::start(&ws, &gw, "local", 2, &[])?;
    eventually(Duration::from_secs(30), "the alert to resolve", || async {
        Ok((received.lock().unwrap().len() >= 2).then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let messages = received.lock().unwrap().clone();
    assert_eq!(messages.len(), 2, "once firing, once resolved: {messages:?}");
    assert_eq!((messages[0]["status"].as_str(), messages[0]["rule"].as_str()), (Some("firing"), Some("queue_depth")));
    assert!(messages[0]["text"].as_str().unwrap().contains("queue_depth"), "Slack/Discord text field");
    // The depth when the rule looked: past the threshold (3), at most the 5 jobs posted.
    let fired_at = messages[0]["value"].as_f64().unwrap_or_default();
    assert!((3.0..=5.0).contains(&fired_at), "{}", messages[0]);
    assert_eq!(messages[1]["status"], "resolved");
    Ok(())
}

#[tokio::test]
async fn one_trace_runs_from_the_client_through_the_gateway_to_the_engine() -> anyhow::Result<()> {
    use std::io::BufRead;
    let ws = Workspace::new()?;
    let spans_file = ws.path("spans.jsonl");
    let mut receiver = std::process::Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/otlp_receiver.py"))
        .arg(&spans_file)
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut port = String::new();
    std::io::BufReader::new(receiver.stdout.take().unwrap()).read_line(&mut port)?;
    let endpoint = format!("http://127.0.0.1:{}", port.trim());
    let envs = [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "100")];

    ws.add_engine("local")?;
    let gw = Gateway::start_with_env(&ws, "127.0.0.1:0", &[], &envs).await?;
    let _engine = Engine::start_with_env(&ws, &gw, "local", 1, &[], &envs)?;
    let api = Api::new(&gw, &ws.mint("alice", "1h")?);
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let client_span = "b7ad6b7169203331";
    let created = api
        .http
        .post(format!("{}/jobs", gw.base))
        .bearer_auth(&api.token)
        .header("idempotency-key", "traced")
        .header("traceparent", format!("00-{trace}-{client_span}-01"))
        .json(&json!({"engine": "local", "kind": "echo", "payload": 1}))
        .send()
        .await?;
    assert_eq!(created.status(), StatusCode::CREATED);

    let spans = eventually(Duration::from_secs(30), "gateway and engine spans of the trace", || async {
        let text = std::fs::read_to_string(&spans_file).unwrap_or_default();
        let spans: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|s| s["trace_id"] == trace)
            .collect();
        let from = |service: &str, name: &str| spans.iter().any(|s| s["service"] == service && s["name"] == name);
        Ok((from("flowork-gateway", "POST /jobs") && from("flowork-engine", "execute echo")).then_some(spans))
    })
    .await?;
    let post = spans.iter().find(|s| s["name"] == "POST /jobs").unwrap();
    assert_eq!(post["parent_span_id"], client_span, "the gateway's request span is the client's child");
    let execute = spans.iter().find(|s| s["name"] == "execute echo").unwrap();
    assert_eq!(execute["parent_span_id"], client_span, "the engine's execution span continues the same trace");
    assert_eq!(execute["path"], "/v1/traces");
    let _ = receiver.kill();
    Ok(())
}
