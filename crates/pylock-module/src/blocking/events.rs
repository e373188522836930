//! The events blocking listens to: keyspace events, by which a lock can vanish or its expiry
//! move without a PYLOCK command, and the flush, swap and role-change server events, which
//! remove or replace every key of a database at once and send no per-key event.
//!
//! A keyspace notification must not write, so it only leaves a hint for the lock's watchers
//! and has the lock looked after from a timer that fires at once (`timers::serve`).
//!
//! **A lease's deadline belongs to the lease** (`storage`): the lease rules judge a lease by the
//! earlier of its own deadline and the key's expiry, so no generic command extends it. When a
//! client's PERSIST, or a RESTORE, leaves a lock key with no expiry (or one later than its
//! lease's deadline), a timer puts the expiry back (`effects::restore_expiry`), so the key does
//! not outlive its lease for good. A later EXPIRE is left as it is: the lease ends at its
//! deadline all the same, and the key goes at the later time. Looking at every EXPIRE would
//! cost a key lookup in every EXPIRE of every key while any lock exists (0.28 → 0.38 µs per
//! call measured), so only PERSIST and RESTORE, which are rare, are looked at.

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
            // PERSIST leaves the value and removes the expiry; a RESTORE brings a lock with the
            // payload's TTL (0: none).
            b"persist" => {
                expiry_moved(ctx, key, false);
                return;
            }
            b"restore" => expiry_moved(ctx, key, true),
            // A semaphore brought by RENAME or MOVE keeps expiring lease by lease here.
            b"rename_to" | b"move_to" => arm_moved(ctx, key),
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

/// A lock key lost its expiry (PERSIST) or was restored (RESTORE). On the primary, an expiry
/// later than the lease's deadline, or none, is put back from a timer; a replica leaves that to
/// its primary, whose fix its stream brings.
fn expiry_moved(ctx: Ctx, key: &Arg, restored: bool) {
    // Every PERSIST and RESTORE of any key comes here: while no lock exists, none of them can
    // be about one.
    if !crate::storage::may_be_a_lock() {
        return;
    }
    // Opened in write mode only because that lookup leaves the keyspace hit and miss counts
    // alone; nothing here changes the keyspace.
    let lock = LockKey::write(ctx, key);
    if restored {
        // A lock of encoding 0 restored with a TTL takes it as its lease's deadline here
        // (`LockKey::state` does that).
        let _ = lock.state();
    }
    let flags = ctx.flags();
    if flags.is_replica() || flags.loading() {
        return;
    }
    // A semaphore restored here (RESTORE, MIGRATE) expires lease by lease from the timer.
    super::arm_expiry(ctx, key, &lock);
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

/// A key that RENAME or MOVE brought here: a semaphore's earliest deadline is armed.
fn arm_moved(ctx: Ctx, key: &Arg) {
    if !crate::storage::may_be_a_lock() || ctx.flags().is_replica() {
        return;
    }
    let lock = LockKey::write(ctx, key);
    super::arm_expiry(ctx, key, &lock);
}

/// The flush, swap and role-change events, for the clients blocked on locks. Every queue of a
/// flushed or swapped database is looked after at once, from a timer (the lock is gone, or is
/// now another database's): a waiter never waits on a free key, and its watchers are answered
/// `flushed`. A server that became a replica answers every watcher `demoted` (Redis 7.0 and
/// Valkey end blocked clients themselves on a role change, before this event). A swap also
/// moves the semaphores' expiry wake-ups to their keys' new database numbers.
pub(crate) fn server_event(ctx: Ctx, event: ServerEvent) {
    if let ServerEvent::Swapped(a, b) = event {
        super::swap_expiries(ctx, a, b);
    }
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
