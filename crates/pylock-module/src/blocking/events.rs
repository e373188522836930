//! The events blocking listens to: keyspace events, by which a lock can vanish without a PYLOCK
//! command.

use crate::api::{self, Arg, Ctx, KeyspaceHandler};
use crate::stats;

use super::{delivery, timers, LockId, REGISTRY};

struct KeyspaceWatch;

impl KeyspaceHandler for KeyspaceWatch {
    fn event(ctx: Ctx, key: &Arg) {
        // The common case costs one load: nobody waits anywhere.
        if stats::WAITING.get() == 0 {
            return;
        }
        let db = ctx.db();
        let queued = REGISTRY.with(|r| r.borrow().queue(db, key.as_ref()).is_some());
        if queued {
            // Writing from a notification is not allowed: serve from a timer that fires at once.
            let id = LockId {
                db,
                key: key.as_ref().into(),
            };
            timers::arm(ctx, &id, i64::MIN);
        }
    }
}

/// Subscribes to the keyspace events by which a lock can vanish, and learns how this server
/// delivers unblocks (see `delivery`).
pub(crate) fn subscribe(ctx: Ctx) -> Result<(), String> {
    delivery::configure(ctx);
    api::subscribe_keyspace::<KeyspaceWatch>(ctx)
}
