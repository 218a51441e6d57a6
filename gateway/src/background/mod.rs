//! The gateway's background loops: retention, cron ticks and alerts, each on the shared periodic loop.

pub mod alerts;
pub mod periodic;
pub mod retention;
pub mod scheduler;
