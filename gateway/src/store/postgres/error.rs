//! PostgreSQL's errors as the store's neutral ones, by SQLSTATE: a full disk, a read-only server, an I/O failure,
//! damaged data and a server that cannot be reached each become their own condition; anything else is a database
//! error with the server's message.

use tokio_postgres::error::SqlState;

use crate::store::StoreError;

impl From<tokio_postgres::Error> for StoreError {
    fn from(error: tokio_postgres::Error) -> Self {
        match error.as_db_error() {
            Some(db) => from_sqlstate(db.code(), format!("PostgreSQL: {} ({})", db.message(), db.code().code())),
            // No answer from the server: the connection broke or never came up.
            None if error.is_closed() || error.to_string().contains("connect") => {
                Self::Unavailable(format!("PostgreSQL: {error}"))
            }
            None => Self::Database(format!("PostgreSQL: {error}")),
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        Self::Unavailable(format!("PostgreSQL connection pool: {error}"))
    }
}

/// The neutral error for a server error of this SQLSTATE.
pub fn from_sqlstate(code: &SqlState, detail: String) -> StoreError {
    match code {
        c if *c == SqlState::DISK_FULL => StoreError::StorageFull(detail),
        c if *c == SqlState::READ_ONLY_SQL_TRANSACTION => StoreError::ReadOnly(detail),
        c if *c == SqlState::IO_ERROR => StoreError::StorageIo(detail),
        c if *c == SqlState::DATA_CORRUPTED || *c == SqlState::INDEX_CORRUPTED => StoreError::Corrupt(detail),
        // Class 08 (connection exceptions), 57P (the server shutting down or not yet up), 53300 (no slot left).
        c if c.code().starts_with("08") || c.code().starts_with("57P") || *c == SqlState::TOO_MANY_CONNECTIONS => {
            StoreError::Unavailable(detail)
        }
        _ => StoreError::Database(detail),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_sqlstate_condition_has_its_own_neutral_error() {
        let of = |code: &str| from_sqlstate(&SqlState::from_code(code), code.into());
        assert!(matches!(of("53100"), StoreError::StorageFull(_)));
        assert!(matches!(of("25006"), StoreError::ReadOnly(_)));
        assert!(matches!(of("58030"), StoreError::StorageIo(_)));
        assert!(matches!(of("XX001"), StoreError::Corrupt(_)));
        assert!(matches!(of("XX002"), StoreError::Corrupt(_)));
        assert!(matches!(of("08006"), StoreError::Unavailable(_)));
        assert!(matches!(of("57P01"), StoreError::Unavailable(_)));
        assert!(matches!(of("53300"), StoreError::Unavailable(_)));
        assert!(matches!(of("23505"), StoreError::Database(_)));
        assert_eq!(of("53100").storage_condition().map(|(code, _)| code), Some("storage_full"));
        assert_eq!(of("25006").storage_condition().map(|(code, _)| code), Some("storage_read_only"));
    }
}
