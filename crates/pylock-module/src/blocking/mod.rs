//! Fair blocking acquire: per-lock FIFO queues of blocked clients, and the hand-off.
//!
//! A contended `PYLOCK.ACQUIRE … BLOCK ms` blocks its client and joins the queue of its lock,
//! keyed by database and key. Whenever the lock is found free while the queue is non-empty,
//! [`hand_off`] grants it to the queue's head on the spot ([`effects::grant`]: ACQUIRE's
//! grant, published as `pylock.handoff`) and answers the head (and any later waiter with the same LEASE) with it.
//! Because this happens inside the command or callback that freed the lock, no other client
//! can take the lock in between. What triggers a hand-off:
//!
//! - `PYLOCK.RELEASE` of the holder (inside the release itself);
//! - the holder's deadline: the module's wake-up timer fires at it ([`timers`]);
//! - any other way the key disappears (DEL, UNLINK, RENAME, eviction, expiry seen elsewhere):
//!   a keyspace notification schedules an immediate timer, since a notification callback must
//!   not write ([`events`]);
//! - any ACQUIRE of the key (it serves the queue before judging its own request).
//!
//! A waiter leaves the queue when it times out (nil reply), disconnects, or is unblocked with
//! `CLIENT UNBLOCK`. How answers reach the clients, and why grants that never reached theirs
//! are taken back, is in [`delivery`]. The queue rules themselves (FIFO, same-LEASE retries,
//! receipt, timeouts) are pure, in `pylock_core::queue`.
//!
//! | file | concern |
//! | --- | --- |
//! | `mod.rs` | the registry of queues and waiters; block, hand-off, counts |
//! | `delivery.rs` | answers: deferred unblocking, the blocked-client callbacks, revocation |
//! | `timers.rs` | the one wake-up timer for holders' deadlines and BLOCK timeouts; revocations |
//! | `events.rs` | keyspace events; the flush and swap server events |
//!
//! All of this runs on Redis's main thread: the state is thread-local.

mod delivery;
mod events;
mod timers;

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_int;

use pylock_core::lease::{self, Outcome};
use pylock_core::queue::{DeadlineId, Deadlines, WaitQueue, Waiter};
use pylock_core::Acquire;

use crate::api::{Arg, Blocked, Ctx, Replied, Timer, Write};
use crate::effects;
use crate::stats;
use crate::storage::{LockKey, TokenSource};

use delivery::{Answer, Grant};
use timers::Job;

pub(crate) use events::subscribe;

/// A lock's identity: database number and key bytes.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
struct LockId {
    db: c_int,
    key: Box<[u8]>,
}

/// The waiters of one lock, and when they are next looked after (the holder's deadline, or
/// at once after an event), as a place among the wake-ups with its Unix ms.
#[derive(Default)]
struct LockQueue {
    queue: WaitQueue<Blocked>,
    serve_at: Option<(DeadlineId, i64)>,
}

/// What the wake-up timer does for one entry that has come due.
#[derive(Debug, Clone)]
enum Wake {
    /// A waiter's BLOCK time ran out.
    Timeout(Blocked),
    /// A lock with waiters may be free: its holder's deadline, or an event.
    Serve(LockId),
}

/// A blocked client: the lock it waits for, and its place among the BLOCK timeouts.
struct Client {
    lock: LockId,
    timeout: Option<DeadlineId>,
}

#[derive(Default)]
struct Registry {
    /// Queues by database, then key (so a lookup by borrowed key bytes allocates nothing).
    queues: HashMap<c_int, HashMap<Box<[u8]>, LockQueue>>,
    clients: HashMap<Blocked, Client>,
    /// Holders' deadlines of locks with waiters, and every waiter's BLOCK timeout. One timer
    /// serves them all, set for the earliest: serving a waiter or emptying a queue stops no
    /// timer, and a hand-off with a queue left creates none while later deadlines wait.
    wakes: Deadlines<Wake>,
    wake_timer: Option<(Timer<Job>, i64)>,
}

impl Registry {
    fn queue(&self, db: c_int, key: &[u8]) -> Option<&LockQueue> {
        self.queues.get(&db)?.get(key)
    }

    fn queue_mut(&mut self, id: &LockId) -> Option<&mut LockQueue> {
        self.queues.get_mut(&id.db)?.get_mut(&id.key)
    }

    /// Removes the queue of `id` if nobody waits in it, with its wake-up.
    fn drop_if_empty(&mut self, id: &LockId) {
        let Some(by_key) = self.queues.get_mut(&id.db) else {
            return;
        };
        if !by_key.get(&id.key).is_some_and(|q| q.queue.is_empty()) {
            return;
        }
        let serve_at = by_key.remove(&id.key).and_then(|q| q.serve_at);
        if by_key.is_empty() {
            self.queues.remove(&id.db);
        }
        if let Some((place, _)) = serve_at {
            self.wakes.remove(place);
        }
    }

    /// Forgets `client`'s registration (its queue place is removed by the caller).
    fn unregister(&mut self, client: Blocked) -> Option<LockId> {
        let c = self.clients.remove(&client)?;
        if let Some(t) = c.timeout {
            self.wakes.remove(t);
        }
        stats::WAITING.decr();
        Some(c.lock)
    }
}

thread_local! {
    static REGISTRY: RefCell<Registry> = RefCell::new(Registry::default());
}

/// Clients waiting on the lock at `key` in the context's database.
pub(crate) fn count(ctx: Ctx, key: &[u8]) -> i64 {
    if stats::WAITING.get() == 0 {
        return 0; // the common case: nobody waits anywhere
    }
    REGISTRY.with(|r| {
        r.borrow()
            .queue(ctx.db(), key)
            .map_or(0, |q| q.queue.len() as i64)
    })
}

/// Whether anyone waits on `key` in the context's database.
pub(crate) fn has_waiters(ctx: Ctx, key: &[u8]) -> bool {
    count(ctx, key) > 0
}

/// Blocks the calling client until the lock at `key` is handed to it or `req.block_ms`
/// passes (0: forever). The holder's deadline is `holder_deadline_ms`, when known.
pub(crate) fn block(
    ctx: Ctx,
    key: &Arg,
    req: &Acquire<'_>,
    holder_deadline_ms: Option<i64>,
) -> Replied {
    let Some(client) = ctx.block::<delivery::AcquireWaiter>() else {
        stats::CONTENDED.incr();
        return ctx.reply_nil();
    };
    let id = LockId {
        db: ctx.db(),
        key: key.as_ref().into(),
    };
    let deadline = match req.block_ms {
        Some(ms) if ms > 0 && ms <= crate::api::MAX_TIMER_MS => {
            Some(ctx.now_ms().saturating_add(ms))
        }
        // 0, or a timeout too long for a timer (about 35,000 years): wait forever.
        _ => None,
    };
    REGISTRY.with(|r| {
        let mut r = r.borrow_mut();
        let timeout = deadline.map(|at| r.wakes.insert(at, Wake::Timeout(client)));
        r.clients.insert(
            client,
            Client {
                lock: id.clone(),
                timeout,
            },
        );
        let by_key = r.queues.entry(id.db).or_default();
        let queue = match by_key.get_mut(&id.key) {
            Some(q) => q,
            None => by_key.entry(id.key.clone()).or_default(),
        };
        queue.queue.push(Waiter {
            client,
            ttl_ms: req.ttl_ms,
            lease: req.lease.map(Into::into),
        });
    });
    stats::WAITING.incr();
    if let Some(at) = deadline {
        timers::wake_by(ctx, at);
    }
    if let Some(at) = holder_deadline_ms {
        timers::arm(ctx, &id, at);
    }
    Replied::later(&client)
}

/// Grants the lock at `key` (open for writing in `lock`, and free) to the longest waiter, and
/// answers every later waiter that asked with the same LEASE with that grant. Does nothing if
/// nobody waits. While waiters remain, they are looked after again at the new deadline.
pub(crate) fn hand_off(ctx: Ctx, key: &Arg, lock: &mut LockKey<Write>, now: i64) {
    let id = LockId {
        db: ctx.db(),
        key: key.as_ref().into(),
    };
    let taken = REGISTRY.with(|r| {
        let mut r = r.borrow_mut();
        let handoff = r.queue_mut(&id)?.queue.hand_off(now)?;
        r.unregister(handoff.head.client);
        for (w, _) in &handoff.same_lease {
            r.unregister(w.client);
        }
        r.drop_if_empty(&id);
        Some(handoff)
    });
    let Some(handoff) = taken else {
        return;
    };
    let head = &handoff.head;
    let req = Acquire {
        ttl_ms: head.ttl_ms,
        lease: head.lease.as_deref(),
        block_ms: None,
    };
    let Ok(Outcome::Granted { token, deadline_ms }) =
        lease::acquire(None, &req, now, &mut TokenSource)
    else {
        // Token space exhausted: answer nil rather than leave the clients hanging.
        delivery::answer_later(ctx, head.client, Answer::Nil);
        for (w, _) in &handoff.same_lease {
            delivery::answer_later(ctx, w.client, Answer::Nil);
        }
        return;
    };
    let lease_id = effects::grant(
        ctx,
        key,
        lock,
        req.lease,
        token,
        deadline_ms,
        effects::GrantTo::Waiter,
    );
    let grant = Grant::new(id.clone(), lease_id.as_bytes(), token);
    delivery::answer_later(
        ctx,
        head.client,
        Answer::Grant(grant.with_deadline(deadline_ms)),
    );
    // A waiter that sent the same LEASE is a retry of the same request: it holds the lock now.
    for (w, at) in &handoff.same_lease {
        effects::renew(ctx, key, lock, *at, &stats::ACQUIRED);
        delivery::answer_later(ctx, w.client, Answer::Grant(grant.with_deadline(*at)));
    }
    if let Some(at) = lock.expires_at_ms() {
        timers::arm(ctx, &id, at);
    }
}

/// Takes `client` off its queue (timed out, gone, unblocked). Returns whether it was queued.
fn forget(client: Blocked) -> bool {
    REGISTRY.with(|r| {
        let mut r = r.borrow_mut();
        let Some(id) = r.unregister(client) else {
            return false;
        };
        if let Some(q) = r.queue_mut(&id) {
            q.queue.remove(&client);
        }
        r.drop_if_empty(&id);
        true
    })
}

/// Takes every waiter of `id` off its queue (this node no longer serves the lock).
fn take_all(id: &LockId) -> Vec<Blocked> {
    REGISTRY.with(|r| {
        let mut r = r.borrow_mut();
        let clients: Vec<Blocked> = match r.queue_mut(id) {
            Some(q) => q.queue.drain().map(|w| w.client).collect(),
            None => Vec::new(),
        };
        for c in &clients {
            r.unregister(*c);
        }
        r.drop_if_empty(id);
        clients
    })
}
