//! The events blocking listens to: keyspace events, by which a lock can vanish without a PYLOCK
//! command, and the flush and swap server events, which remove or replace every key of a
//! database at once and send no per-key event.

use std::ffi::c_int;

use crate::api::{self, Arg, Ctx, KeyspaceHandler, ServerEvent, ServerEventHandler};
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

struct DatabaseWatch;

impl ServerEventHandler for DatabaseWatch {
    /// Every queue of a flushed or swapped database is looked after at once, from a timer (the
    /// lock is gone, or is now another database's): a waiter never waits on a free key.
    fn event(ctx: Ctx, event: ServerEvent) {
        if stats::WAITING.get() == 0 {
            return;
        }
        let hit = |db: c_int| match event {
            ServerEvent::Flushed(None) => true,
            ServerEvent::Flushed(Some(d)) => d == db,
            ServerEvent::Swapped(a, b) => db == a || db == b,
            _ => false,
        };
        let ids: Vec<LockId> = REGISTRY.with(|r| {
            r.borrow()
                .queues
                .iter()
                .filter(|(db, _)| hit(**db))
                .flat_map(|(db, by_key)| {
                    by_key.keys().map(|key| LockId {
                        db: *db,
                        key: key.clone(),
                    })
                })
                .collect()
        });
        for id in ids {
            timers::arm(ctx, &id, i64::MIN);
        }
    }
}

/// Subscribes to the keyspace events by which a lock can vanish and to the flush and swap
/// events, and learns how this server delivers unblocks (see `delivery`).
pub(crate) fn subscribe(ctx: Ctx) -> Result<(), String> {
    delivery::configure(ctx);
    api::subscribe_keyspace::<KeyspaceWatch>(ctx)?;
    let events = [ServerEvent::Flushed(None), ServerEvent::Swapped(0, 0)];
    if api::subscribe_server_events::<DatabaseWatch>(ctx, &events) {
        Ok(())
    } else {
        Err("could not subscribe to the flush and swap events".into())
    }
}
