//! The control database: registered engines (token hashes only) and users.

use std::path::Path;

use rusqlite::{OptionalExtension, Row, params};

use super::connection::{ReadPool, open_read_pool, open_writer};
use super::migrate;
use crate::store::{EngineRecord, StoreError};

/// The control database's connection pool (reads and the rare writes alike).
pub struct ControlDb {
    pub pool: ReadPool,
}

const ENGINE_COLUMNS: &str = "id, owner, created_at, revoked_at";

fn engine_from_row(row: &Row<'_>) -> rusqlite::Result<EngineRecord> {
    Ok(EngineRecord { id: row.get(0)?, owner: row.get(1)?, created_at_ms: row.get(2)?, revoked_at_ms: row.get(3)? })
}

impl ControlDb {
    /// Opens and migrates the control database (blocking).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut conn = open_writer(path)?;
        migrate::apply(&mut conn, migrate::CONTROL, &path.display().to_string())?;
        Ok(Self { pool: open_read_pool(path)? })
    }

    pub fn insert_engine(&self, id: &str, owner: Option<&str>, token_hash: &str, now: i64) -> Result<(), StoreError> {
        let conn = self.pool.get()?;
        let inserted = conn.execute(
            "INSERT INTO engines (id, owner, token_hash, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (id) DO NOTHING",
            params![id, owner, token_hash, now],
        )?;
        if inserted == 0 {
            return Err(StoreError::EngineExists(id.to_string()));
        }
        Ok(())
    }

    pub fn engines(&self) -> Result<Vec<EngineRecord>, StoreError> {
        let conn = self.pool.get()?;
        let mut stmt = conn.prepare_cached(&format!("SELECT {ENGINE_COLUMNS} FROM engines ORDER BY id"))?;
        let rows = stmt.query_map([], engine_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    pub fn engine(&self, id: &str) -> Result<Option<EngineRecord>, StoreError> {
        let conn = self.pool.get()?;
        let mut stmt = conn.prepare_cached(&format!("SELECT {ENGINE_COLUMNS} FROM engines WHERE id = ?1"))?;
        Ok(stmt.query_row([id], engine_from_row).optional()?)
    }

    pub fn engine_for_token_hash(&self, token_hash: &str) -> Result<Option<EngineRecord>, StoreError> {
        let conn = self.pool.get()?;
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {ENGINE_COLUMNS} FROM engines WHERE token_hash = ?1 AND revoked_at IS NULL"
        ))?;
        Ok(stmt.query_row([token_hash], engine_from_row).optional()?)
    }

    pub fn set_engine_token(&self, id: &str, token_hash: &str) -> Result<(), StoreError> {
        let conn = self.pool.get()?;
        let updated = conn
            .execute("UPDATE engines SET token_hash = ?1, revoked_at = NULL WHERE id = ?2", params![token_hash, id])?;
        if updated == 0 { Err(StoreError::EngineNotFound(id.to_string())) } else { Ok(()) }
    }

    pub fn revoke_engine(&self, id: &str, now: i64) -> Result<(), StoreError> {
        let conn = self.pool.get()?;
        let updated =
            conn.execute("UPDATE engines SET revoked_at = coalesce(revoked_at, ?1) WHERE id = ?2", params![now, id])?;
        if updated == 0 { Err(StoreError::EngineNotFound(id.to_string())) } else { Ok(()) }
    }

    pub fn ping(&self) -> Result<(), StoreError> {
        let conn = self.pool.get()?;
        conn.query_row("SELECT 1", [], |_| Ok(()))?;
        Ok(())
    }
}
