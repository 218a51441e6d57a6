//! The engine's settings: its whitelist, pause, fair-share weights and concurrency-key limits. Each answers
//! whether anything changed; a change lets waiting claims look again (a resume, a raised limit).

use rusqlite::Connection;

use super::{Batch, ShardOp};
use crate::store::StoreError;
use crate::store::sqlite::{fair, parking, queries};

/// Allow `user` to submit (as an owner with `is_owner`).
pub struct AllowUser {
    pub user: String,
    pub is_owner: bool,
}

/// Take `user` off the whitelist.
pub struct DisallowUser(pub String);

/// Pause or resume the engine.
pub struct SetPaused(pub bool);

/// Set `user`'s fair-share weight.
pub struct SetWeight {
    pub user: String,
    pub weight: i64,
}

/// Set (or clear) one concurrency key's limit.
pub struct SetKeyLimit {
    pub key: String,
    pub limit: Option<i64>,
}

/// Set (or clear) the limit of keys without their own.
pub struct SetDefaultKeyLimit(pub Option<i64>);

/// A settings write: applied by `apply`, answering whether anything changed.
macro_rules! setting {
    ($op:ty, |$this:ident, $conn:ident, $now:ident| $apply:expr) => {
        impl ShardOp for $op {
            type Output = bool;

            #[allow(unused_variables)] // not every setting needs the time
            fn apply(&self, $conn: &Connection, batch: &mut Batch<'_>) -> Result<bool, StoreError> {
                let ($this, $now) = (self, batch.now);
                $apply
            }

            fn wakes(changed: &bool) -> bool {
                *changed
            }
        }
    };
}

setting!(AllowUser, |op, conn, now| queries::allow_user(conn, &op.user, op.is_owner, now));
setting!(DisallowUser, |op, conn, now| queries::disallow_user(conn, &op.0));
setting!(SetPaused, |op, conn, now| queries::set_paused(conn, op.0, now));
setting!(SetWeight, |op, conn, now| fair::set_weight(conn, &op.user, op.weight));
setting!(SetKeyLimit, |op, conn, now| parking::set_key_limit(conn, &op.key, op.limit));
setting!(SetDefaultKeyLimit, |op, conn, now| parking::set_default_key_limit(conn, op.0));
