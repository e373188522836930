//! The events blocking listens to: keyspace events, by which a lock can vanish or its expiry
//! move without a PYLOCK command, and the flush, swap and role-change server events, which
//! remove or replace every key of a database at once and send no per-key event.
//!
//! A keyspace notification must not write, so it only leaves a hint for the lock's watchers
//! and has the lock looked after from a timer that fires at once (`timers::serve`).
//!
//! **A lease's deadline belongs to the lease** (`storage`). When a client's PERSIST, EXPIRE or
//! RESTORE leaves the key's expiry later than the lease's deadline, or removes it, a timer puts
//! it back (`effects::restore_expiry`); the lease rules judge the lease by the earlier of the
//! two in the meantime, so nothing is extended even for a moment. An expiry from the primary's
//! stream or an AOF being loaded is a renewal (`PEXPIREAT`, the effect a renewal replicates):
//! the lease adopts it as its deadline.

use std::ffi::c_int;

use pylock_core::watch::Reason;

use crate::api::{self, Arg, Ctx, KeyspaceHandler, ServerEvent};
use crate::stats;
use crate::storage::LockKey;

use super::{delivery, timers, Hint, LockId, REGISTRY};

struct KeyspaceWatch;

impl KeyspaceHandler for KeyspaceWatch {
    fn event(ctx: Ctx, event: &[u8], key: &Arg) {
        match event {
            // These change the key's expiry and leave the value.
            b"expire" | b"persist" => {
                expiry_moved(ctx, key, false);
                return;
            }
            // A RESTORE brings a lock with the payload's TTL (0: none).
            b"restore" => expiry_moved(ctx, key, true),
            _ => {}
        }
        // The common case costs two loads: nobody waits or watches anywhere.
        if stats::WAITING.get() == 0 && stats::WATCHING.get() == 0 {
            return;
        }
        let db = ctx.db();
        let queued = REGISTRY.with(|r| r.borrow().queue(db, key.as_ref()).is_some());
        if !queued {
            return;
        }
        let id = LockId {
            db,
            key: key.as_ref().into(),
        };
        let hint = match event {
            b"expired" => Hint::KeyExpired(ctx.now_ms()),
            // del, unlink, rename_from/to, move_from/to, set, restore, evicted, ...: removed
            // or replaced. The timer checks the key: a lease that still holds is not ended.
            _ => Hint::Reason(Reason::Deleted),
        };
        super::hint(&id, hint);
        // Writing from a notification is not allowed: serve from a timer that fires at once.
        timers::arm(ctx, &id, i64::MIN);
    }
}

/// The key's expiry moved (or a lock was restored with one). On the primary, a client's
/// command that leaves it later than the lease's deadline is undone from a timer. On a replica
/// (whose writes come from its primary's stream: a notification's context does not say which
/// client ran the command) or while an AOF loads, it is a renewal, and the lease takes it as
/// its deadline; the primary's own fix follows a client's command in the same stream.
fn expiry_moved(ctx: Ctx, key: &Arg, restored: bool) {
    // Opened in write mode only because that lookup leaves the keyspace hit and miss counts
    // alone: this runs for every key whose expiry moves, and nothing here changes the keyspace.
    let lock = LockKey::write(ctx, key);
    if restored {
        // A lock of encoding 0 restored with a TTL takes it as its lease's deadline here
        // (`LockKey::state` does that). After EXPIRE or PERSIST the expiry is no longer the
        // lease's, so it must not be taken.
        let _ = lock.state();
    }
    let flags = ctx.flags();
    if flags.is_replica() || flags.loading() {
        lock.adopt_key_expiry();
        return;
    }
    if lock.expiry_to_restore().is_some() {
        timers::restore_expiry_soon(
            ctx,
            LockId {
                db: ctx.db(),
                key: key.as_ref().into(),
            },
        );
    }
}

/// The flush, swap and role-change events, for the clients blocked on locks. Every queue of a
/// flushed or swapped database is looked after at once, from a timer (the lock is gone, or is
/// now another database's): a waiter never waits on a free key, and its watchers are answered
/// `flushed`. A server that became a replica answers every watcher `demoted` (Redis 7.0 and
/// Valkey end blocked clients themselves on a role change, before this event).
pub(crate) fn server_event(ctx: Ctx, event: ServerEvent) {
    if stats::WAITING.get() == 0 && stats::WATCHING.get() == 0 {
        return;
    }
    let hit = move |db: c_int| match event {
        ServerEvent::Flushed(None) => true,
        ServerEvent::Flushed(Some(d)) => d == db,
        ServerEvent::Swapped(a, b) => db == a || db == b,
        ServerEvent::RoleChanged => true,
        _ => false,
    };
    match event {
        ServerEvent::RoleChanged if ctx.flags().is_replica() => {
            super::end_all_watches(ctx, hit, Reason::Demoted);
            return;
        }
        ServerEvent::Flushed(_) | ServerEvent::Swapped(..) => {
            super::end_all_watches(ctx, hit, Reason::Flushed);
        }
        _ => return,
    }
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

/// Subscribes to the keyspace events by which a lock can vanish or its expiry move, and learns
/// how this server delivers unblocks (see `delivery`). The server events reach
/// [`server_event`] through the module's one server-event handler (`lib`).
pub(crate) fn subscribe(ctx: Ctx) -> Result<(), String> {
    delivery::configure(ctx);
    crate::storage::on_foreign_unlink(key_unlinked);
    api::subscribe_keyspace::<KeyspaceWatch>(ctx)
}

/// A command other than the module's removed or replaced the lock at `key` of `db` (see
/// `storage::on_foreign_unlink`): its watchers are told `deleted` (Redis's expiry then corrects
/// it to `expired` by its own event), and its waiters are served, from a timer.
fn key_unlinked(db: c_int, key: &[u8]) {
    if stats::WAITING.get() == 0 && stats::WATCHING.get() == 0 {
        return;
    }
    if !REGISTRY.with(|r| r.borrow().queue(db, key).is_some()) {
        return;
    }
    let Some(ctx) = api::module_ctx() else {
        return;
    };
    let id = LockId {
        db,
        key: key.into(),
    };
    super::hint(&id, Hint::Reason(Reason::Deleted));
    timers::arm(ctx, &id, i64::MIN);
}
