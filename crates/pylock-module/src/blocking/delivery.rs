//! How a waiter gets its answer, and what happens to a grant that never reached its client.
//!
//! A waiter is blocked with `RM_BlockClient` and no Redis-side timeout: the module's own
//! timer ends BLOCK waits (`timers`). On Redis 7.0, a client whose Redis timeout passes after
//! the module unblocked it but before Redis delivered the unblock (the same event-loop turn)
//! is released with no reply at all and hangs. With the module's own timer, the grant and the
//! timeout are decided in one place, so every waiter gets exactly one answer.
//!
//! **On Redis 7.0 to 7.2, unblocking is deferred to a 0 ms module timer** for a hand-off made
//! inside a command (RELEASE, or an ACQUIRE that serves the queue). Unblocking at once would
//! let a `CLIENT UNBLOCK` of that client, later in the same turn, meet a client the module had
//! already unblocked: those servers then skip the timeout callback and the ACQUIRE never gets
//! a reply. Until the timer runs, the client is still blocked as Redis sees it, so
//! `CLIENT UNBLOCK` and disconnects take the normal callbacks, which find the answer pending
//! here and cancel it. The timer runs after the turn's commands and before `beforeSleep`
//! hands out module-unblocked replies, so no command runs in between. The lock is stored for
//! the waiter meanwhile, so nobody else can take it. A hand-off made in a timer (expiry)
//! unblocks at once for the same reason.
//!
//! **On Valkey and Redis 7.4 or later the unblock is immediate**: there a `CLIENT UNBLOCK` of a
//! client the module already unblocked is answered exactly once (a timeout is ignored and the
//! grant delivered; with `ERROR` the client gets only the error, its grant is never read and
//! is taken back as below). That saves a timer per hand-off.
//!
//! (An event-loop before-sleep event would also do for 7.0, but a module subscribed to it
//! makes Redis build a context for it twice per event-loop turn, for every client's commands,
//! whether or not anyone waits: a tax on the whole server that a timer per hand-off avoids.)
//!
//! **A grant nobody received is taken back.** Everyone answered with one grant (several only
//! when they sent the same LEASE) shares a `pylock_core::queue::Delivery`; when the last of
//! them is settled (replied to, gone, or cancelled) and none received it, a timer revokes the
//! grant, if the lock is still that grant, unchanged, and passes the lock on.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use pylock_core::queue::Delivery;
use pylock_core::watch::Reason;
use pylock_core::{CommandError, LeaseReply, ReplySink};

use crate::api::{self, Blocked, BlockedKind, Ctx};
use crate::stats;

use super::timers::Job;
use super::LockId;

/// What an unblocked waiter is answered with.
pub(super) enum Answer {
    /// The lock was handed to it.
    Grant(Grant),
    /// This node no longer serves the lock's slot: `TRYAGAIN`.
    Moved,
    /// No lease after all (the token space is exhausted): nil, like a timeout.
    Nil,
    /// Another command put a value of another type at the key: `WRONGTYPE`.
    WrongType,
    /// The key was created anew with another n than this waiter asked for: `LIMITMISMATCH`.
    LimitMismatch(u32),
}

/// A lease handed to a waiter.
pub(super) struct Grant {
    pub(super) lock: LockId,
    pub(super) id: Rc<[u8]>,
    pub(super) token: i64,
    /// The lease's deadline as this waiter's request left it.
    pub(super) deadline_ms: i64,
    /// Shared by every waiter answered with this grant.
    pub(super) delivery: Rc<RefCell<Delivery>>,
}

impl Grant {
    /// A grant of lease `id` with `token` on `lock`, to be sent with [`Grant::with_deadline`].
    pub(super) fn new(lock: LockId, id: &[u8], token: i64) -> Self {
        Self {
            lock,
            id: Rc::from(id),
            token,
            deadline_ms: 0,
            delivery: Rc::default(),
        }
    }

    /// The same grant, for one waiter, with the deadline its request set.
    pub(super) fn with_deadline(&self, deadline_ms: i64) -> Self {
        Self {
            lock: self.lock.clone(),
            id: self.id.clone(),
            token: self.token,
            deadline_ms,
            delivery: self.delivery.clone(),
        }
    }

    /// The revocation to run if nobody received this grant.
    pub(super) fn revocation(self) -> Job {
        Job::Revoke {
            lock: self.lock,
            lease: self.id,
            token: self.token,
            deadline_ms: self.deadline_ms,
            delivery: self.delivery,
        }
    }
}

/// A decided answer not yet delivered: a waiter's, or a watcher's reason.
enum Pending {
    Waiter(Answer),
    Watcher(Reason),
}

thread_local! {
    /// Waiters and watchers taken off their lock with their answer decided, not yet unblocked.
    static PENDING: RefCell<Vec<(Blocked, Pending)>> = const { RefCell::new(Vec::new()) };
    /// Whether a `Job::Deliver` timer is scheduled.
    static DELIVERY_SCHEDULED: Cell<bool> = const { Cell::new(false) };
    /// Whether a module timer's job is running now.
    static IN_TIMER: Cell<bool> = const { Cell::new(false) };
    /// Whether this server answers a module-unblocked client once whatever `CLIENT UNBLOCK`
    /// does in the same turn (see the module docs); set at load time.
    static UNBLOCK_IS_RACE_FREE: Cell<bool> = const { Cell::new(false) };
}

/// Learns whether this server needs the deferred unblock.
pub(super) fn configure(ctx: Ctx) {
    let race_free = ctx.unblock_is_race_free();
    UNBLOCK_IS_RACE_FREE.with(|u| u.set(race_free));
}

/// Marks a timer's job as running while it lives.
pub(super) struct InTimer(());

impl InTimer {
    pub(super) fn enter() -> Self {
        IN_TIMER.with(|t| t.set(true));
        Self(())
    }
}

impl Drop for InTimer {
    fn drop(&mut self) {
        IN_TIMER.with(|t| t.set(false));
    }
}

/// Records `answer` for `client` and unblocks it: at once from a timer or where that is race
/// free, else from a 0 ms timer (see the module docs).
pub(super) fn answer_later(ctx: Ctx, client: Blocked, answer: Answer) {
    if let Answer::Grant(g) = &answer {
        g.delivery.borrow_mut().join();
    }
    if unblock_now() {
        api::unblock::<AcquireWaiter>(client, Some(answer));
        return;
    }
    defer(ctx, client, Pending::Waiter(answer));
}

/// Records the reason a watcher's lease ended and unblocks it, as [`answer_later`] does.
pub(super) fn answer_watcher_later(ctx: Ctx, client: Blocked, reason: Reason) {
    if unblock_now() {
        api::unblock::<LeaseWatcher>(client, Some(reason));
        return;
    }
    defer(ctx, client, Pending::Watcher(reason));
}

fn unblock_now() -> bool {
    IN_TIMER.with(Cell::get) || UNBLOCK_IS_RACE_FREE.with(Cell::get)
}

fn defer(ctx: Ctx, client: Blocked, answer: Pending) {
    PENDING.with(|p| p.borrow_mut().push((client, answer)));
    if !DELIVERY_SCHEDULED.with(Cell::get) {
        DELIVERY_SCHEDULED.with(|d| d.set(true));
        ctx.start_timer(0, Job::Deliver);
    }
}

/// Unblocks every client whose answer is decided (the `Job::Deliver` timer).
pub(super) fn deliver_pending() {
    DELIVERY_SCHEDULED.with(|d| d.set(false));
    let pending = PENDING.with(|p| std::mem::take(&mut *p.borrow_mut()));
    for (client, answer) in pending {
        match answer {
            Pending::Waiter(a) => api::unblock::<AcquireWaiter>(client, Some(a)),
            Pending::Watcher(r) => api::unblock::<LeaseWatcher>(client, Some(r)),
        }
    }
}

/// Takes back the decided answer of `client`, if it was not delivered yet.
fn take_pending(client: Blocked) -> Option<Pending> {
    PENDING.with(|p| {
        let mut p = p.borrow_mut();
        let pos = p.iter().position(|(c, _)| *c == client)?;
        Some(p.swap_remove(pos).1)
    })
}

/// A decided answer that will never be delivered: a grant in it is revoked, unless another
/// waiter answered with the same grant received it.
fn cancel(ctx: Ctx, answer: Answer) {
    if let Answer::Grant(g) = answer {
        if g.delivery.borrow_mut().settle() {
            ctx.start_timer(0, g.revocation());
        }
    }
}

/// The blocked `PYLOCK.ACQUIRE … BLOCK`.
pub(super) struct AcquireWaiter;

impl BlockedKind for AcquireWaiter {
    type Answer = Answer;

    fn reply(mut ctx: Ctx, answer: Option<&mut Answer>) {
        match answer {
            Some(Answer::Moved) => {
                let _ = ctx.reply_error(CommandError::TryAgain, pylock_core::Acquire::NAME);
            }
            Some(Answer::WrongType) => {
                let _ = ctx.reply_error(CommandError::WrongType, pylock_core::Acquire::NAME);
            }
            Some(Answer::LimitMismatch(n)) => {
                let _ =
                    ctx.reply_error(CommandError::LimitMismatch(*n), pylock_core::Acquire::NAME);
            }
            Some(Answer::Grant(g)) => {
                g.delivery.borrow_mut().received();
                // Counted here, once its client gets it: a grant that never reaches its client
                // is taken back, and is not one.
                stats::ACQUIRED.incr();
                let ttl_ms = g.deadline_ms.saturating_sub(ctx.now_ms()).max(0);
                LeaseReply {
                    id: &g.id,
                    token: g.token,
                    ttl_ms,
                }
                .write(&mut ctx);
            }
            // Unblocked without a grant (BLOCK ran out, or the token space is exhausted): the
            // call fails like a contended one.
            Some(Answer::Nil) | None => {
                stats::CONTENDED.incr();
                ctx.nil();
            }
        }
    }

    /// `CLIENT UNBLOCK` without ERROR: nil, and leave the queue.
    fn timed_out(mut ctx: Ctx, client: Blocked) {
        // Queued, or taken off the queue with an answer not yet delivered; a client the module
        // already unblocked never reaches this callback.
        let was_waiting = if super::forget(client).is_some() {
            true
        } else if let Some(Pending::Waiter(answer)) = take_pending(client) {
            // Its answer was decided but not delivered: it gets nil instead.
            cancel(ctx, answer);
            true
        } else {
            false
        };
        if was_waiting {
            stats::CONTENDED.incr();
            ctx.nil();
            // Redis frees a blocked client's handle only once the module unblocks it, even
            // after a timeout; no reply callback runs for it then.
            api::unblock::<AcquireWaiter>(client, None);
        }
    }

    /// The client went away while waiting (or `CLIENT UNBLOCK … ERROR`): leave the queue.
    fn disconnected(ctx: Ctx, client: Blocked) {
        if super::forget(client).is_some() {
            api::unblock::<AcquireWaiter>(client, None);
        } else if let Some(Pending::Waiter(answer)) = take_pending(client) {
            // Decided but not delivered: take the grant back.
            cancel(ctx, answer);
            api::unblock::<AcquireWaiter>(client, None);
        }
    }

    /// A grant that never reached its client is revoked so the lock passes on.
    fn freed(ctx: Ctx, answer: Answer) {
        if let Answer::Grant(g) = answer {
            if g.delivery.borrow_mut().settle() {
                ctx.start_timer(0, g.revocation());
            }
        }
    }
}

/// The blocked `PYLOCK.WATCH`: answered with the reason its lease ended, or nil when its
/// TIMEOUT passes or `CLIENT UNBLOCK` ends it.
pub(super) struct LeaseWatcher;

impl BlockedKind for LeaseWatcher {
    type Answer = Reason;

    fn reply(mut ctx: Ctx, answer: Option<&mut Reason>) {
        match answer {
            Some(reason) => ctx.bulk(reason.as_str().as_bytes()),
            None => ctx.nil(),
        }
    }

    /// `CLIENT UNBLOCK` without ERROR: nil, and stop watching.
    fn timed_out(mut ctx: Ctx, client: Blocked) {
        // Watching, or with a reason decided but not delivered (it gets nil instead).
        let was_watching = super::forget(client).is_some()
            || matches!(take_pending(client), Some(Pending::Watcher(_)));
        if was_watching {
            ctx.nil();
            api::unblock::<LeaseWatcher>(client, None);
        }
    }

    /// The client went away while watching (or `CLIENT UNBLOCK … ERROR`): stop watching.
    fn disconnected(_ctx: Ctx, client: Blocked) {
        if super::forget(client).is_some()
            || matches!(take_pending(client), Some(Pending::Watcher(_)))
        {
            api::unblock::<LeaseWatcher>(client, None);
        }
    }

    fn freed(_ctx: Ctx, _answer: Reason) {}
}

/// Answers every waiter of `id` with `WRONGTYPE`: another command put a value of another type
/// at the key, so none of them can get this lock.
pub(super) fn wrong_type_all(ctx: Ctx, id: &LockId) {
    for client in super::take_all(id) {
        answer_later(ctx, client, Answer::WrongType);
    }
}

/// Answers every waiter of `id` with `TRYAGAIN`: this node no longer serves the lock, and a
/// retry (cluster clients retry TRYAGAIN by themselves) is redirected to the node that does.
pub(super) fn redirect_all(ctx: Ctx, id: &LockId) {
    for client in super::take_all(id) {
        answer_later(ctx, client, Answer::Moved);
    }
}
