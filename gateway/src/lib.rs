//! The Flowork gateway as a library: the binary (`main.rs`) only parses the command line and calls in here.

pub mod admission;
pub mod api;
pub mod app;
pub mod audit;
pub mod auth;
pub mod background;
pub mod config;
pub mod connection_string;
pub mod cron;
pub mod fuzzing;
pub mod http;
pub mod live;
pub mod observability;
pub mod ops;
pub mod secure_fs;
pub mod server;
pub mod state;
pub mod store;
