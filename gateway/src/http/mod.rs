//! The HTTP edge: the listener and accept loop, client addresses and network rules, rate limits, the request log,
//! the GUI's files, and the one mapping of every failure to a status and a JSON error body.

pub mod client_ip;
pub mod connections;
pub mod error;
pub mod gui;
pub mod listener;
pub mod network;
pub mod open_files;
pub mod rate_limit;
pub mod request_log;
pub mod tls;
