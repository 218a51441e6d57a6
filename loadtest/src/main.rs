//! `loadtest`: measures how fast a Flowork gateway accepts jobs and how fast engines get them done.
//!
//! By default it starts its own gateway and engines (the binaries next to its own executable) on a fresh data
//! directory per run, so every run starts equal; `--gateway URL --token T --engine ID` measures only the enqueue
//! rate of a running gateway.
//! Closed loop: `--concurrency` clients each send their next `POST /jobs` when the previous one is answered.
//! Each run reports the enqueue rate with engines stopped (pure write path), then the end-to-end rate with
//! engines running (enqueue → every job finished); the summary gives the median over `--runs`.

mod spawn;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::{Value, json};

#[derive(Debug, Clone, Parser)]
#[command(name = "loadtest", about = "Measure Flowork's enqueue rate and end-to-end throughput")]
pub struct Args {
    /// Jobs per phase.
    #[arg(long, default_value_t = 20_000)]
    pub jobs: usize,
    /// Concurrent HTTP clients.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Repetitions (each on a fresh data directory); the summary is their median.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Engine processes started for the end-to-end phase.
    #[arg(long, default_value_t = 1)]
    pub engines: usize,
    /// Workers per engine.
    #[arg(long, default_value_t = 64)]
    pub workers: u32,
    /// Folder of flowork-gateway and flowork-engine (default: next to this executable).
    #[arg(long)]
    pub bin_dir: Option<std::path::PathBuf>,
    /// Drive this running gateway instead of starting one (enqueue phase only).
    #[arg(long, requires_all = ["token", "engine"])]
    pub gateway: Option<String>,
    /// Access token for `--gateway`.
    #[arg(long, env = "FLOWORK_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Engine to enqueue to with `--gateway`.
    #[arg(long)]
    pub engine: Option<String>,
    /// Where to write the JSON report.
    #[arg(long)]
    pub report: Option<std::path::PathBuf>,
}

/// What one phase measured.
#[derive(Debug, Clone, Copy)]
struct Phase {
    jobs_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: usize,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    percentile(&values, 50.0)
}

/// Sends `jobs` POSTs from `concurrency` clients; returns the rate and latency of the answers.
async fn enqueue(
    base: &str,
    token: &str,
    engine: &str,
    jobs: usize,
    concurrency: usize,
    tag: &str,
) -> anyhow::Result<Phase> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency).tcp_nodelay(true).build()?;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, next) = (client.clone(), next.clone());
        let (url, token, engine, tag) =
            (format!("{base}/jobs"), token.to_string(), engine.to_string(), tag.to_string());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= jobs {
                    return (latencies, errors);
                }
                let body = json!({"engine": engine, "kind": "echo", "payload": {"i": i}});
                let sent = Instant::now();
                let response = client
                    .post(&url)
                    .bearer_auth(&token)
                    .header("idempotency-key", format!("{tag}-{i}"))
                    .json(&body)
                    .send()
                    .await;
                match response {
                    Ok(r) if r.status().as_u16() == 201 => {
                        let _ = r.bytes().await;
                        latencies.push(sent.elapsed().as_secs_f64() * 1_000.0);
                    }
                    _ => errors += 1,
                }
            }
        }));
    }
    let mut latencies = Vec::with_capacity(jobs);
    let mut errors = 0;
    for task in tasks {
        let (l, e) = task.await?;
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    Ok(Phase {
        jobs_per_s: latencies.len() as f64 / elapsed,
        p50_ms: percentile(&latencies, 50.0),
        p99_ms: percentile(&latencies, 99.0),
        errors,
    })
}

/// The same closed loop against `GET /healthz` (no auth, no store): the HTTP baseline of this machine, measured
/// in the same run so the enqueue rate can be read as a ratio.
async fn healthz_baseline(base: &str, requests: usize, concurrency: usize) -> anyhow::Result<f64> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency).tcp_nodelay(true).build()?;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, next, url) = (client.clone(), next.clone(), format!("{base}/healthz"));
        tasks.push(tokio::spawn(async move {
            let mut ok = 0usize;
            while next.fetch_add(1, Ordering::Relaxed) < requests {
                if let Ok(r) = client.get(&url).send().await
                    && r.status().is_success()
                    && r.bytes().await.is_ok()
                {
                    ok += 1;
                }
            }
            ok
        }));
    }
    let mut ok = 0;
    for task in tasks {
        ok += task.await?;
    }
    Ok(ok as f64 / started.elapsed().as_secs_f64())
}

/// Waits until the engine's queue is empty (nothing queued or running), per `GET /status`.
async fn wait_drained(base: &str, engine: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let status: Value = client.get(format!("{base}/status")).send().await?.json().await?;
        let entry = status["engines"].as_array().and_then(|es| es.iter().find(|e| e["id"] == engine)).cloned();
        let entry = entry.context("engine missing from /status")?;
        if entry["queued"] == 0 && entry["running"] == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("jobs did not drain: {entry}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let (Some(base), Some(token), Some(engine)) = (&args.gateway, &args.token, &args.engine) {
        let tag = format!("lt{}", std::process::id());
        let mut rates = Vec::new();
        for run in 1..=args.runs {
            let p = enqueue(base, token, engine, args.jobs, args.concurrency, &format!("{tag}-{run}")).await?;
            println!(
                "run {run}: enqueue {:.0} jobs/s (p50 {:.2} ms, p99 {:.2} ms, {} errors)",
                p.jobs_per_s, p.p50_ms, p.p99_ms, p.errors
            );
            rates.push(p.jobs_per_s);
        }
        println!("median of {} runs: enqueue {:.0} jobs/s", args.runs, median(rates));
        return Ok(());
    }
    let mut runs = Vec::new();
    for run in 1..=args.runs {
        let mut stack = spawn::Stack::start(&args).await?;
        let baseline = healthz_baseline(&stack.base, args.jobs, args.concurrency).await?;
        let enq = enqueue(&stack.base, &stack.token, spawn::ENGINE, args.jobs, args.concurrency, "enq").await?;
        stack.start_engines(&args)?;
        wait_drained(&stack.base, spawn::ENGINE).await?;
        let started = Instant::now();
        let e2e_enq = enqueue(&stack.base, &stack.token, spawn::ENGINE, args.jobs, args.concurrency, "e2e").await?;
        wait_drained(&stack.base, spawn::ENGINE).await?;
        let e2e = args.jobs as f64 / started.elapsed().as_secs_f64();
        println!(
            "run {run}: GET /healthz {baseline:.0} req/s; enqueue {:.0} jobs/s ({:.2} of healthz; p50 {:.2} ms, \
             p99 {:.2} ms, {} errors); end to end {:.0} jobs/s (enqueue with engines running {:.0}/s, {} errors)",
            enq.jobs_per_s,
            enq.jobs_per_s / baseline,
            enq.p50_ms,
            enq.p99_ms,
            enq.errors,
            e2e,
            e2e_enq.jobs_per_s,
            e2e_enq.errors
        );
        runs.push((enq, e2e, baseline));
        stack.stop();
    }
    let baseline_median = median(runs.iter().map(|r| r.2).collect());
    let ratio_median = median(runs.iter().map(|r| r.0.jobs_per_s / r.2).collect());
    let enqueue_median = median(runs.iter().map(|r| r.0.jobs_per_s).collect());
    let p99_median = median(runs.iter().map(|r| r.0.p99_ms).collect());
    let e2e_median = median(runs.iter().map(|r| r.1).collect());
    println!(
        "median of {} runs: enqueue {enqueue_median:.0} jobs/s (p99 {p99_median:.2} ms; {ratio_median:.2} of the \
         {baseline_median:.0} req/s GET /healthz baseline), end to end {e2e_median:.0} jobs/s",
        args.runs
    );
    if let Some(path) = &args.report {
        let report = json!({
            "jobs": args.jobs, "concurrency": args.concurrency, "engines": args.engines, "workers": args.workers,
            "runs": runs.iter().map(|(e, x, b)| json!({"healthz_req_per_s": b, "enqueue_jobs_per_s": e.jobs_per_s,
                "post_p50_ms": e.p50_ms, "post_p99_ms": e.p99_ms, "errors": e.errors, "end_to_end_jobs_per_s": x}))
                .collect::<Vec<_>>(),
            "median": {"healthz_req_per_s": baseline_median, "enqueue_to_healthz_ratio": ratio_median,
                "enqueue_jobs_per_s": enqueue_median, "post_p99_ms": p99_median, "end_to_end_jobs_per_s": e2e_median},
        });
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    if runs.iter().any(|r| r.0.errors > 0) {
        bail!("some requests failed");
    }
    Ok(())
}
