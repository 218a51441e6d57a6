//! Opening SQLite files the one way Flowork wants them: WAL, `synchronous=NORMAL`, a busy timeout, foreign keys.

use std::path::Path;
use std::time::Duration;

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::Connection;

use crate::store::StoreError;

/// How long a writer waits for another process's write lock (a second gateway on the same data directory)
/// before giving up with `SQLITE_BUSY`.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a shard's writer looks again while another connection holds the write lock.
const WRITER_RETRY: Duration = Duration::from_micros(200);

/// The busy handler of a shard's writer: another look every `WRITER_RETRY` for up to `BUSY_TIMEOUT`. SQLite's
/// own handler sleeps 1, 2, 5, 10 ... 100 ms between looks, so a writer held up for a millisecond (by a
/// checkpoint making the log start over, or by a second gateway's commit) would oversleep by several.
pub fn retry_briefly(attempts: i32) -> bool {
    let waited = WRITER_RETRY * u32::try_from(attempts).unwrap_or(u32::MAX);
    if waited >= BUSY_TIMEOUT {
        return false;
    }
    std::thread::sleep(WRITER_RETRY);
    true
}

/// Prepared statements kept per connection (rusqlite's default of 16 is fewer than the writer uses).
const STATEMENT_CACHE: usize = 128;

/// Read connections per database: enough for concurrent API reads on a small box.
const READ_POOL_SIZE: u32 = 4;

pub type ReadPool = r2d2::Pool<SqliteConnectionManager>;

/// Applies the per-connection settings every Flowork connection uses.
pub fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "journal_mode could not be set to WAL (got {mode})"
        )));
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Statement journals (a trigger or multi-row statement inside the group-commit transaction) stay in memory.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // `rarray(?)`: a list bound as one parameter, so a batch of rows is written by one statement.
    rusqlite::vtab::array::load_module(conn)?;
    // The writer's statements (with the multi-row inserts and updates in a few sizes) all stay prepared.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

/// Opens (creating if needed) a read-write connection, for writers and migrations.
pub fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    configure(&conn)?;
    Ok(conn)
}

/// Opens an existing database read-write; a missing file is an error, never silently a new empty database.
pub fn open_existing_writer(path: &Path) -> Result<Connection, StoreError> {
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    configure(&conn)?;
    Ok(conn)
}

/// A small pool of connections for reads (they never block the writer thanks to WAL).
pub fn open_read_pool(path: &Path) -> Result<ReadPool, StoreError> {
    let manager = SqliteConnectionManager::file(path).with_init(|conn| configure(conn));
    Ok(r2d2::Pool::builder().max_size(READ_POOL_SIZE).min_idle(Some(1)).build(manager)?)
}
