//! The `loadtest` binary itself, on a tiny load: it starts its own gateway and engine, writes its report and
//! chart, and its exit status says whether the SLOs held.

use std::process::Command;

use flowork_tests::{Workspace, bin};
use serde_json::Value;

fn loadtest(ws: &Workspace, extra: &[&str]) -> anyhow::Result<(i32, Value, String)> {
    let report = ws.path("report.json");
    let out = Command::new(bin("loadtest"))
        .args(["--mode", "open", "--rate", "200", "--duration", "1s", "--runs", "1", "--workers", "4"])
        .arg("--report")
        .arg(&report)
        .args(extra)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report)?)?;
    Ok((out.status.code().unwrap_or(-1), report, stdout))
}

#[tokio::test]
async fn an_open_loop_run_reports_every_job_and_its_exit_status_follows_the_slos() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    // Latency SLOs no loaded test machine can miss: this checks the mechanics, not the speed.
    let (status, report, stdout) = loadtest(&ws, &["--slo-e2e-p95-ms", "600000", "--slo-start-p95-ms", "600000"])?;
    assert_eq!(status, 0, "{stdout}");
    let run = &report["runs"][0];
    assert_eq!(run["post"]["count"], 200, "{report}");
    assert_eq!(run["end_to_end"]["count"], 200, "every job's timings were read: {report}");
    assert_eq!(run["failed"], 0);
    assert!(run["start_delay"]["p95_ms"].as_f64().is_some());
    assert_eq!(report["slo"]["missed"], serde_json::json!([]));
    let chart = std::fs::read_to_string(ws.path("report.svg"))?;
    assert_eq!(chart.matches("<polyline").count(), 3, "{chart}");
    assert!(stdout.contains("start delay") && stdout.contains("end to end"), "{stdout}");

    // An SLO no system can meet: the run is the same, the exit status is 3 and the report says why.
    let (status, report, _) = loadtest(&ws, &["--slo-e2e-p95-ms=-1", "--slo-start-p95-ms=-1"])?;
    assert_eq!(status, 3);
    let missed = report["slo"]["missed"].as_array().cloned().unwrap_or_default();
    assert_eq!(missed.len(), 2, "{report}");
    Ok(())
}

#[tokio::test]
async fn without_engines_an_open_loop_measures_the_posts_alone_and_the_gateways_cpu() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    // No engine runs, so no job has timings: the latency SLOs (impossible ones here) have nothing to judge.
    let (status, report, stdout) = loadtest(&ws, &["--engines", "0", "--slo-e2e-p95-ms=-1", "--slo-start-p95-ms=-1"])?;
    assert_eq!(status, 0, "{stdout}");
    let run = &report["runs"][0];
    assert_eq!(run["post"]["count"], 200, "{report}");
    assert_eq!(run["failed"], 0);
    assert_eq!(run["end_to_end"]["count"], 0, "{report}");
    assert!(report["median"]["end_to_end_p95_ms"].is_null(), "{report}");
    assert!(stdout.contains("no engines: posted"), "{stdout}");
    // The gateway's processor time per baseline request, read from /proc while the run went on.
    if cfg!(target_os = "linux") {
        for phase in ["healthz_gateway", "refused_post_gateway"] {
            let micros = run["cpu_us"][phase].as_f64().unwrap_or(0.0);
            assert!(micros > 0.0 && micros < 1_000_000.0, "{phase}: {report}");
        }
    }
    // A closed loop always measures without engines first; asking for none is refused, not ignored.
    let out = Command::new(bin("loadtest")).args(["--engines", "0", "--runs", "1"]).output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--engines 0 is for open loop"));
    Ok(())
}
