//! The shard store's write path — enqueue, claim, finish — in transactions of 1, 16 and 256 operations (what one
//! group commit holds), each as the writer runs it (a transaction's enqueues, a claim's leases and a report's
//! successes each in multi-row statements), each beside a raw rusqlite baseline in the same run: the same number of single-row
//! statements (INSERT of a job-sized row, UPDATE by primary key) on a one-table database with the same settings
//! (WAL, synchronous=NORMAL). After the runs it prints each operation's time as a ratio of its baseline.
//! The live-event feed's cost is measured the same way: enqueue with the writer's update hook installed and no
//! listener (`enqueue_hooked`), and with the changed rows read back after the commit (`enqueue_watched`).
//!
//! Run: `cargo bench -p flowork-gateway --bench store`.

use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput};
use flowork_common::wire::Lease;
use flowork_gateway::admission::AdmissionLimits;
use flowork_gateway::store::breakers::HeldBack;
use flowork_gateway::store::core::stats::Tally;
use flowork_gateway::store::sqlite::touched::{self, Touched};
use flowork_gateway::store::sqlite::{connection, fair, migrate, queries, stats};
use flowork_gateway::store::{EnqueueOutcome, NewJob};
use rusqlite::{Connection, TransactionBehavior, params};

mod workload;

use workload::{NOW, PAYLOAD, sample_job};

const BATCHES: [usize; 3] = [1, 16, 256];

struct Shard {
    conn: Connection,
    next: u64,
    /// The live-event hook, when measuring its cost; with `watched`, changed rows are read back as a listener needs.
    touched: Option<Touched>,
    watched: bool,
}

impl Shard {
    fn open(dir: &Path) -> Self {
        Self::open_named(dir, "shard")
    }

    fn open_named(dir: &Path, name: &str) -> Self {
        let mut conn = connection::open_writer(&dir.join(format!("{name}.sqlite3"))).expect("open shard");
        migrate::apply(&mut conn, migrate::SHARD, "bench").expect("migrate");
        queries::allow_user(&conn, "bench-user", true, NOW).expect("allow");
        Self { conn, next: 0, touched: None, watched: false }
    }

    fn with_hook(mut self, watched: bool) -> Self {
        self.touched = Some(Touched::install(&self.conn).expect("hook"));
        self.watched = watched;
        self
    }

    fn new_job(&mut self) -> NewJob {
        self.next += 1;
        sample_job("bench", "bench-user", self.next)
    }

    /// Enqueues `n` jobs in one transaction.
    fn enqueue(&mut self, n: usize) {
        let jobs: Vec<NewJob> = (0..n).map(|_| self.new_job()).collect();
        // As the writer does with a group commit's enqueues: all in one call (one statement per chunk).
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).expect("begin");
        let refs: Vec<&NewJob> = jobs.iter().collect();
        for outcome in queries::enqueue_many(&tx, &refs, NOW, AdmissionLimits::default()).expect("enqueue") {
            assert!(matches!(outcome, Ok(EnqueueOutcome::Created(_))));
        }
        tx.commit().expect("commit");
        if let Some(touched) = &self.touched {
            let rows = touched.take();
            if self.watched {
                let changes = touched::read_changes(&self.conn, "bench", &rows).expect("read changes");
                assert_eq!(changes.len(), n);
                black_box(changes);
            }
        }
    }

    /// Claims `n` jobs in one transaction.
    fn claim(&mut self, n: usize) -> Vec<Lease> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).expect("begin");
        let by = fair::ClaimBy { engine: "bench", worker: "bench", max: n as u32, lease_ms: 60_000, now: NOW };
        let claimed = fair::claim(&tx, &by, &HeldBack::default()).expect("claim");
        tx.commit().expect("commit");
        assert_eq!(claimed.leases.len(), n);
        claimed.leases
    }

    /// Finishes leases in one transaction.
    fn finish(&mut self, leases: &[Lease]) {
        // As an engine's batched report arrives: the successes in one call (one statement per chunk).
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).expect("begin");
        let items: Vec<(&str, &str, Option<&str>)> =
            leases.iter().map(|l| (l.job.id.as_str(), l.lease_token.as_str(), Some(r#"{"ok":true}"#))).collect();
        let done = {
            // As the writer does: the stats the batch adds, written once.
            let mut tally = Tally::default();
            let done = queries::finish_succeeded_many(&tx, &items, NOW, &mut tally).expect("finish");
            stats::add(&tx, &tally).expect("finish");
            done
        };
        assert_eq!(done.len(), leases.len());
        tx.commit().expect("commit");
    }
}

/// The raw baseline: one table, single-row statements, the same connection settings.
struct Raw {
    conn: Connection,
    next: i64,
}

impl Raw {
    fn open(dir: &Path) -> Self {
        let conn = connection::open_writer(&dir.join("raw.sqlite3")).expect("open raw");
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL, state INTEGER NOT NULL)")
            .expect("create");
        Self { conn, next: 0 }
    }

    /// `n` single-row INSERTs in one transaction.
    fn insert(&mut self, n: usize) {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).expect("begin");
        {
            let mut stmt = tx.prepare_cached("INSERT INTO t (id, body, state) VALUES (?1, ?2, 0)").expect("prepare");
            for _ in 0..n {
                self.next += 1;
                stmt.execute(params![self.next, PAYLOAD]).expect("insert");
            }
        }
        tx.commit().expect("commit");
    }

    /// `n` single-row UPDATEs by primary key in one transaction.
    fn update(&mut self, n: usize, state: i64) {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).expect("begin");
        {
            let mut stmt = tx.prepare_cached("UPDATE t SET state = ?2 WHERE id = ?1").expect("prepare");
            for i in 0..n as i64 {
                stmt.execute(params![self.next - i, state]).expect("update");
            }
        }
        tx.commit().expect("commit");
    }
}

fn bench(c: &mut Criterion, dir: &Path) {
    let mut shard = Shard::open(dir);
    let mut raw = Raw::open(dir);
    let mut hooked = Shard::open_named(dir, "hooked").with_hook(false);
    let mut watched = Shard::open_named(dir, "watched").with_hook(true);
    let mut group = c.benchmark_group("store");
    for n in BATCHES {
        group.bench_function(BenchmarkId::new("enqueue_hooked", n), |b| b.iter(|| hooked.enqueue(black_box(n))));
        group.bench_function(BenchmarkId::new("enqueue_watched", n), |b| b.iter(|| watched.enqueue(black_box(n))));
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::new("enqueue", n), |b| b.iter(|| shard.enqueue(black_box(n))));
        group.bench_function(BenchmarkId::new("raw_insert", n), |b| b.iter(|| raw.insert(black_box(n))));
        // Claims and finishes need queued (or leased) jobs; making them is set-up, outside the timing.
        let shard_cell = std::cell::RefCell::new(&mut shard);
        group.bench_function(BenchmarkId::new("claim", n), |b| {
            b.iter_batched(
                || shard_cell.borrow_mut().enqueue(n),
                |_| shard_cell.borrow_mut().claim(n),
                BatchSize::PerIteration,
            )
        });
        group.bench_function(BenchmarkId::new("finish", n), |b| {
            b.iter_batched(
                || {
                    let mut shard = shard_cell.borrow_mut();
                    shard.enqueue(n);
                    shard.claim(n)
                },
                |leases| shard_cell.borrow_mut().finish(&leases),
                BatchSize::PerIteration,
            )
        });
        group.bench_function(BenchmarkId::new("raw_update", n), |b| b.iter(|| raw.update(black_box(n), 1)));
    }
    group.finish();
}

/// Criterion's median estimate of one benchmark, in nanoseconds.
fn median_ns(root: &Path, op: &str, n: usize) -> Option<f64> {
    let path = root.join("store").join(op).join(n.to_string()).join("new").join("estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["median"]["point_estimate"].as_f64()
}

fn criterion_dir() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target"));
    target.join("criterion")
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut criterion = Criterion::default().configure_from_args();
    bench(&mut criterion, dir.path());
    criterion.final_summary();
    let root = criterion_dir();
    println!(
        "\nper operation, median, and as a ratio of its baseline of the same batch size (raw single-row SQL, or plain enqueue):"
    );
    for n in BATCHES {
        for (op, baseline) in [
            ("enqueue", "raw_insert"),
            ("claim", "raw_update"),
            ("finish", "raw_update"),
            ("enqueue_hooked", "enqueue"),
            ("enqueue_watched", "enqueue"),
        ] {
            if let (Some(ours), Some(raw)) = (median_ns(&root, op, n), median_ns(&root, baseline, n)) {
                println!(
                    "  {op:>15} ×{n:<3}  {:>8.1} µs/op   {baseline} {:>7.1} µs/op   ratio {:.2}",
                    ours / n as f64 / 1_000.0,
                    raw / n as f64 / 1_000.0,
                    ours / raw
                );
            }
        }
    }
}
