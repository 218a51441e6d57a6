//! `loadtest`: how fast a Flowork gateway accepts jobs and how fast and how soon engines get them done.
//!
//! By default it starts its own gateway and engines (the binaries next to its own executable) on a fresh data
//! directory per run, so every run starts equal; `--gateway URL --token T --engine ID` drives a running one.
//! Modes: `closed` (max throughput: clients send their next job when the previous is answered; an enqueue-only
//! phase, then one with engines running), `open` (jobs leave at `--rate` for `--duration`, latency counted from
//! when each was due), `startup` (time from starting a gateway with `--shards` existing shards to its first
//! accepted `POST /jobs`). Per job it records the POST latency, the start delay (enqueue → claim) and end to
//! end (enqueue → finished); it prints p50/p95/p99/max, writes a JSON report and an SVG chart, and exits with
//! status 3 when an SLO is missed.

mod baseline;
mod bulk;
mod chart;
mod client;
mod cpu;
mod sender;
mod spawn;
mod stats;
mod timings;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::{Parser, ValueEnum};
use serde::Serialize;
use serde_json::json;

use crate::sender::{Progress, Sent, Target};
use crate::stats::{Summary, median};
use crate::timings::JobTimes;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Closed,
    Open,
    Startup,
    /// `POST /jobs/bulk` over a backlog of `--jobs` jobs, and the enqueue latency while it runs.
    Bulk,
}

#[derive(Debug, Clone, Parser)]
#[command(name = "loadtest", about = "Measure Flowork's enqueue rate, latencies and end-to-end throughput")]
pub struct Args {
    #[arg(long, value_enum, default_value = "closed")]
    pub mode: Mode,
    /// Jobs per phase (closed loop).
    #[arg(long, default_value_t = 20_000)]
    pub jobs: usize,
    /// Concurrent HTTP clients (closed loop); the most connections in use at once (open loop).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Jobs per second (open loop).
    #[arg(long, default_value_t = 1_000.0)]
    pub rate: f64,
    /// How long jobs are sent (open loop).
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Jobs per request: 1 sends `POST /jobs`; more send `POST /jobs/batch` (at most 1,000).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Existing shards (engines) when the gateway starts (startup mode).
    #[arg(long, default_value_t = 100)]
    pub shards: usize,
    /// Repetitions (each on a fresh data directory); the summary is their median.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Engine processes started; 0 (open loop only) measures `POST /jobs` at `--rate` alone, nothing claimed.
    #[arg(long, default_value_t = 1)]
    pub engines: usize,
    /// Workers per engine.
    #[arg(long, default_value_t = 64)]
    pub workers: u32,
    /// Folder of flowork-gateway and flowork-engine (default: next to this executable).
    #[arg(long)]
    pub bin_dir: Option<std::path::PathBuf>,
    /// Run the gateway it starts on PostgreSQL: a database URL on the server to use (`postgres://USER@HOST:PORT/DB`);
    /// each run creates a fresh database there (with `psql`) and drops it afterwards.
    #[arg(long)]
    pub postgres: Option<String>,
    /// Drive this running gateway (its engines must be running) instead of starting one.
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
    /// Where to write the SVG chart of latency over time (default: the report's path with `.svg`).
    #[arg(long)]
    pub chart: Option<std::path::PathBuf>,
    /// SLO: p95 end to end (enqueue → finished), open loop.
    #[arg(long, default_value_t = 1_500.0)]
    pub slo_e2e_p95_ms: f64,
    /// SLO: p95 start delay (enqueue → claim), open loop.
    #[arg(long, default_value_t = 500.0)]
    pub slo_start_p95_ms: f64,
    /// SLO: share of `POST /jobs` not answered 201 (0-1), every mode.
    #[arg(long, default_value_t = 0.01)]
    pub slo_error_rate: f64,
}

/// What one run measured.
#[derive(Debug, Clone, Serialize, Default)]
struct RunReport {
    healthz_req_per_s: Option<f64>,
    /// `POST /jobs` refused at validation, before the store: the request path without the store.
    refused_post_req_per_s: Option<f64>,
    /// Closed loop without engines: the pure write path.
    enqueue_jobs_per_s: Option<f64>,
    enqueue_post: Option<Summary>,
    /// Closed loop: how fast the engines emptied the queue the enqueue-only phase filled (engine start included).
    drain_jobs_per_s: Option<f64>,
    /// With engines running (closed or open loop).
    post: Summary,
    posted_jobs_per_s: f64,
    end_to_end_jobs_per_s: f64,
    start_delay: Summary,
    end_to_end: Summary,
    status_429: usize,
    status_5xx: usize,
    failed: usize,
    error_rate: f64,
    /// Startup mode: milliseconds from spawning the gateway to its first 201.
    ready_ms: Option<f64>,
    /// Processor time per request or job (user + system, microseconds), which a busy machine moves far less than
    /// throughput: the gateway's for `/healthz`, for the refused POST and for an enqueue; the load generator's
    /// own per enqueue; the gateway's and the engines' per job while the engines emptied the queue.
    cpu_us: CpuPerUnit,
}

/// Microseconds of processor time per request or job, by phase and process.
#[derive(Debug, Clone, Copy, Serialize, Default)]
struct CpuPerUnit {
    healthz_gateway: Option<f64>,
    refused_post_gateway: Option<f64>,
    enqueue_gateway: Option<f64>,
    enqueue_loadtest: Option<f64>,
    drain_gateway: Option<f64>,
    drain_engines: Option<f64>,
}

/// A phase with engines running: send, wait until every job is final, read the jobs' timings.
async fn measured_phase(
    args: &Args,
    base: &str,
    token: &str,
    engine: &str,
    tag: &str,
) -> anyhow::Result<(RunReport, Vec<Sent>, Vec<JobTimes>)> {
    let connections = args.concurrency;
    let target = Target::new(base, token, engine, tag, connections)?.with_batch(args.batch);
    let progress = Arc::new(Progress::default());
    let shown = sender::show_progress(format!("{:?}", args.mode).to_lowercase(), progress.clone());
    let started = Instant::now();
    let sent = match args.mode {
        Mode::Open => sender::open_loop(&target, args.rate, args.duration, connections, progress).await,
        _ => sender::closed_loop(&target, args.jobs, args.concurrency, progress).await,
    };
    let posting_s = started.elapsed().as_secs_f64();
    // Without engines (`--engines 0`) nothing runs: the phase measures the POSTs alone.
    let times = if args.engines == 0 {
        Vec::new()
    } else {
        timings::wait_drained(base, engine, Duration::from_secs(600)).await?;
        let ids: HashSet<String> = sent.iter().filter_map(|s| s.job_id.clone()).collect();
        timings::fetch(base, token, engine, &ids).await?
    };
    let finished_s = started.elapsed().as_secs_f64();
    shown.abort();
    let created = sent.iter().filter(|s| s.status == 201).count();
    let failed = sent.len() - created;
    let report = RunReport {
        post: Summary::of(sent.iter().map(|s| s.latency_ms).collect()),
        posted_jobs_per_s: created as f64 / posting_s,
        end_to_end_jobs_per_s: times.iter().filter(|t| t.succeeded).count() as f64 / finished_s,
        start_delay: Summary::of(times.iter().map(|t| t.start_delay_ms).collect()),
        end_to_end: Summary::of(times.iter().map(|t| t.end_to_end_ms).collect()),
        status_429: sent.iter().filter(|s| s.status == 429).count(),
        status_5xx: sent.iter().filter(|s| s.status >= 500).count(),
        failed,
        error_rate: if sent.is_empty() { 0.0 } else { failed as f64 / sent.len() as f64 },
        ..RunReport::default()
    };
    Ok((report, sent, times))
}

/// One run on a gateway and engines of its own.
async fn run_owned(args: &Args, run: usize) -> anyhow::Result<(RunReport, Vec<Sent>, Vec<JobTimes>)> {
    if args.mode == Mode::Startup {
        let ready_ms = spawn::measure_startup(args).await?;
        println!("run {run}: ready (first 201) {ready_ms:.1} ms after start with {} shards", args.shards);
        return Ok((RunReport { ready_ms: Some(ready_ms), ..RunReport::default() }, Vec::new(), Vec::new()));
    }
    let mut stack = spawn::Stack::start(args).await?;
    let gateway: Vec<u32> = stack.gateway_pid().into_iter().collect();
    let mut cpu_us = CpuPerUnit::default();
    let baseline_requests = args.jobs.min(20_000);
    let meter = cpu::Meter::start(gateway.clone());
    let healthz = baseline::healthz(&stack.base, baseline_requests, args.concurrency).await?;
    cpu_us.healthz_gateway = meter.micros_per(baseline_requests);
    let meter = cpu::Meter::start(gateway.clone());
    let refused =
        baseline::refused_post(&stack.base, &stack.token, spawn::ENGINE, baseline_requests, args.concurrency).await?;
    cpu_us.refused_post_gateway = meter.micros_per(baseline_requests);
    let mut enqueue = None;
    let mut drain = None;
    if args.mode == Mode::Closed {
        let target =
            Target::new(&stack.base, &stack.token, spawn::ENGINE, "enq", args.concurrency)?.with_batch(args.batch);
        let (on_gateway, on_loadtest) =
            (cpu::Meter::start(gateway.clone()), cpu::Meter::start(vec![std::process::id()]));
        let started = Instant::now();
        let sent = sender::closed_loop(&target, args.jobs, args.concurrency, Arc::default()).await;
        let rate = sent.iter().filter(|s| s.status == 201).count() as f64 / started.elapsed().as_secs_f64();
        cpu_us.enqueue_gateway = on_gateway.micros_per(args.jobs);
        cpu_us.enqueue_loadtest = on_loadtest.micros_per(args.jobs);
        enqueue = Some((rate, Summary::of(sent.iter().map(|s| s.latency_ms).collect())));
        let draining = Instant::now();
        let on_gateway = cpu::Meter::start(gateway.clone());
        stack.start_engines(args)?;
        timings::wait_drained(&stack.base, spawn::ENGINE, Duration::from_secs(600)).await?;
        drain = Some(args.jobs as f64 / draining.elapsed().as_secs_f64());
        cpu_us.drain_gateway = on_gateway.micros_per(args.jobs);
        // Started with zero CPU used: their whole use so far is the drain's.
        cpu_us.drain_engines = cpu::Meter::from_zero(stack.engine_pids()).micros_per(args.jobs);
    } else {
        stack.start_engines(args)?;
    }
    let (mut report, sent, times) = measured_phase(args, &stack.base, &stack.token, spawn::ENGINE, "run").await?;
    report.healthz_req_per_s = Some(healthz);
    report.refused_post_req_per_s = Some(refused);
    report.drain_jobs_per_s = drain;
    report.cpu_us = cpu_us;
    if let Some((rate, post)) = enqueue {
        report.enqueue_jobs_per_s = Some(rate);
        report.enqueue_post = Some(post);
        println!(
            "run {run}: GET /healthz {healthz:.0} req/s; POST /jobs refused before the store {refused:.0} req/s; \
             enqueue only {rate:.0} jobs/s ({:.2} of healthz, {:.2} of the refused POST), POST {post}; \
             engines drained the {} queued jobs at {:.0} jobs/s",
            rate / healthz,
            rate / refused,
            args.jobs,
            drain.unwrap_or(0.0)
        );
        let us = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.0}"));
        println!(
            "run {run}: CPU µs per request/job: gateway /healthz {}, refused POST {}, enqueue {} (load generator {}); \
             drain: gateway {}, engines {}",
            us(cpu_us.healthz_gateway),
            us(cpu_us.refused_post_gateway),
            us(cpu_us.enqueue_gateway),
            us(cpu_us.enqueue_loadtest),
            us(cpu_us.drain_gateway),
            us(cpu_us.drain_engines)
        );
    } else {
        println!("run {run}: GET /healthz {healthz:.0} req/s; POST /jobs refused before the store {refused:.0} req/s");
    }
    print_phase(run, &report, args.engines);
    stack.stop();
    Ok((report, sent, times))
}

fn print_phase(run: usize, report: &RunReport, engines: usize) {
    if engines == 0 {
        println!(
            "run {run}: no engines: posted {:.0} jobs/s; 429: {}, 5xx: {}, failed: {} ({:.2} %)\n  POST        {}",
            report.posted_jobs_per_s,
            report.status_429,
            report.status_5xx,
            report.failed,
            report.error_rate * 100.0,
            report.post
        );
        return;
    }
    println!(
        "run {run}: with engines: posted {:.0} jobs/s, end to end {:.0} jobs/s; 429: {}, 5xx: {}, failed: {} \
         ({:.2} %)\n  POST        {}\n  start delay {}\n  end to end  {}",
        report.posted_jobs_per_s,
        report.end_to_end_jobs_per_s,
        report.status_429,
        report.status_5xx,
        report.failed,
        report.error_rate * 100.0,
        report.post,
        report.start_delay,
        report.end_to_end
    );
}

/// The medians over runs of the figures that matter.
fn medians(mode: Mode, runs: &[RunReport]) -> serde_json::Value {
    let m = |f: &dyn Fn(&RunReport) -> Option<f64>| {
        let values: Vec<f64> = runs.iter().filter_map(f).collect();
        (!values.is_empty()).then(|| median(values))
    };
    if mode == Mode::Startup {
        return json!({ "ready_ms": m(&|r| r.ready_ms) });
    }
    json!({
        "healthz_req_per_s": m(&|r| r.healthz_req_per_s),
        "enqueue_jobs_per_s": m(&|r| r.enqueue_jobs_per_s),
        "refused_post_req_per_s": m(&|r| r.refused_post_req_per_s),
        "enqueue_to_healthz_ratio": m(&|r| Some(r.enqueue_jobs_per_s? / r.healthz_req_per_s?)),
        "enqueue_to_refused_post_ratio": m(&|r| Some(r.enqueue_jobs_per_s? / r.refused_post_req_per_s?)),
        "enqueue_post_p99_ms": m(&|r| r.enqueue_post.map(|p| p.p99_ms)),
        "drain_jobs_per_s": m(&|r| r.drain_jobs_per_s),
        "posted_jobs_per_s": m(&|r| Some(r.posted_jobs_per_s)),
        "end_to_end_jobs_per_s": m(&|r| (r.end_to_end.count > 0).then_some(r.end_to_end_jobs_per_s)),
        "post_p99_ms": m(&|r| Some(r.post.p99_ms)),
        "start_delay_p95_ms": m(&|r| (r.start_delay.count > 0).then_some(r.start_delay.p95_ms)),
        "end_to_end_p95_ms": m(&|r| (r.end_to_end.count > 0).then_some(r.end_to_end.p95_ms)),
        "error_rate": m(&|r| Some(r.error_rate)),
        "ready_ms": m(&|r| r.ready_ms),
        "cpu_us": {
            "healthz_gateway": m(&|r| r.cpu_us.healthz_gateway),
            "refused_post_gateway": m(&|r| r.cpu_us.refused_post_gateway),
            "enqueue_gateway": m(&|r| r.cpu_us.enqueue_gateway),
            "enqueue_loadtest": m(&|r| r.cpu_us.enqueue_loadtest),
            "drain_gateway": m(&|r| r.cpu_us.drain_gateway),
            "drain_engines": m(&|r| r.cpu_us.drain_engines),
        },
    })
}

/// The SLOs missed by the median figures: latency SLOs apply to open-loop runs (a closed loop floods the queue
/// on purpose), the error rate to every run.
fn missed_slos(args: &Args, median: &serde_json::Value) -> Vec<String> {
    let mut missed = Vec::new();
    let get = |key: &str| median[key].as_f64();
    if let Some(rate) = get("error_rate")
        && rate > args.slo_error_rate
    {
        missed.push(format!("error rate {:.2} % > {:.2} %", rate * 100.0, args.slo_error_rate * 100.0));
    }
    if args.mode == Mode::Open {
        if let Some(p95) = get("end_to_end_p95_ms").filter(|p| *p > args.slo_e2e_p95_ms) {
            missed.push(format!("end-to-end p95 {p95:.0} ms > {:.0} ms", args.slo_e2e_p95_ms));
        }
        if let Some(p95) = get("start_delay_p95_ms").filter(|p| *p > args.slo_start_p95_ms) {
            missed.push(format!("start-delay p95 {p95:.0} ms > {:.0} ms", args.slo_start_p95_ms));
        }
    }
    missed
}

fn write_chart(path: &std::path::Path, sent: &[Sent], times: &[JobTimes]) -> anyhow::Result<()> {
    let first = times.iter().map(|t| t.enqueued_ms).min().unwrap_or(0);
    let at = |t: &JobTimes| (t.enqueued_ms - first) as f64 / 1_000.0;
    let series = [
        chart::Series {
            name: "POST /jobs",
            colour: "#1f77b4",
            samples: sent.iter().map(|s| (s.due_s, s.latency_ms)).collect(),
        },
        chart::Series {
            name: "start delay",
            colour: "#2ca02c",
            samples: times.iter().map(|t| (at(t), t.start_delay_ms)).collect(),
        },
        chart::Series {
            name: "end to end",
            colour: "#d62728",
            samples: times.iter().map(|t| (at(t), t.end_to_end_ms)).collect(),
        },
    ];
    std::fs::write(path, chart::svg("Flowork loadtest: latency over time (last run)", &series))?;
    Ok(())
}

/// The same allocator as the gateway's, so the load generator takes no more of the shared cores than it must.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.mode == Mode::Bulk {
        return bulk_runs(&args).await;
    }
    if args.mode == Mode::Open && (args.rate.is_nan() || args.rate <= 0.0) {
        bail!("--rate must be above 0");
    }
    if args.engines == 0 && args.mode != Mode::Open {
        bail!("--engines 0 is for open loop (--mode open): the closed loop measures enqueues without engines already");
    }
    let mut runs = Vec::new();
    let mut last = (Vec::new(), Vec::new());
    for run in 1..=args.runs.max(1) {
        let (report, sent, times) = match (&args.gateway, &args.token, &args.engine) {
            (Some(base), Some(token), Some(engine)) => {
                if args.mode == Mode::Startup {
                    bail!("startup mode starts its own gateway; drop --gateway");
                }
                let tag = format!("lt{}-{run}-{}", std::process::id(), spawn::unique());
                let measured = measured_phase(&args, base, token, engine, &tag).await?;
                print_phase(run, &measured.0, args.engines);
                measured
            }
            _ => run_owned(&args, run).await?,
        };
        runs.push(report);
        last = (sent, times);
    }
    let median = medians(args.mode, &runs);
    println!("median of {} runs: {}", runs.len(), median);
    let missed = missed_slos(&args, &median);
    if let Some(path) = &args.report {
        let report = json!({
            "mode": format!("{:?}", args.mode).to_lowercase(),
            "jobs": args.jobs, "concurrency": args.concurrency, "rate": args.rate,
            "duration_s": args.duration.as_secs_f64(), "engines": args.engines, "workers": args.workers,
            "shards": args.shards, "runs": runs, "median": median,
            "slo": {"end_to_end_p95_ms": args.slo_e2e_p95_ms, "start_delay_p95_ms": args.slo_start_p95_ms,
                    "error_rate": args.slo_error_rate, "missed": missed},
        });
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    let chart = args.chart.clone().or_else(|| args.report.as_ref().map(|r| r.with_extension("svg")));
    if let Some(path) = chart
        && args.mode != Mode::Startup
    {
        write_chart(&path, &last.0, &last.1)?;
    }
    if !missed.is_empty() {
        eprintln!("SLO missed: {}", missed.join("; "));
        std::process::exit(3);
    }
    Ok(())
}

/// Bulk mode: each run on a fresh gateway; prints each and writes them all to the report.
async fn bulk_runs(args: &Args) -> anyhow::Result<()> {
    let mut runs = Vec::new();
    for run in 1..=args.runs.max(1) {
        let report = bulk::run(args).await?;
        println!(
            "run {run}: bulk cancel of {} jobs ({} changed) in {:.2} s ({:.0}/s); POST /jobs alone p50 {:.2} ms p99 \
             {:.2} ms max {:.2} ms; during the bulk p50 {:.2} ms p99 {:.2} ms max {:.2} ms ({} requests)",
            report.backlog,
            report.changed,
            report.bulk_seconds,
            report.changed_per_s,
            report.enqueue_alone.p50_ms,
            report.enqueue_alone.p99_ms,
            report.enqueue_alone.max_ms,
            report.enqueue_during_bulk.p50_ms,
            report.enqueue_during_bulk.p99_ms,
            report.enqueue_during_bulk.max_ms,
            report.enqueue_during_bulk.count,
        );
        runs.push(report);
    }
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_string_pretty(&json!({"mode": "bulk", "runs": runs}))?)?;
    }
    Ok(())
}
