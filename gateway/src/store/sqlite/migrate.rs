//! Schema migrations: numbered SQL files from `migrations/`, embedded in the binary, applied in one transaction.

use rusqlite::{Connection, TransactionBehavior};

use crate::store::StoreError;

/// One numbered schema step.
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// The control database's schema (engines, users).
pub const CONTROL: &[Migration] = &[
    Migration { version: 1, name: "0001_init", sql: include_str!("../../../../migrations/control/0001_init.sql") },
    Migration {
        version: 2,
        name: "0002_security",
        sql: include_str!("../../../../migrations/control/0002_security.sql"),
    },
];

/// Every shard's schema (jobs).
pub const SHARD: &[Migration] = &[
    Migration { version: 1, name: "0001_init", sql: include_str!("../../../../migrations/shard/0001_init.sql") },
    Migration {
        version: 2,
        name: "0002_allowed_users",
        sql: include_str!("../../../../migrations/shard/0002_allowed_users.sql"),
    },
    Migration {
        version: 3,
        name: "0003_queue_stats",
        sql: include_str!("../../../../migrations/shard/0003_queue_stats.sql"),
    },
    Migration {
        version: 4,
        name: "0004_kind_breakers",
        sql: include_str!("../../../../migrations/shard/0004_kind_breakers.sql"),
    },
    Migration {
        version: 5,
        name: "0005_engine_state",
        sql: include_str!("../../../../migrations/shard/0005_engine_state.sql"),
    },
    Migration {
        version: 6,
        name: "0006_cancel_progress",
        sql: include_str!("../../../../migrations/shard/0006_cancel_progress.sql"),
    },
    Migration {
        version: 7,
        name: "0007_fair_share",
        sql: include_str!("../../../../migrations/shard/0007_fair_share.sql"),
    },
    Migration {
        version: 8,
        name: "0008_retention",
        sql: include_str!("../../../../migrations/shard/0008_retention.sql"),
    },
];

/// The newest version in a migration set.
pub fn latest(set: &[Migration]) -> u32 {
    set.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Brings the database up to the newest schema; refuses a database written by a newer build.
///
/// The whole upgrade is one `BEGIN IMMEDIATE` transaction, so two processes starting at once apply it once and
/// a crash half-way leaves the previous version intact. Returns the version now in place.
pub fn apply(conn: &mut Connection, set: &[Migration], path_for_errors: &str) -> Result<u32, StoreError> {
    let supported = latest(set);
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found: u32 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if found > supported {
        return Err(StoreError::NewerSchema { path: path_for_errors.to_string(), found, supported });
    }
    if found < supported {
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL) STRICT;",
        )?;
        let now = flowork_common::clock::system_now_ms();
        for migration in set.iter().filter(|m| m.version > found) {
            tx.execute_batch(migration.sql)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
                (migration.version, migration.name, now),
            )?;
        }
        tx.pragma_update(None, "user_version", supported)?;
    }
    tx.commit()?;
    Ok(supported)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::connection::open_writer;

    #[test]
    fn applies_to_a_fresh_database_and_is_idempotent_on_an_existing_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shard.sqlite3");
        let mut conn = open_writer(&path).unwrap();
        assert_eq!(apply(&mut conn, SHARD, "shard").unwrap(), latest(SHARD));
        conn.execute(
            "INSERT INTO jobs (id, user_id, kind, payload, run_at, max_attempts, timeout_ms, status, enqueued_at,
                               idempotency_key, request_fingerprint)
             VALUES ('j1', 'u', 'echo', '{}', 0, 1, 1, 'queued', 0, 'k', 'f')",
            [],
        )
        .unwrap();
        drop(conn);

        let mut reopened = open_writer(&path).unwrap();
        assert_eq!(apply(&mut reopened, SHARD, "shard").unwrap(), latest(SHARD));
        let jobs: i64 = reopened.query_row("SELECT count(*) FROM jobs", [], |r| r.get(0)).unwrap();
        assert_eq!(jobs, 1, "re-applying must keep the data");
        let recorded: i64 = reopened.query_row("SELECT count(*) FROM schema_migrations", [], |r| r.get(0)).unwrap();
        assert_eq!(recorded, SHARD.len() as i64);
    }

    #[test]
    fn every_migration_file_is_embedded_in_order() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
        for (folder, set) in [("control", CONTROL), ("shard", SHARD)] {
            let mut files: Vec<String> = std::fs::read_dir(root.join(folder))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().trim_end_matches(".sql").to_string())
                .collect();
            files.sort();
            let embedded: Vec<String> = set.iter().map(|m| m.name.to_string()).collect();
            assert_eq!(files, embedded, "migrations/{folder} and the embedded list differ");
            for (i, m) in set.iter().enumerate() {
                assert_eq!(m.version as usize, i + 1);
                assert!(m.name.starts_with(&format!("{:04}_", m.version)));
            }
        }
    }

    #[test]
    fn refuses_a_database_from_a_newer_build() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sqlite3");
        let mut conn = open_writer(&path).unwrap();
        apply(&mut conn, CONTROL, "control").unwrap();
        conn.pragma_update(None, "user_version", latest(CONTROL) + 1).unwrap();
        let err = apply(&mut conn, CONTROL, "control").unwrap_err();
        assert!(matches!(err, StoreError::NewerSchema { found, .. } if found == latest(CONTROL) + 1));
        assert!(err.to_string().contains("newer"), "{err}");
    }

    #[test]
    fn a_failing_migration_leaves_the_previous_version() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_writer(&dir.path().join("x.sqlite3")).unwrap();
        let broken = [
            Migration { version: 1, name: "ok", sql: "CREATE TABLE a (x INTEGER);" },
            Migration { version: 2, name: "broken", sql: "CREATE TABLE b (x INTEGER); SELEC nonsense;" },
        ];
        assert!(apply(&mut conn, &broken, "x").is_err());
        let version: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version, 0);
        let tables: i64 =
            conn.query_row("SELECT count(*) FROM sqlite_master WHERE name IN ('a', 'b')", [], |r| r.get(0)).unwrap();
        assert_eq!(tables, 0, "nothing of a failed upgrade may remain");
    }
}
