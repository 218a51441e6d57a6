//! The cost of one fair claim as the queue grows: shards holding 10,000 and 1,000,000 queued jobs spread over
//! 1 and 1,000 users, beside a plain FIFO claim (one `UPDATE ... LIMIT 1` over a global index) on the same shard.
//!
//! Each iteration claims one job inside a transaction and rolls it back, so the queue keeps its size. Also the
//! queue position of the newest job (the deepest in its user's backlog), as `GET /jobs/{id}` computes it, and of
//! a `GET /jobs` page of the 100 newest.
//! Run: `cargo bench -p flowork-gateway --bench claim` (`FLOWORK_BENCH_SIZES=10000` for a quick run).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use flowork_common::wire::JobStatus;
use flowork_gateway::store::JobFilter;
use flowork_gateway::store::breakers::HeldBack;
use flowork_gateway::store::sqlite::{connection, fair, migrate, operate, position};
use rusqlite::{Connection, params};

const NOW: i64 = 1_800_000_000_000;

/// A shard file with `jobs` queued jobs spread round-robin over `users` users.
fn shard(dir: &std::path::Path, jobs: usize, users: usize) -> Connection {
    let path = dir.join(format!("bench-{jobs}-{users}.sqlite3"));
    let mut conn = connection::open_writer(&path).expect("open shard");
    migrate::apply(&mut conn, migrate::SHARD, "bench").expect("migrate");
    let tx = conn.transaction().expect("begin");
    {
        let mut insert = tx
            .prepare(
                "INSERT INTO jobs (id, user_id, kind, payload, priority, run_at, max_attempts, timeout_ms, status,
                                   enqueued_at, idempotency_key, request_fingerprint)
                 VALUES (?1, ?2, 'echo', '{}', 0, ?3, 3, 30000, 'queued', ?3, ?1, 'fp')",
            )
            .expect("prepare");
        for i in 0..jobs {
            insert.execute(params![format!("{i:012}"), format!("user-{}", i % users), NOW]).expect("insert");
        }
    }
    // The global order a FIFO queue would use, for the baseline only.
    tx.execute_batch("CREATE INDEX fifo ON jobs (priority DESC, run_at, id) WHERE status = 'queued' AND hold = 0")
        .expect("fifo index");
    tx.commit().expect("commit");
    conn
}

fn fair_claim(conn: &mut Connection) {
    let tx = conn.transaction().expect("begin");
    let by = fair::ClaimBy { engine: "bench", worker: "bench", max: 1, lease_ms: 30_000, now: NOW };
    let claimed = fair::claim(&tx, &by, &HeldBack::default()).expect("claim");
    assert_eq!(claimed.leases.len(), 1);
    black_box(claimed);
    tx.rollback().expect("rollback");
}

fn fifo_claim(conn: &mut Connection) {
    let tx = conn.transaction().expect("begin");
    let id: String = tx
        .prepare_cached(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_owner = 'bench',
                    lease_token = lower(hex(randomblob(16))), lease_expires_at = ?1, claimed_at = ?2
             WHERE id IN (SELECT id FROM jobs WHERE status = 'queued' AND hold = 0
                          ORDER BY priority DESC, run_at, id LIMIT 1)
             RETURNING id",
        )
        .expect("prepare")
        .query_row(params![NOW + 30_000, NOW], |r| r.get(0))
        .expect("claim");
    black_box(id);
    tx.rollback().expect("rollback");
}

fn sizes() -> Vec<usize> {
    std::env::var("FLOWORK_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10_000, 1_000_000])
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut group = c.benchmark_group("claim_one");
    for jobs in sizes() {
        for users in [1, 1_000] {
            let mut conn = shard(dir.path(), jobs, users);
            let label = format!("{jobs}_jobs/{users}_users");
            group.bench_function(BenchmarkId::new("fair", &label), |b| b.iter(|| fair_claim(&mut conn)));
            group.bench_function(BenchmarkId::new("fifo_baseline", &label), |b| b.iter(|| fifo_claim(&mut conn)));
            let newest = format!("{:012}", jobs - 1);
            group.bench_function(BenchmarkId::new("position_of_newest", &label), |b| {
                b.iter(|| black_box(position::standing(&conn, &newest).expect("standing")))
            });
            // `GET /jobs?status=queued` of the user of the newest job: a page of 100, newest first.
            let user = format!("user-{}", (jobs - 1) % users);
            let queued = JobFilter { statuses: vec![JobStatus::Queued], ..JobFilter::default() };
            let mut page = operate::list(&conn, "bench", &user, &queued, None, 100).expect("list");
            group.bench_function(BenchmarkId::new("positions_of_a_page_of_100", &label), |b| {
                b.iter(|| position::place_in_queue(&conn, black_box(&mut page)).expect("place"))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
