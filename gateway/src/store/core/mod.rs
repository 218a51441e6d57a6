//! The backend-neutral rules of the job lifecycle: decisions that know no database. Each driver (`sqlite`,
//! `postgres`) only executes them in its own SQL, so a rule is written once.

pub mod attempt;
pub mod claim;
pub mod created;
pub mod fair;
pub mod hold;
pub mod migration;
pub mod operate;
pub mod schedule;
pub mod stats;
pub mod wait;
