//! How a waiter gets its answer, and what happens to a grant that never reached its client.
//!
//! A waiter is blocked with `RM_BlockClient` and no Redis-side timeout: the module's own
//! timer ends BLOCK waits (`timers`). On Redis 7.0, a client whose Redis timeout passes after
//! the module unblocked it but before Redis delivered the unblock (the same event-loop turn)
//! is released with no reply at all and hangs. With the module's own timer, the grant and the
//! timeout are decided in one place, so every waiter gets exactly one answer.
//!
//! **Unblocking is deferred to the event loop's before-sleep event** for a hand-off made
//! inside a command (RELEASE, or an ACQUIRE that serves the queue). Unblocking at once would
//! let a `CLIENT UNBLOCK` of that client, later in the same turn, meet a client the module had
//! already unblocked: Redis 7.0 then skips the timeout callback and the ACQUIRE never gets a
//! reply. Until before-sleep, the client is still blocked as Redis sees it, so `CLIENT UNBLOCK`
//! and disconnects take the normal callbacks, which find the answer pending here and cancel
//! it. Redis 7.0 fires before-sleep immediately before it hands module-unblocked clients their
//! replies (`moduleHandleBlockedClients`), so no command runs in between and the answer goes
//! out in the same turn. Valkey fires it after that step, so the answer goes out one (short)
//! turn later; a `CLIENT UNBLOCK` in that turn is still answered exactly once, as Valkey
//! skips a timeout for an unblocked client and drops the reply of one unblocked with an error.
//! The lock is stored for the waiter meanwhile, so nobody else can take it. A hand-off made in
//! a timer (expiry) unblocks at once: no command runs between a timer and before-sleep.
//!
//! **A grant nobody received is taken back.** Everyone answered with one grant (several only
//! when they sent the same LEASE) shares a `pylock_core::queue::Delivery`; when the last of
//! them is settled (replied to, gone, or cancelled) and none received it, a timer revokes the
//! grant, if the lock is still that grant, unchanged, and passes the lock on.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use pylock_core::queue::Delivery;
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
    pub(super) fn new(lock: LockId, id: Box<[u8]>, token: i64) -> Self {
        Self {
            lock,
            id: id.into(),
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

thread_local! {
    /// Waiters taken off their queue with their answer decided, not yet unblocked.
    static PENDING: RefCell<Vec<(Blocked, Answer)>> = const { RefCell::new(Vec::new()) };
    /// Whether a module timer's job is running now.
    static IN_TIMER: Cell<bool> = const { Cell::new(false) };
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

/// Records `answer` for `client`: unblocks it at once from a timer, else at before-sleep.
pub(super) fn answer_later(_ctx: Ctx, client: Blocked, answer: Answer) {
    if let Answer::Grant(g) = &answer {
        g.delivery.borrow_mut().join();
    }
    if IN_TIMER.with(Cell::get) {
        api::unblock::<AcquireWaiter>(client, Some(answer));
    } else {
        PENDING.with(|p| p.borrow_mut().push((client, answer)));
    }
}

/// Unblocks every client whose answer is decided (the before-sleep event).
pub(super) fn deliver_pending() {
    let pending = PENDING.with(|p| {
        let mut p = p.borrow_mut();
        if p.is_empty() {
            return None;
        }
        Some(std::mem::take(&mut *p))
    });
    for (client, answer) in pending.into_iter().flatten() {
        api::unblock::<AcquireWaiter>(client, Some(answer));
    }
}

/// Takes back the decided answer of `client`, if it was not delivered yet.
fn take_pending(client: Blocked) -> Option<Answer> {
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
            Some(Answer::Grant(g)) => {
                g.delivery.borrow_mut().received();
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
        let was_waiting = if super::forget(ctx, client) {
            true
        } else if let Some(answer) = take_pending(client) {
            // Its answer was decided but not delivered: it gets nil instead.
            if matches!(answer, Answer::Grant(_)) {
                stats::ACQUIRED.decr();
            }
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
        if super::forget(ctx, client) {
            api::unblock::<AcquireWaiter>(client, None);
        } else if let Some(answer) = take_pending(client) {
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

/// Answers every waiter of `id` with `TRYAGAIN`: this node no longer serves the lock, and a
/// retry (cluster clients retry TRYAGAIN by themselves) is redirected to the node that does.
pub(super) fn redirect_all(ctx: Ctx, id: &LockId) {
    for client in super::take_all(ctx, id) {
        answer_later(ctx, client, Answer::Moved);
    }
}
