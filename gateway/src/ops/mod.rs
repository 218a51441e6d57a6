//! Operator commands that run beside or instead of `serve`: engines, tokens and keys; backup and restore;
//! moving a data directory to PostgreSQL.

pub mod backup;
pub mod commands;
pub mod migrate_store;
