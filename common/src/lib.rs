//! What the Flowork gateway and engine share: the HTTP wire types, ids, time and the retry policy.
//!
//! Nothing here knows about axum, SQLite or HTTP clients, so both binaries (and later backends) can depend on
//! it without pulling each other's stacks in.

pub mod backoff;
pub mod clock;
pub mod eth;
pub mod ids;
pub mod logging;
pub mod secret;
pub mod service;
pub mod signal;
pub mod siwe;
pub mod telemetry;
pub mod timefmt;
pub mod wire;
