//! SQLite's errors as the store's neutral ones: a full disk, a read-only file, an I/O failure and a damaged file
//! each become their own condition; anything else is a database error with SQLite's message.

use rusqlite::ErrorCode;

use crate::store::StoreError;

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        let detail = format!("SQLite: {error}");
        match error.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => Self::StorageFull(detail),
            Some(ErrorCode::ReadOnly) => Self::ReadOnly(detail),
            Some(ErrorCode::SystemIoFailure) => Self::StorageIo(detail),
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => Self::Corrupt(detail),
            _ => Self::Database(detail),
        }
    }
}

impl From<r2d2::Error> for StoreError {
    fn from(error: r2d2::Error) -> Self {
        Self::Unavailable(format!("SQLite connection pool: {error}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(code: std::os::raw::c_int) -> StoreError {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None).into()
    }

    #[test]
    fn each_storage_condition_has_its_own_neutral_error() {
        assert!(matches!(failure(rusqlite::ffi::SQLITE_FULL), StoreError::StorageFull(_)));
        assert!(matches!(failure(rusqlite::ffi::SQLITE_READONLY), StoreError::ReadOnly(_)));
        assert!(matches!(failure(rusqlite::ffi::SQLITE_IOERR), StoreError::StorageIo(_)));
        assert!(matches!(failure(rusqlite::ffi::SQLITE_CORRUPT), StoreError::Corrupt(_)));
        assert!(matches!(failure(rusqlite::ffi::SQLITE_NOTADB), StoreError::Corrupt(_)));
        assert!(matches!(failure(rusqlite::ffi::SQLITE_BUSY), StoreError::Database(_)));
        assert!(matches!(StoreError::from(rusqlite::Error::InvalidQuery), StoreError::Database(_)));
        assert!(failure(rusqlite::ffi::SQLITE_BUSY).breaks_transaction());
    }
}
