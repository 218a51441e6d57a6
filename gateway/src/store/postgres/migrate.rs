//! Schema migrations of the PostgreSQL store (`migrations/postgres/`), applied at start under an advisory lock so
//! gateways started together apply each step once; the same compatibility window as the SQLite store.

use deadpool_postgres::Client;

use crate::store::StoreError;
use crate::store::core::migration::{BUILD, Compat, Migration, latest};

/// The PostgreSQL schema.
pub const POSTGRES: &[Migration] = &[
    Migration { version: 1, name: "0001_init", sql: include_str!("../../../../migrations/postgres/0001_init.sql") },
    Migration {
        version: 2,
        name: "0002_user_tokens",
        sql: include_str!("../../../../migrations/postgres/0002_user_tokens.sql"),
    },
    Migration {
        version: 3,
        name: "0003_user_breakers",
        sql: include_str!("../../../../migrations/postgres/0003_user_breakers.sql"),
    },
    Migration {
        version: 4,
        name: "0004_audit_signatures",
        sql: include_str!("../../../../migrations/postgres/0004_audit_signatures.sql"),
    },
    Migration {
        version: 5,
        name: "0005_attempt_log",
        sql: include_str!("../../../../migrations/postgres/0005_attempt_log.sql"),
    },
    Migration {
        version: 6,
        name: "0006_job_stats",
        sql: include_str!("../../../../migrations/postgres/0006_job_stats.sql"),
    },
];

/// The advisory lock every gateway takes while it migrates ("flowork" in ASCII, as a number).
const MIGRATION_LOCK: i64 = 0x0066_6c6f_776f_726b;

/// Brings the database up to this build's schema; returns the version now in place. A database with steps from
/// a newer build is served when all of them are additive, and refused otherwise.
pub async fn apply(client: &mut Client, url_for_errors: &str) -> Result<u32, StoreError> {
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await?;
    let applied = apply_locked(client, url_for_errors).await;
    // Unlocked whatever happened; a lost connection drops the lock with it.
    let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await;
    let version = applied?;
    unlocked?;
    Ok(version)
}

async fn apply_locked(client: &mut Client, url: &str) -> Result<u32, StoreError> {
    let exists: bool = client.query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[]).await?.get(0);
    if !exists {
        client
            .batch_execute(
                "CREATE TABLE schema_migrations (
                     version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL,
                     compat TEXT NOT NULL, build TEXT NOT NULL)",
            )
            .await?;
    }
    let supported = latest(POSTGRES);
    let found: i32 = client.query_one("SELECT coalesce(max(version), 0) FROM schema_migrations", &[]).await?.get(0);
    let found = found.max(0) as u32;
    if found > supported {
        check_newer(client, url, found, supported).await?;
        return Ok(found);
    }
    let tx = client.transaction().await?;
    let now = flowork_common::clock::system_now_ms();
    for migration in POSTGRES.iter().filter(|m| m.version > found) {
        tx.batch_execute(migration.sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at, compat, build) VALUES ($1, $2, $3, $4, $5)",
            &[&(migration.version as i32), &migration.name, &now, &migration.compat().as_str(), &BUILD],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(supported)
}

/// A schema from a newer build: fine if every step this build does not know is additive.
async fn check_newer(client: &Client, url: &str, found: u32, supported: u32) -> Result<(), StoreError> {
    let rows = client
        .query(
            "SELECT version, name, compat, build FROM schema_migrations WHERE version > $1 ORDER BY version DESC",
            &[&(supported as i32)],
        )
        .await?;
    let refuse = |oldest: String| StoreError::NewerSchema { path: url.to_string(), found, supported, oldest };
    if rows.len() as u32 != found - supported {
        return Err(refuse(format!("a build of schema version {found}")));
    }
    for row in &rows {
        let compat: String = row.get(2);
        if compat != Compat::Additive.as_str() {
            let (version, name, build): (i32, String, String) = (row.get(0), row.get(1), row.get(3));
            return Err(refuse(format!("{build} (migration {version} {name} is breaking)")));
        }
    }
    tracing::warn!(found, supported, "the database has additive schema steps from a newer build; running on it");
    Ok(())
}
