//! The Flowork gateway as a library: the binary (`main.rs`) only parses the command line and calls in here.

pub mod admission;
pub mod alerts;
pub mod api;
pub mod audit;
pub mod auth;
pub mod backup;
pub mod client_ip;
pub mod commands;
pub mod config;
pub mod cron;
pub mod drain;
pub mod engine_cache;
pub mod engine_presence;
pub mod enqueue;
pub mod error;
pub mod inflight;
pub mod metrics;
pub mod network;
pub mod queue_metrics;
pub mod rate_limit;
pub mod request_log;
pub mod retention;
pub mod scheduler;
pub mod secure_fs;
pub mod server;
pub mod store;
