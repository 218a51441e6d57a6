//! Schema migrations: numbered SQL files from `migrations/`, embedded in the binary, applied in one transaction.
//!
//! Each file declares on a `-- compat:` line whether builds that predate it can still run on the schema it leaves:
//! `additive` (new tables, new columns with defaults, new indexes: older builds ignore them) or `breaking`. The
//! database records that, and the build that applied it, beside each step; so a build started on a database from a
//! newer build (a rollback, or a canary beside an older one) runs on it when every step it does not know is
//! additive, and otherwise refuses, naming the oldest build that can run on it. Destructive changes therefore come
//! in two releases: expand (additive) first, contract (breaking) a release later.

use rusqlite::{Connection, TransactionBehavior};

use crate::store::StoreError;
pub use crate::store::core::migration::{BUILD, Compat, Migration, latest};

/// The control database's schema (engines, users).
pub const CONTROL: &[Migration] = &[
    Migration { version: 1, name: "0001_init", sql: include_str!("../../../../migrations/control/0001_init.sql") },
    Migration {
        version: 2,
        name: "0002_security",
        sql: include_str!("../../../../migrations/control/0002_security.sql"),
    },
    Migration {
        version: 3,
        name: "0003_user_tokens",
        sql: include_str!("../../../../migrations/control/0003_user_tokens.sql"),
    },
    Migration {
        version: 4,
        name: "0004_audit_signatures",
        sql: include_str!("../../../../migrations/control/0004_audit_signatures.sql"),
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
    Migration {
        version: 9,
        name: "0009_lean_job_checks",
        sql: include_str!("../../../../migrations/shard/0009_lean_job_checks.sql"),
    },
    Migration {
        version: 10,
        name: "0010_counted_inserts",
        sql: include_str!("../../../../migrations/shard/0010_counted_inserts.sql"),
    },
    Migration {
        version: 11,
        name: "0011_counted_moves",
        sql: include_str!("../../../../migrations/shard/0011_counted_moves.sql"),
    },
    Migration {
        version: 12,
        name: "0012_user_breakers",
        sql: include_str!("../../../../migrations/shard/0012_user_breakers.sql"),
    },
    Migration {
        version: 13,
        name: "0013_attempt_log",
        sql: include_str!("../../../../migrations/shard/0013_attempt_log.sql"),
    },
    Migration {
        version: 14,
        name: "0014_job_stats",
        sql: include_str!("../../../../migrations/shard/0014_job_stats.sql"),
    },
];

/// Brings the database up to the newest schema; refuses a database written by a newer build.
///
/// The whole upgrade is one `BEGIN IMMEDIATE` transaction, so two processes starting at once apply it once and
/// a crash half-way leaves the previous version intact. Returns the version now in place.
pub fn apply(conn: &mut Connection, set: &[Migration], path_for_errors: &str) -> Result<u32, StoreError> {
    let supported = latest(set);
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found: u32 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if found > supported {
        check_newer(&tx, path_for_errors, found, supported)?;
        tx.commit()?;
        return Ok(found);
    }
    if found < supported {
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL) STRICT;",
        )?;
        add_compat_columns(&tx)?;
        let now = flowork_common::clock::system_now_ms();
        for migration in set.iter().filter(|m| m.version > found) {
            tx.execute_batch(migration.sql)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_at, compat, build) VALUES (?1, ?2, ?3, ?4, ?5)",
                (migration.version, migration.name, now, migration.compat().as_str(), BUILD),
            )?;
        }
        tx.pragma_update(None, "user_version", supported)?;
    }
    tx.commit()?;
    Ok(supported)
}

/// Records of databases made before compatibility was tracked get the columns (their steps count as breaking).
fn add_compat_columns(conn: &Connection) -> Result<(), StoreError> {
    let has = |column: &str| has_record_column(conn, column);
    if !has("compat")? {
        conn.execute_batch("ALTER TABLE schema_migrations ADD COLUMN compat TEXT NOT NULL DEFAULT 'breaking'")?;
    }
    if !has("build")? {
        conn.execute_batch("ALTER TABLE schema_migrations ADD COLUMN build TEXT NOT NULL DEFAULT ''")?;
    }
    Ok(())
}

/// Whether `schema_migrations` has `column` (older databases lack the compatibility columns).
fn has_record_column(conn: &Connection, column: &str) -> Result<bool, StoreError> {
    let count: i64 =
        conn.query_row("SELECT count(*) FROM pragma_table_info('schema_migrations') WHERE name = ?1", [column], |r| {
            r.get(0)
        })?;
    Ok(count > 0)
}

/// A database from a newer build: fine if every step this build does not know is additive.
fn check_newer(conn: &Connection, path: &str, found: u32, supported: u32) -> Result<(), StoreError> {
    let refuse = |oldest: String| StoreError::NewerSchema { path: path.to_string(), found, supported, oldest };
    if !has_record_column(conn, "compat")? {
        return Err(refuse(format!("a build of schema version {found}")));
    }
    let mut unknown = conn.prepare(
        "SELECT version, name, compat, build FROM schema_migrations WHERE version > ?1 ORDER BY version DESC",
    )?;
    let steps = unknown
        .query_map([supported], |r| {
            Ok((r.get::<_, u32>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    // Every version up to `found` must be on record, or nobody can tell what changed.
    if steps.len() as u32 != found - supported {
        return Err(refuse(format!("a build of schema version {found}")));
    }
    if let Some((version, name, _, build)) = steps.iter().find(|(_, _, compat, _)| compat != "additive") {
        let build = if build.is_empty() { "unknown".to_string() } else { build.clone() };
        return Err(refuse(format!("{build} (migration {version} {name} is breaking)")));
    }
    tracing::warn!(
        path,
        found,
        supported,
        "this database has additive schema steps from a newer build; running on it (a rollback or a canary)"
    );
    Ok(())
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

    /// What a newer build leaves behind: one more step, recorded with its compatibility and build.
    fn newer_step(conn: &Connection, version: u32, compat: &str, build: &str) {
        conn.execute_batch(&format!("CREATE TABLE newer_{version} (x INTEGER)")).unwrap();
        conn.execute(
            "INSERT INTO schema_migrations (version, name, applied_at, compat, build) VALUES (?1, ?2, 0, ?3, ?4)",
            (version, format!("{version:04}_newer"), compat, build),
        )
        .unwrap();
        conn.pragma_update(None, "user_version", version).unwrap();
    }

    #[test]
    fn runs_on_additive_steps_of_a_newer_build_and_refuses_breaking_ones_naming_the_oldest_build() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_writer(&dir.path().join("shard.sqlite3")).unwrap();
        apply(&mut conn, SHARD, "shard").unwrap();
        let next = latest(SHARD) + 1;
        newer_step(&conn, next, "additive", "0.2.0");
        assert_eq!(apply(&mut conn, SHARD, "shard").unwrap(), next, "additive: this build runs on it");
        let version: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version, next, "the newer version stays recorded");
        newer_step(&conn, next + 1, "breaking", "0.3.0");
        let err = apply(&mut conn, SHARD, "shard").unwrap_err().to_string();
        assert!(err.contains("0.3.0"), "{err}");
        assert!(err.contains("oldest build that can run on it"), "{err}");
    }

    #[test]
    fn every_migration_declares_its_compatibility() {
        for m in CONTROL.iter().chain(SHARD) {
            let declared =
                m.sql.lines().any(|l| l.starts_with("-- compat: additive") || l.starts_with("-- compat: breaking"));
            assert!(declared, "{} has no `-- compat: additive|breaking` line", m.name);
        }
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

    /// The rebuild of the jobs table (0009) keeps every row with its rowid, its indexes and the counters'
    /// triggers, and gives a final job without `finished_at` one.
    #[test]
    fn rebuilding_the_jobs_table_keeps_rows_rowids_indexes_and_triggers() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_writer(&dir.path().join("shard.sqlite3")).unwrap();
        apply(&mut conn, &SHARD[..8], "shard").unwrap();
        let schema = |conn: &Connection, kind: &str| -> Vec<String> {
            let mut stmt = conn
                .prepare("SELECT name FROM sqlite_master WHERE tbl_name = 'jobs' AND type = ?1 ORDER BY name")
                .unwrap();
            stmt.query_map([kind], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
        };
        let (indexes, triggers) = (schema(&conn, "index"), schema(&conn, "trigger"));
        conn.execute_batch(
            "INSERT INTO jobs (rowid, id, user_id, kind, payload, run_at, max_attempts, timeout_ms, status,
                               enqueued_at, claimed_at, finished_at, idempotency_key, request_fingerprint)
             VALUES (7, 'q', 'u', 'echo', '{}', 0, 1, 1, 'queued', 10, NULL, NULL, 'k1', 'f'),
                    (9, 's', 'u', 'echo', '{}', 0, 1, 1, 'succeeded', 10, 20, 30, 'k2', 'f'),
                    (12, 'd', 'u', 'echo', '{}', 0, 1, 1, 'dead', 10, 25, NULL, 'k3', 'f');",
        )
        .unwrap();
        apply(&mut conn, SHARD, "shard").unwrap();
        assert_eq!((schema(&conn, "index"), schema(&conn, "trigger")), (indexes, triggers));
        let rows: Vec<(i64, String, Option<i64>)> = conn
            .prepare("SELECT rowid, id, finished_at FROM jobs ORDER BY rowid")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rows, vec![(7, "q".into(), None), (9, "s".into(), Some(30)), (12, "d".into(), Some(25))]);
        // The triggers still keep the counters.
        conn.execute_batch(
            "INSERT INTO jobs (id, user_id, kind, payload, run_at, max_attempts, timeout_ms, status, enqueued_at,
                               idempotency_key, request_fingerprint)
             VALUES ('q2', 'u', 'echo', '{}', 0, 1, 1, 'queued', 10, 'k4', 'f')",
        )
        .unwrap();
        let queued: i64 = conn.query_row("SELECT queued FROM queue_stats", [], |r| r.get(0)).unwrap();
        let runnable: i64 =
            conn.query_row("SELECT runnable FROM user_share WHERE user_id = 'u'", [], |r| r.get(0)).unwrap();
        assert_eq!((queued, runnable), (2, 2));
        // A final job must say when it finished.
        let unfinished = conn.execute("UPDATE jobs SET status = 'dead', error = 'x' WHERE id = 'q2'", []);
        assert!(unfinished.is_err(), "a final job without finished_at was accepted");
    }
}
