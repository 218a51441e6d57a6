//! Opening SQLite files the one way Flowork wants them: WAL, `synchronous=NORMAL`, a busy timeout, foreign keys.

use std::path::Path;
use std::time::Duration;

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::Connection;

use crate::store::StoreError;

/// How long a writer waits for another process's write lock (a second gateway on the same data directory)
/// before giving up with `SQLITE_BUSY`.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

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
