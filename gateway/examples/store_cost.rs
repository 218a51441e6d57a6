//! A fixed amount of shard write-path work — enqueue, then claim, then finish, in transactions of 256 — for
//! repeatable instruction counts under valgrind's callgrind (`scripts/store-cost.sh`), where timings on a noisy
//! machine cannot tell a 10 % change.
//!
//! `store_cost PHASE BATCHES`: PHASE is `setup` (open and migrate only), `enqueue`, `claim` (enqueue + claim) or
//! `finish` (all three); the differences between phases are each operation's cost.

use flowork_gateway::admission::AdmissionLimits;
use flowork_gateway::store::breakers::HeldBack;
use flowork_gateway::store::core::stats::Tally;
use flowork_gateway::store::sqlite::{connection, fair, migrate, queries, stats};
use flowork_gateway::store::{EnqueueOutcome, NewJob};
use rusqlite::TransactionBehavior;

const BATCH: usize = 256;

#[path = "../benches/workload/mod.rs"]
mod workload;

use workload::{NOW, sample_job};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let phase = args.next().unwrap_or_else(|| "finish".into());
    let batches: usize = args.next().map(|b| b.parse()).transpose()?.unwrap_or(20);
    let rank = match phase.as_str() {
        "setup" => 0,
        "enqueue" => 1,
        "claim" => 2,
        "finish" => 3,
        other => anyhow::bail!("unknown phase {other:?}: setup, enqueue, claim or finish"),
    };
    let dir = tempfile::tempdir()?;
    let mut conn = connection::open_writer(&dir.path().join("shard.sqlite3"))?;
    migrate::apply(&mut conn, migrate::SHARD, "cost")?;
    queries::allow_user(&conn, "cost-user", true, NOW)?;
    // The jobs are made before any phase, so every phase pays the same for them.
    let jobs: Vec<NewJob> = (0..batches * BATCH).map(|n| sample_job("cost", "cost-user", n as u64)).collect();
    if rank >= 1 {
        for chunk in jobs.chunks(BATCH) {
            // As the writer takes a group commit's enqueues: in one statement.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let chunk: Vec<&NewJob> = chunk.iter().collect();
            for outcome in queries::enqueue_many(&tx, &chunk, NOW, AdmissionLimits::default())? {
                anyhow::ensure!(matches!(outcome, Ok(EnqueueOutcome::Created(_))), "not created");
            }
            tx.commit()?;
        }
    }
    let mut leases = Vec::new();
    if rank >= 2 {
        for _ in 0..batches {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let by = fair::ClaimBy { engine: "cost", worker: "cost", max: BATCH as u32, lease_ms: 60_000, now: NOW };
            let claimed = fair::claim(&tx, &by, &HeldBack::default())?;
            tx.commit()?;
            anyhow::ensure!(claimed.leases.len() == BATCH, "claimed {}", claimed.leases.len());
            leases.push(claimed.leases);
        }
    }
    if rank >= 3 {
        // As an engine's batched report arrives: the successes in one statement.
        for batch in &leases {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let items: Vec<(&str, &str, Option<&str>)> =
                batch.iter().map(|l| (l.job.id.as_str(), l.lease_token.as_str(), Some(r#"{"ok":true}"#))).collect();
            let done = {
                // As the writer does: the stats the batch adds, written once.
                let mut tally = Tally::default();
                let done = queries::finish_succeeded_many(&tx, &items, NOW, &mut tally)?;
                stats::add(&tx, &tally)?;
                done
            };
            tx.commit()?;
            anyhow::ensure!(done.len() == BATCH, "finished {}", done.len());
        }
    }
    Ok(())
}
