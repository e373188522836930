//! The module timers of blocking: one wake-up timer for every holder's deadline (hand the lock
//! over when its lease ends) and every BLOCK timeout, set for the earliest of them
//! (`pylock_core::queue::Deadlines` keeps them in order); and one-shot revocations.
//!
//! Timers never write on a replica (after a role change the primary decides the lock) or
//! while writes are paused: they retry every [`PAUSE_POLL_MS`] until the pause ends.

use std::cell::RefCell;
use std::rc::Rc;

use pylock_core::queue::Delivery;

use crate::api::{self, Ctx, TimerJob, Write};
use crate::effects;
use crate::storage::{Held, LockKey, Stored};
use pylock_core::Leases;

use pylock_core::watch::Reason;

use super::delivery::{self, AcquireWaiter, InTimer, LeaseWatcher};
use super::{LockId, Wake, REGISTRY};

/// How often a timer retries a hand-off or a revocation while writes are paused.
const PAUSE_POLL_MS: i64 = 10;

/// What a timer does when it fires.
pub(crate) enum Job {
    /// The earliest wake-up has come: serve the locks and end the waits that are due.
    Wake,
    /// A grant never reached its client: take it back if it still holds the lock, unchanged
    /// since (same deadline), and no other waiter answered with it received it.
    Revoke {
        lock: LockId,
        lease: Rc<[u8]>,
        token: i64,
        deadline_ms: i64,
        delivery: Rc<RefCell<Delivery>>,
    },
    /// Unblock the clients whose answers are decided (see `delivery`).
    Deliver,
    /// A generic command moved the key's expiry past the lease's own deadline, or removed it:
    /// put it back (see `events`).
    RestoreExpiry(LockId),
    /// A semaphore's lease expiry, retried while writes are paused.
    Expire(LockId),
}

impl TimerJob for Job {
    fn fire(self, ctx: Ctx) {
        let _in_timer = InTimer::enter();
        match self {
            Job::Wake => wake(ctx),
            // After a role change this server is a replica: its primary decides the lock now.
            Job::Revoke { .. } if ctx.flags().is_replica() => {}
            Job::Revoke {
                lock,
                lease,
                token,
                deadline_ms,
                delivery,
            } => revoke(ctx, lock, lease, token, deadline_ms, delivery),
            Job::Deliver => delivery::deliver_pending(),
            // The primary puts the expiry back, and its stream brings the fix here.
            Job::RestoreExpiry(_) if ctx.flags().is_replica() => {}
            Job::RestoreExpiry(id) => restore_expiry(ctx, id),
            Job::Expire(_) if ctx.flags().is_replica() => {}
            Job::Expire(id) => expire(ctx, &id),
        }
    }
}

/// Has the expiry of the lock `id` put back to its lease's deadline, from a timer.
pub(super) fn restore_expiry_soon(ctx: Ctx, id: LockId) {
    ctx.start_timer(0, Job::RestoreExpiry(id));
}

/// Makes sure the waiters and watchers of `id` are looked after no later than `at_ms`.
pub(super) fn arm(ctx: Ctx, id: &LockId, at_ms: i64) {
    let placed = REGISTRY.with(|r| {
        let mut r = r.borrow_mut();
        let r = &mut *r;
        let q = r.queues.get_mut(&id.db)?.get_mut(&id.key)?; // nobody waits
        if let Some((place, at)) = q.serve_at {
            if at <= at_ms {
                return None;
            }
            r.wakes.remove(place);
        }
        q.serve_at = Some((r.wakes.insert(at_ms, Wake::Serve(id.clone())), at_ms));
        Some(())
    });
    if placed.is_some() {
        wake_by(ctx, at_ms);
    }
}

/// Makes sure the wake-up timer fires no later than `at_ms`. At `now == deadline` the lease
/// rules already count a lock as free (Redis itself expires the key a millisecond later), so
/// the timer fires at the deadline itself; periods are clamped, and a timer that fires early
/// finds nothing due and is set again.
pub(super) fn wake_by(ctx: Ctx, at_ms: i64) {
    let current = REGISTRY.with(|r| r.borrow().wake_timer);
    if let Some((timer, fires)) = current {
        if fires <= at_ms {
            return;
        }
        ctx.stop_timer(timer);
    }
    let timer = ctx.start_timer(at_ms.saturating_sub(ctx.now_ms()), Job::Wake);
    REGISTRY.with(|r| r.borrow_mut().wake_timer = Some((timer, at_ms)));
}

/// Serves the locks and ends the waits whose time has come, then sets the timer for the next.
fn wake(ctx: Ctx) {
    let now = ctx.now_ms();
    let due = REGISTRY.with(|r| {
        let mut r = r.borrow_mut();
        r.wake_timer = None;
        r.wakes.due(now)
    });
    for entry in due {
        match entry {
            Wake::Timeout(client) => {
                // Its wake-up entry is gone already; `forget` takes it off its queue or watch.
                match super::forget(client) {
                    // The reply callback answers nil and counts the call as contended.
                    Some(false) => api::unblock::<AcquireWaiter>(client, None),
                    // The lease still holds after TIMEOUT: nil.
                    Some(true) => api::unblock::<LeaseWatcher>(client, None),
                    None => {}
                }
            }
            Wake::Expire(id) => {
                super::expiry_fired(&id);
                // A replica's leases end by its primary's effects.
                if !ctx.flags().is_replica() {
                    expire(ctx, &id);
                }
            }
            Wake::Serve(id) => {
                REGISTRY.with(|r| {
                    if let Some(q) = r.borrow_mut().queue_mut(&id) {
                        q.serve_at = None;
                    }
                });
                // After a role change this server is a replica: its primary decides the lock.
                if !ctx.flags().is_replica() {
                    serve(ctx, &id);
                }
            }
        }
    }
    if let Some(at) = REGISTRY.with(|r| r.borrow().wakes.next()) {
        wake_by(ctx, at);
    }
}

/// Opens the lock of `id`: answers the watchers whose lease has ended, and hands the lock over
/// if it is free; otherwise waits for its deadline.
fn serve(ctx: Ctx, id: &LockId) {
    if REGISTRY.with(|r| r.borrow_mut().queue_mut(id).is_none()) {
        return;
    }
    if ctx.writes_paused() {
        arm(ctx, id, ctx.now_ms().saturating_add(PAUSE_POLL_MS));
        return;
    }
    with_key(ctx, id, |ctx, key, lock| {
        let now = ctx.now_ms();
        let Ok(held) = lock.held() else {
            // Another command put a value of another type at the key: the lease is gone, and
            // nobody can get this lock.
            super::settle(
                ctx,
                id,
                Held::Lock(None),
                Some(super::Given::All(Reason::Deleted)),
            );
            delivery::wrong_type_all(ctx, id);
            return;
        };
        if held.live(now) == 0 && !ctx.serves_key(key) {
            super::settle(ctx, id, held, Some(super::Given::All(Reason::Moved)));
            delivery::redirect_all(ctx, id);
            return;
        }
        super::serve_now(ctx, key, lock, now);
        let held = lock.held().unwrap_or(Held::Lock(None));
        super::settle(ctx, id, held, None);
        if let Some(at) = held.next_end() {
            arm(ctx, id, at);
        }
    });
}

/// A semaphore's earliest lease deadline came: its leases that are due end, each replicated
/// as its own expiry, their watchers are answered `expired`, the freed places go to the
/// longest waiters, and the next deadline is armed.
fn expire(ctx: Ctx, id: &LockId) {
    if ctx.writes_paused() {
        ctx.start_timer(PAUSE_POLL_MS, Job::Expire(id.clone()));
        return;
    }
    with_key(ctx, id, |ctx, key, lock| {
        let now = ctx.now_ms();
        if lock.sem().is_none() {
            return;
        }
        let ended = effects::sem_expire_due(ctx, key, lock, now);
        if ended > 0 {
            super::lease_ended(ctx, key, lock, None, Reason::Expired);
        }
        if super::has_clients(ctx, key.as_ref()) {
            super::hand_off(ctx, key, lock, now);
        }
        super::arm_expiry(ctx, key, lock);
    });
}

/// Puts the expiry of the lock of `id` back to its lease's deadline, if it still needs it.
fn restore_expiry(ctx: Ctx, id: LockId) {
    if ctx.writes_paused() {
        ctx.start_timer(PAUSE_POLL_MS, Job::RestoreExpiry(id));
        return;
    }
    with_key(ctx, &id, |ctx, key, lock| {
        if let Some(at) = lock.expiry_to_restore() {
            effects::restore_expiry(ctx, key, lock, at);
        }
    });
}

fn revoke(
    ctx: Ctx,
    id: LockId,
    lease: Rc<[u8]>,
    token: i64,
    deadline_ms: i64,
    delivery: Rc<RefCell<Delivery>>,
) {
    if delivery.borrow().was_received() {
        return;
    }
    if ctx.writes_paused() {
        let job = Job::Revoke {
            lock: id,
            lease,
            token,
            deadline_ms,
            delivery,
        };
        ctx.start_timer(PAUSE_POLL_MS, job);
        return;
    }
    with_key(ctx, &id, |ctx, key, lock| {
        // A renewal since the grant means a client holds the lease after all.
        let unchanged = match lock.stored() {
            Ok(Some(Stored::Lock(l))) => {
                l.token() == token && l.id() == &*lease && lock.expires_at_ms() == Some(deadline_ms)
            }
            Ok(Some(Stored::Sem(s))) => s
                .find(&lease)
                .and_then(|at| s.get(at))
                .is_some_and(|l| l.token == token && l.deadline_ms == deadline_ms),
            _ => false,
        };
        if !unchanged {
            return;
        }
        if lock.sem().is_some() {
            effects::sem_end(ctx, key, lock, &lease, effects::Ended::Revoked);
        } else {
            effects::revoke(ctx, key, lock);
        }
        // Someone watching a lease id given in LEASE: the module took the lease back.
        let held = lock.held().unwrap_or(Held::Lock(None));
        super::settle(
            ctx,
            &id,
            held,
            Some(super::Given::Lease(token, Reason::Released)),
        );
        if ctx.serves_key(key) {
            super::hand_off(ctx, key, lock, ctx.now_ms());
        } else {
            delivery::redirect_all(ctx, &id);
        }
    });
}

/// Runs `f` with the key of `id` open for writing, in its database.
fn with_key(ctx: Ctx, id: &LockId, f: impl FnOnce(Ctx, &api::Arg, &mut LockKey<Write>)) {
    ctx.select_db(id.db);
    let Some(name) = ctx.string(&id.key) else {
        return;
    };
    let mut lock = LockKey::write(ctx, name.arg());
    f(ctx, name.arg(), &mut lock);
}
