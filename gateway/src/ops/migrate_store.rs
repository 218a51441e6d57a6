//! `migrate-store`: moves a data directory's SQLite control database, shards and signing keys into the PostgreSQL
//! store of a fleet, then checks counts and checksums on both sides. Every row is inserted with
//! `ON CONFLICT DO NOTHING`, so a run that stopped half-way, or a second run, copies only what is missing and
//! changes nothing already there. Run it with the SQLite gateway drained and stopped (its data must not move).
//!
//! Rows are read as text from SQLite and cast by PostgreSQL to each column's type (`CAST($n AS BIGINT)`), so one
//! copier serves every table. Queue counters, fair-share runnable counts and key counts are not copied: the
//! PostgreSQL trigger recomputes them as the jobs go in.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use deadpool_postgres::Transaction;
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags};
use sha2::{Digest, Sha256};
use tokio_postgres::types::ToSql;

use crate::store::postgres::PgStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{ControlStore, RetryPolicy};

/// One table to copy: its name and its columns with their PostgreSQL types. A shard's table goes into the
/// PostgreSQL table of the same name with the engine's id in front (`engine_id`).
struct Table {
    name: &'static str,
    columns: &'static [(&'static str, &'static str)],
}

const ENGINES: Table = Table {
    name: "engines",
    columns: &[
        ("id", "TEXT"),
        ("owner", "TEXT"),
        ("token_hash", "TEXT"),
        ("created_at", "BIGINT"),
        ("revoked_at", "BIGINT"),
        ("previous_token_hash", "TEXT"),
        ("previous_valid_until", "BIGINT"),
    ],
};

const CONTROL_TABLES: &[Table] = &[
    Table {
        name: "audit_log",
        columns: &[
            ("id", "BIGINT"),
            ("at", "BIGINT"),
            ("actor", "TEXT"),
            ("action", "TEXT"),
            ("target", "TEXT"),
            ("ip", "TEXT"),
            ("outcome", "TEXT"),
            ("detail", "TEXT"),
            ("prev_hash", "TEXT"),
            ("hash", "TEXT"),
            ("mac", "TEXT"),
        ],
    },
    Table {
        name: "audit_anchor",
        columns: &[("singleton", "INTEGER"), ("last_id", "BIGINT"), ("last_hash", "TEXT"), ("mac", "TEXT")],
    },
    Table {
        name: "auth_nonces",
        columns: &[("nonce", "TEXT"), ("created_at", "BIGINT"), ("expires_at", "BIGINT"), ("used_at", "BIGINT")],
    },
    Table {
        name: "refresh_tokens",
        columns: &[
            ("token_hash", "TEXT"),
            ("family_id", "TEXT"),
            ("user_id", "TEXT"),
            ("created_at", "BIGINT"),
            ("expires_at", "BIGINT"),
            ("rotated_at", "BIGINT"),
            ("revoked_at", "BIGINT"),
        ],
    },
    Table { name: "revoked_tokens", columns: &[("jti", "TEXT"), ("revoked_at", "BIGINT"), ("keep_until", "BIGINT")] },
    Table {
        name: "revoked_users",
        columns: &[("user_id", "TEXT"), ("revoked_through", "BIGINT"), ("keep_until", "BIGINT")],
    },
    Table {
        name: "api_keys",
        columns: &[
            ("id", "TEXT"),
            ("user_id", "TEXT"),
            ("name", "TEXT"),
            ("key_hash", "TEXT"),
            ("scopes", "TEXT"),
            ("created_at", "BIGINT"),
            ("expires_at", "BIGINT"),
        ],
    },
];

/// A shard's tables, in the order they must go in (the jobs' trigger reads the engine's state and shares).
const SHARD_TABLES: &[Table] = &[
    Table {
        name: "engine_state",
        columns: &[
            ("paused", "BOOLEAN"),
            ("changed_at", "BIGINT"),
            ("vtime", "DOUBLE PRECISION"),
            ("default_key_limit", "BIGINT"),
        ],
    },
    Table { name: "allowed_users", columns: &[("user_id", "TEXT"), ("is_owner", "BOOLEAN"), ("added_at", "BIGINT")] },
    Table { name: "user_share", columns: &[("user_id", "TEXT"), ("weight", "BIGINT"), ("pass", "DOUBLE PRECISION")] },
    Table { name: "concurrency_limits", columns: &[("concurrency_key", "TEXT"), ("max_running", "BIGINT")] },
    Table {
        name: "kind_breakers",
        columns: &[
            ("kind", "TEXT"),
            ("state", "TEXT"),
            ("failures", "BIGINT"),
            ("window_start", "BIGINT"),
            ("opened_at", "BIGINT"),
            ("last_error", "TEXT"),
            ("probe_job_id", "TEXT"),
        ],
    },
    Table {
        name: "user_breakers",
        columns: &[
            ("kind", "TEXT"),
            ("user_id", "TEXT"),
            ("state", "TEXT"),
            ("failures", "BIGINT"),
            ("window_start", "BIGINT"),
            ("opened_at", "BIGINT"),
            ("last_error", "TEXT"),
            ("probe_job_id", "TEXT"),
        ],
    },
    Table {
        name: "schedules",
        columns: &[
            ("id", "TEXT"),
            ("user_id", "TEXT"),
            ("kind", "TEXT"),
            ("payload", "TEXT"),
            ("cron", "TEXT"),
            ("timezone", "TEXT"),
            ("missed", "TEXT"),
            ("priority", "INTEGER"),
            ("max_attempts", "INTEGER"),
            ("timeout_ms", "BIGINT"),
            ("concurrency_key", "TEXT"),
            ("next_run_at", "BIGINT"),
            ("last_run_at", "BIGINT"),
            ("last_job_id", "TEXT"),
            ("last_error", "TEXT"),
            ("created_at", "BIGINT"),
        ],
    },
    JOBS,
];

const JOBS: Table = Table {
    name: "jobs",
    columns: &[
        ("id", "TEXT"),
        ("user_id", "TEXT"),
        ("kind", "TEXT"),
        ("payload", "TEXT"),
        ("priority", "INTEGER"),
        ("run_at", "BIGINT"),
        ("max_attempts", "INTEGER"),
        ("timeout_ms", "BIGINT"),
        ("attempts", "INTEGER"),
        ("status", "TEXT"),
        ("lease_owner", "TEXT"),
        ("lease_token", "TEXT"),
        ("lease_expires_at", "BIGINT"),
        ("enqueued_at", "BIGINT"),
        ("claimed_at", "BIGINT"),
        ("finished_at", "BIGINT"),
        ("result", "TEXT"),
        ("error", "TEXT"),
        ("idempotency_key", "TEXT"),
        ("request_fingerprint", "TEXT"),
        ("traceparent", "TEXT"),
        ("cancel_requested", "BOOLEAN"),
        ("progress", "TEXT"),
        ("concurrency_key", "TEXT"),
        ("hold", "SMALLINT"),
    ],
};

/// The columns of a job that never change once it is stored: what the checksum covers, so it holds on a second
/// run even after the fleet has run the jobs.
const JOB_IDENTITY: &str = "id, user_id, kind, payload, idempotency_key, request_fingerprint, enqueued_at";

/// Rows per INSERT statement.
const CHUNK: usize = 200;

type Row = Vec<Option<String>>;

/// What a migration did.
#[derive(Debug, Default)]
pub struct MigrationReport {
    pub engines: usize,
    /// Jobs in the SQLite shards, and how many of them this run inserted (the rest were there already).
    pub jobs: u64,
    pub jobs_inserted: u64,
    pub other_rows_inserted: u64,
    pub keys: usize,
    pub audit_rows: u64,
    pub elapsed_ms: u128,
}

fn text_of(value: Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::Integer(i) => Some(i.to_string()),
        // `{:?}` keeps every digit, so the pass of a share survives the trip.
        Value::Real(f) => Some(format!("{f:?}")),
        Value::Text(t) => Some(t),
        Value::Blob(b) => Some(hex::encode(b)),
    }
}

/// Every row of a SQLite table (the columns of `table`, in order).
fn sqlite_rows(conn: &Connection, table: &Table, order_by: Option<&str>) -> anyhow::Result<Vec<Row>> {
    let names: Vec<&str> = table.columns.iter().map(|(name, _)| *name).collect();
    let mut sql = format!("SELECT {} FROM {}", names.join(", "), table.name);
    if let Some(order) = order_by {
        sql.push_str(&format!(" ORDER BY {order}"));
    }
    let mut stmt = conn.prepare(&sql).with_context(|| format!("reading {}", table.name))?;
    let rows = stmt.query_map([], |row| (0..names.len()).map(|i| row.get::<_, Value>(i).map(text_of)).collect())?;
    Ok(rows.collect::<Result<Vec<Row>, _>>()?)
}

/// Inserts rows (those not there yet) into a PostgreSQL table; returns how many went in.
async fn insert_rows(tx: &Transaction<'_>, table: &Table, engine: Option<&str>, rows: &[Row]) -> anyhow::Result<u64> {
    let mut inserted = 0;
    let mut names: Vec<&str> = table.columns.iter().map(|(name, _)| *name).collect();
    if engine.is_some() {
        names.insert(0, "engine_id");
    }
    for chunk in rows.chunks(CHUNK) {
        let mut params: Vec<Option<&str>> = Vec::with_capacity(chunk.len() * names.len());
        let mut tuples = Vec::with_capacity(chunk.len());
        for row in chunk {
            let mut slots = Vec::with_capacity(names.len());
            if let Some(engine) = engine {
                params.push(Some(engine));
                slots.push(format!("CAST(${}::TEXT AS TEXT)", params.len()));
            }
            for (value, (_, pg_type)) in row.iter().zip(table.columns) {
                params.push(value.as_deref());
                slots.push(format!("CAST(${}::TEXT AS {pg_type})", params.len()));
            }
            tuples.push(format!("({})", slots.join(", ")));
        }
        let sql = format!(
            "INSERT INTO {} ({}) VALUES {} ON CONFLICT DO NOTHING",
            table.name,
            names.join(", "),
            tuples.join(", ")
        );
        let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        inserted += tx.execute(&sql, &params).await.with_context(|| format!("copying {}", table.name))?;
    }
    Ok(inserted)
}

/// A checksum over rows (each column as text, NULL marked), in the order given.
fn checksum(rows: &[Row]) -> String {
    let mut hash = Sha256::new();
    for row in rows {
        for value in row {
            match value {
                Some(text) => {
                    hash.update((text.len() as u64).to_le_bytes());
                    hash.update(text.as_bytes());
                }
                None => hash.update(u64::MAX.to_le_bytes()),
            }
        }
    }
    hex::encode(hash.finalize())
}

/// The identity columns of an engine's jobs in PostgreSQL, as text, by id.
async fn postgres_job_identities(tx: &Transaction<'_>, engine: &str) -> anyhow::Result<Vec<Row>> {
    let columns: Vec<String> = JOB_IDENTITY.split(", ").map(|c| format!("{c}::TEXT")).collect();
    let sql = format!("SELECT {} FROM jobs WHERE engine_id = $1 ORDER BY id COLLATE \"C\"", columns.join(", "));
    let rows = tx.query(&sql, &[&engine]).await?;
    Ok(rows.iter().map(|r| (0..r.len()).map(|i| r.get::<_, Option<String>>(i)).collect()).collect())
}

/// The identity columns of a shard's jobs, as text, by id (SQLite compares text bytewise, as `COLLATE "C"`).
fn sqlite_job_identities(conn: &Connection) -> anyhow::Result<Vec<Row>> {
    let columns: &'static [(&'static str, &'static str)] = &[
        ("id", "TEXT"),
        ("user_id", "TEXT"),
        ("kind", "TEXT"),
        ("payload", "TEXT"),
        ("idempotency_key", "TEXT"),
        ("request_fingerprint", "TEXT"),
        ("enqueued_at", "BIGINT"),
    ];
    sqlite_rows(conn, &Table { name: "jobs", columns }, Some("id"))
}

fn open_read_only(path: &Path) -> anyhow::Result<Connection> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .with_context(|| format!("opening {}", path.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

/// Copies `data_dir` into the PostgreSQL store at `to`, and checks the copy.
pub async fn migrate(data_dir: &Path, to: &str) -> anyhow::Result<MigrationReport> {
    let started = Instant::now();
    if !data_dir.join("control.sqlite3").exists() {
        bail!("{} holds no Flowork data (no control.sqlite3)", data_dir.display());
    }
    let clock: Arc<dyn flowork_common::clock::Clock> = Arc::new(flowork_common::clock::SystemClock);
    // Opening brings every SQLite schema up to this build's, so the columns copied are the ones named here.
    let source = SqliteStore::open(data_dir, clock.clone(), RetryPolicy::default()).await?;
    source.open_all_shards().await?;
    let quarantined = crate::store::JobStore::quarantined(&source);
    if !quarantined.is_empty() {
        bail!("damaged shards were set aside ({quarantined:?}): restore them from a backup before moving");
    }
    // The log moves with its signatures, so it must verify before it goes.
    let audit = source.verify_audit().await?;
    if !audit.is_intact() {
        bail!("the audit log of {} does not verify; nothing was moved:\n{audit}", data_dir.display());
    }
    let audit_key = crate::store::sqlite::audit_files::load_or_create_key(&data_dir.join("keys"))?;
    let target = PgStore::open(to, clock, RetryPolicy::default()).await?;
    let mut report = MigrationReport::default();

    let control = open_read_only(&data_dir.join("control.sqlite3"))?;
    let engines = sqlite_rows(&control, &ENGINES, Some("id"))?;
    let control_rows: Vec<(&Table, Vec<Row>)> =
        CONTROL_TABLES.iter().map(|t| Ok((t, sqlite_rows(&control, t, None)?))).collect::<anyhow::Result<_>>()?;
    drop(control);

    let mut client = target.raw_client().await?;
    let tx = client.transaction().await?;
    report.other_rows_inserted += insert_rows(&tx, &ENGINES, None, &engines).await?;
    for (table, rows) in &control_rows {
        report.other_rows_inserted += insert_rows(&tx, table, None, rows).await?;
        if table.name == "audit_log" {
            report.audit_rows = rows.len() as u64;
        }
    }
    tx.commit().await?;

    target.adopt_audit_key(&audit_key).await?;

    for key in crate::auth::jwt::key_files(data_dir)? {
        target.insert_signing_key(&key.0, &key.1).await?;
        report.keys += 1;
    }

    for engine in engines.iter().filter_map(|row| row.first().cloned().flatten()) {
        let shard = open_read_only(&crate::store::sqlite::shard::shard_path(data_dir, &engine))?;
        let tables: Vec<(&Table, Vec<Row>)> =
            SHARD_TABLES.iter().map(|t| Ok((t, sqlite_rows(&shard, t, None)?))).collect::<anyhow::Result<_>>()?;
        let identities = sqlite_job_identities(&shard)?;
        drop(shard);
        let tx = client.transaction().await?;
        tx.execute("INSERT INTO queue_stats (engine_id) VALUES ($1) ON CONFLICT DO NOTHING", &[&engine]).await?;
        for (table, rows) in &tables {
            let inserted = insert_rows(&tx, table, Some(&engine), rows).await?;
            if table.name == JOBS.name {
                report.jobs += rows.len() as u64;
                report.jobs_inserted += inserted;
            } else {
                report.other_rows_inserted += inserted;
            }
        }
        // The check: the same jobs, with the same identity, on both sides.
        let copied = postgres_job_identities(&tx, &engine).await?;
        if copied.len() != identities.len() || checksum(&copied) != checksum(&identities) {
            bail!(
                "engine {engine:?}: PostgreSQL holds {} jobs (checksum {}) where its shard holds {} (checksum {}); \
                 nothing of this engine was committed",
                copied.len(),
                checksum(&copied),
                identities.len(),
                checksum(&identities)
            );
        }
        tx.commit().await?;
        report.engines += 1;
    }
    let audit = target.verify_audit().await?;
    if !audit.is_intact() {
        bail!("the audit log does not verify in PostgreSQL after the copy:\n{audit}");
    }
    report.elapsed_ms = started.elapsed().as_millis();
    Ok(report)
}
