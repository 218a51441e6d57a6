//! What the store tests share: the store under test (SQLite by default, PostgreSQL with
//! `FLOWORK_TEST_STORE=postgres` under `with-services`, so one suite holds both drivers to the same promises), and a
//! job to enqueue on engine `e1`, which each test adjusts with `..`.

#![allow(dead_code)] // each test binary uses its own part of this module

use std::process::Command;
use std::sync::Arc;

use flowork_common::clock::Clock;
use flowork_gateway::store::postgres::PgStore;
use flowork_gateway::store::sqlite::SqliteStore;
use flowork_gateway::store::{ControlStore, JobStore, NewJob, RetryPolicy};

/// A store with both interfaces, whichever driver is under test.
pub trait AnyStore: JobStore + ControlStore {}
impl<T: JobStore + ControlStore> AnyStore for T {}

/// Whether this run tests the PostgreSQL driver.
pub fn on_postgres() -> bool {
    std::env::var("FLOWORK_TEST_STORE").is_ok_and(|s| s == "postgres")
}

/// Where one test's store lives: a temporary data directory, and on PostgreSQL a database of its own, so that
/// reopening the store finds the same jobs.
pub struct StorePlace {
    pub dir: tempfile::TempDir,
    /// The database URL, on PostgreSQL.
    pub url: Option<String>,
    /// A connection for reading the database straight, opened at the first read.
    reader: tokio::sync::OnceCell<tokio_postgres::Client>,
}

impl StorePlace {
    pub fn new() -> Self {
        let url = on_postgres().then(new_postgres_database);
        Self { dir: tempfile::tempdir().expect("a temporary directory"), url, reader: Default::default() }
    }

    /// Opens (or reopens) the store of this place.
    pub async fn open(&self, clock: Arc<dyn Clock>, retry: RetryPolicy) -> Arc<dyn AnyStore> {
        match &self.url {
            Some(url) => Arc::new(PgStore::open(url, clock, retry).await.expect("open the PostgreSQL store")),
            None => Arc::new(SqliteStore::open(self.dir.path(), clock, retry).await.expect("open the SQLite store")),
        }
    }

    /// Rows of two text-and-number columns, read straight from the database (engine `e1`'s shard on SQLite),
    /// sorted, zeros left out: for checking counters against a recount.
    pub async fn pairs(&self, sql: &str) -> Vec<(String, i64)> {
        let mut rows: Vec<(String, i64)> = match &self.url {
            Some(url) => {
                let client = self
                    .reader
                    .get_or_init(|| async {
                        let (client, connection) =
                            tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("connect to PostgreSQL");
                        tokio::spawn(connection);
                        client
                    })
                    .await;
                let rows = client.query(sql, &[]).await.expect("query");
                rows.iter().map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1))).collect()
            }
            None => {
                let path = self.dir.path().join("shards").join("e1.sqlite3");
                let conn = rusqlite::Connection::open(path).expect("read the shard");
                let mut stmt = conn.prepare(sql).expect("prepare");
                let found = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).expect("query");
                found.map(|r| r.expect("row")).collect()
            }
        };
        rows.retain(|(_, n)| *n != 0);
        rows.sort();
        rows
    }
}

/// Creates an empty database on the test PostgreSQL server (`FLOWORK_TEST_POSTGRES`, set by `with-services`).
fn new_postgres_database() -> String {
    let server = std::env::var("FLOWORK_TEST_POSTGRES").expect(
        "FLOWORK_TEST_STORE=postgres needs a PostgreSQL server: run the tests through `with-services` \
         (scripts/test.sh does)",
    );
    let name = format!("s_{}", uuid::Uuid::now_v7().simple());
    let output = Command::new("psql")
        .arg(&server)
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", &format!("CREATE DATABASE {name}")])
        .output()
        .expect("running psql (Debian package postgresql-client)");
    assert!(output.status.success(), "CREATE DATABASE: {}", String::from_utf8_lossy(&output.stderr));
    let base = server.rsplit_once('/').map_or(server.as_str(), |(base, _)| base);
    format!("{base}/{name}")
}

/// A job of `user` with idempotency key `key` and JSON `payload`, runnable from `now`: kind `echo`, three
/// attempts, a 1 s timeout, its fingerprint derived from the payload.
pub fn new_job(user: &str, key: &str, payload: &str, now: i64) -> NewJob {
    NewJob {
        id: uuid::Uuid::now_v7().to_string(),
        engine: "e1".into(),
        user: user.into(),
        kind: "echo".into(),
        payload: payload.into(),
        priority: 0,
        run_at_ms: now,
        max_attempts: 3,
        timeout_ms: 1_000,
        idempotency_key: key.into(),
        fingerprint: format!("fp-{payload}"),
        traceparent: None,
        concurrency_key: None,
    }
}
