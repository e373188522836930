//! Clients blocked on a lock: fair blocking acquire (per-lock FIFO queues of waiters, and the
//! hand-off) and PYLOCK.WATCH (watchers of one lease, answered with the reason it ended).
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
//! `CLIENT UNBLOCK`.
//!
//! **Watchers** wait on one lease (its id and token) of a lock. Whatever may have ended the
//! lease calls [`settle`] with what the key holds now and, when known, how (`Reason`); every
//! watcher whose lease no longer holds the lock is answered, and the decision itself is pure
//! (`pylock_core::watch::ended`). What reports an end:
//!
//! - the commands that end a lease, through [`lease_ended`]: RELEASE (`released`), CLAIM
//!   (`claimed`), an ACQUIRE that finds a lease past its deadline (`expired`);
//! - the lease's deadline: watchers share the lock's wake-up at the holder's deadline;
//! - keyspace events, which leave a hint on the lock (`deleted`, or for Redis's own expiry
//!   `expired` or `deleted` by the lease's deadline) and look after it from a timer, which
//!   also tells `moved` (the slot left this node) apart;
//! - a lock that any other command removes or overwrites (the data type's unlink callback,
//!   `storage::on_foreign_unlink`): `deleted`;
//! - the flush and swap events (`flushed`), and a role change to replica (`demoted`).
//!
//! How answers reach the clients, and why grants that never reached theirs are taken back, is
//! in [`delivery`]. The queue rules themselves (FIFO, same-LEASE retries, receipt, timeouts)
//! are pure, in `pylock_core::queue`.
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
use pylock_core::watch::{self, Reason, Watched};
use pylock_core::{Acquire, CommandError, LeaseState, Leases};

use crate::api::{Arg, Blocked, Ctx, Mode, Replied, Timer, Write};
use crate::effects;
use crate::stats;
use crate::storage::{Held, LockKey, Stored, TokenSource};

use delivery::{Answer, Grant};
use timers::Job;

pub(crate) use events::{server_event, subscribe};

/// A lock's identity: database number and key bytes.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
struct LockId {
    db: c_int,
    key: Box<[u8]>,
}

/// The waiters and watchers of one lock, and when they are next looked after (the holder's
/// deadline, or at once after an event), as a place among the wake-ups with its Unix ms.
#[derive(Default)]
struct LockQueue {
    queue: WaitQueue<Blocked>,
    watchers: Vec<Watcher>,
    /// How the lease was seen to end by an event, until the watchers are settled.
    hint: Option<Hint>,
    serve_at: Option<(DeadlineId, i64)>,
}

impl LockQueue {
    fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.watchers.is_empty()
    }
}

/// A client in PYLOCK.WATCH, and the lease it watches.
struct Watcher {
    client: Blocked,
    lease: Box<[u8]>,
    token: i64,
    deadline_ms: Option<i64>,
}

impl Watcher {
    fn watched(&self) -> Watched<'_> {
        Watched {
            id: &self.lease,
            token: self.token,
            deadline_ms: self.deadline_ms,
        }
    }
}

/// What an event said about the end of a lock's lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hint {
    /// Redis expired the key at this time: `expired` if the watched lease's deadline had come,
    /// else `deleted` (the key's TTL had been set earlier).
    KeyExpired(i64),
    /// The reason itself.
    Reason(Reason),
}

impl Hint {
    fn reason(self, w: &Watched<'_>) -> Reason {
        match self {
            Hint::KeyExpired(at) => w.key_expired(at),
            Hint::Reason(r) => r,
        }
    }
}

/// What the wake-up timer does for one entry that has come due.
#[derive(Debug, Clone)]
enum Wake {
    /// A waiter's BLOCK time, or a watcher's TIMEOUT, ran out.
    Timeout(Blocked),
    /// A lock with waiters may be free: its holder's deadline, or an event.
    Serve(LockId),
    /// A semaphore's earliest lease deadline: its leases that are due end (`timers`).
    Expire(LockId),
}

/// A blocked client: the lock it waits for or watches, and its place among the timeouts.
struct Client {
    lock: LockId,
    timeout: Option<DeadlineId>,
    watching: bool,
}

/// A wake-up's place among the wake-ups, and its time.
type Armed = (DeadlineId, i64);

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
    /// Semaphores whose earliest lease deadline is armed among the wake-ups, by database and
    /// key: the place among the wake-ups, and its time.
    expiries: HashMap<c_int, HashMap<Box<[u8]>, Armed>>,
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
        if !by_key.get(&id.key).is_some_and(LockQueue::is_empty) {
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

    /// Forgets `client`'s registration (its queue place or watch is removed by the caller).
    fn unregister(&mut self, client: Blocked) -> Option<(LockId, bool)> {
        let c = self.clients.remove(&client)?;
        if let Some(t) = c.timeout {
            self.wakes.remove(t);
        }
        if c.watching {
            stats::WATCHING.decr();
        } else {
            stats::WAITING.decr();
        }
        Some((c.lock, c.watching))
    }

    /// Registers `client` on `id` with an optional timeout at `deadline`, and returns the
    /// lock's entry.
    fn register(
        &mut self,
        client: Blocked,
        id: &LockId,
        deadline: Option<i64>,
        watching: bool,
    ) -> Option<&mut LockQueue> {
        let timeout = deadline.map(|at| self.wakes.insert(at, Wake::Timeout(client)));
        self.clients.insert(
            client,
            Client {
                lock: id.clone(),
                timeout,
                watching,
            },
        );
        let by_key = self.queues.entry(id.db).or_default();
        if !by_key.contains_key(&id.key) {
            by_key.insert(id.key.clone(), LockQueue::default());
        }
        by_key.get_mut(&id.key)
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

/// Whether anyone waits on or watches `key` in the context's database.
pub(crate) fn has_clients(ctx: Ctx, key: &[u8]) -> bool {
    if stats::WAITING.get() == 0 && stats::WATCHING.get() == 0 {
        return false;
    }
    REGISTRY.with(|r| r.borrow().queue(ctx.db(), key).is_some())
}

/// The longest wait a module timer can express: longer (and 0) means forever.
fn timeout_at(ctx: Ctx, ms: Option<i64>) -> Option<i64> {
    match ms {
        Some(ms) if ms > 0 && ms <= crate::api::MAX_TIMER_MS => {
            Some(ctx.now_ms().saturating_add(ms))
        }
        // 0, or a timeout too long for a timer (about 35,000 years): wait forever.
        _ => None,
    }
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
    let deadline = timeout_at(ctx, req.block_ms);
    REGISTRY.with(|r| {
        if let Some(q) = r.borrow_mut().register(client, &id, deadline, false) {
            q.queue.push(Waiter {
                client,
                ttl_ms: req.ttl_ms,
                lease: req.lease.map(Into::into),
                limit: req.limit(),
            });
        }
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

/// Blocks the calling client until the lease `held` (live, at `key`) ends or `timeout_ms`
/// passes (0 or `None`: forever). Answers nil at once when the client cannot block.
/// `own_deadline_ms` is the lease's own deadline (the key's expiry may be earlier).
pub(crate) fn watch(
    ctx: Ctx,
    key: &Arg,
    held: LeaseState<'_>,
    own_deadline_ms: Option<i64>,
    timeout_ms: Option<i64>,
) -> Replied {
    let Some(client) = ctx.block::<delivery::LeaseWatcher>() else {
        return ctx.reply_nil();
    };
    let id = LockId {
        db: ctx.db(),
        key: key.as_ref().into(),
    };
    let deadline = timeout_at(ctx, timeout_ms);
    REGISTRY.with(|r| {
        if let Some(q) = r.borrow_mut().register(client, &id, deadline, true) {
            q.watchers.push(Watcher {
                client,
                lease: held.id.into(),
                token: held.token,
                deadline_ms: own_deadline_ms,
            });
        }
    });
    stats::WATCHING.incr();
    if let Some(at) = deadline {
        timers::wake_by(ctx, at);
    }
    if let Some(at) = held.expires_at_ms {
        timers::arm(ctx, &id, at);
    }
    Replied::later(&client)
}

/// A command ended a lease of the key at `key` (`reason`: released, claimed, expired):
/// answers the watchers whose lease no longer holds it. `ended_token` names the grant that
/// ended, whose watchers get `reason`; `None` when every lease that ended did so for `reason`
/// (a semaphore's leases past their deadline).
pub(crate) fn lease_ended<M: Mode>(
    ctx: Ctx,
    key: &Arg,
    lock: &LockKey<M>,
    ended_token: Option<i64>,
    reason: Reason,
) {
    if stats::WATCHING.get() == 0 {
        return;
    }
    let id = LockId {
        db: ctx.db(),
        key: key.as_ref().into(),
    };
    let held = lock.held().unwrap_or(Held::Lock(None));
    let given = match ended_token {
        Some(token) => Given::Lease(token, reason),
        None => Given::All(reason),
    };
    settle(ctx, &id, held, Some(given));
}

/// Lease `lease` of the key renewed to `deadline_ms`: its watchers learn the deadline, which
/// tells Redis's expiry of the key at the lease's end from an earlier TTL. A renewal can also
/// bring the deadline forward (`EXTEND` to less than was left), so the key's wake-up is set
/// for it: otherwise its watchers and waiters would be looked after only at the old deadline,
/// or when Redis's own expiry cycle found the key (the contention checker's watchers saw that
/// up to 130 ms late).
pub(crate) fn renewed(ctx: Ctx, key: &Arg, lease: &[u8], deadline_ms: i64) {
    if stats::WATCHING.get() == 0 && stats::WAITING.get() == 0 {
        return;
    }
    let id = LockId {
        db: ctx.db(),
        key: key.as_ref().into(),
    };
    REGISTRY.with(|r| {
        if let Some(q) = r
            .borrow_mut()
            .queues
            .get_mut(&id.db)
            .and_then(|b| b.get_mut(&id.key))
        {
            for w in q.watchers.iter_mut().filter(|w| &*w.lease == lease) {
                w.deadline_ms = Some(deadline_ms);
            }
        }
    });
    timers::arm(ctx, &id, deadline_ms);
}

/// A reason a caller of [`settle`] knows.
#[derive(Clone, Copy)]
enum Given {
    /// Every watcher of the key whose lease has ended ended this way (the key went).
    All(Reason),
    /// The grant with this fencing token ended this way (a command ended it); watchers of
    /// other grants, older ones whose end was not looked after yet, are told what the hint or
    /// the state says.
    Lease(i64, Reason),
}

/// Answers every watcher of `id` whose lease does not hold the lock, now that the key holds
/// `held`: with the reason `given` for it if any, else with what an event hinted, else with
/// what the state tells (`pylock_core::watch::ended`). The hint is spent either way.
fn settle(ctx: Ctx, id: &LockId, held: Held<'_>, given: Option<Given>) {
    // Hints are left only on locks with watchers, so there is nothing to spend either.
    if stats::WATCHING.get() == 0 {
        return;
    }
    let now = ctx.now_ms();
    let ended: Vec<(Blocked, Reason)> = REGISTRY.with(|r| {
        let mut r = r.borrow_mut();
        let Some(q) = r.queue_mut(id) else {
            return Vec::new();
        };
        let hint = q.hint.take();
        if q.watchers.is_empty() {
            return Vec::new();
        }
        let mut ended = Vec::new();
        q.watchers.retain(|w| {
            let watched = w.watched();
            let given = match given {
                Some(Given::All(why)) => Some(why),
                Some(Given::Lease(token, why)) if token == w.token => Some(why),
                _ => None,
            }
            .or_else(|| hint.map(|h| h.reason(&watched)));
            let current = held.current_for(&w.lease, now);
            match watch::ended(&watched, current, now, given) {
                Some(why) => {
                    ended.push((w.client, why));
                    false
                }
                None => true,
            }
        });
        for (client, _) in &ended {
            r.unregister(*client);
        }
        r.drop_if_empty(id);
        ended
    });
    for (client, why) in ended {
        delivery::answer_watcher_later(ctx, client, why);
    }
}

/// Leaves `hint` on the lock of `id` for its watchers, to be spent when it is next looked
/// after. A hint already there (from an earlier event of the same turn) stands, except that
/// Redis's own expiry, which reports itself after the removal, says better why it went.
fn hint(id: &LockId, hint: Hint) {
    REGISTRY.with(|r| {
        if let Some(q) = r.borrow_mut().queue_mut(id) {
            let expiry_corrects = matches!(hint, Hint::KeyExpired(_))
                && q.hint == Some(Hint::Reason(Reason::Deleted));
            if !q.watchers.is_empty() && (q.hint.is_none() || expiry_corrects) {
                q.hint = Some(hint);
            }
        }
    });
}

/// Answers every watcher of the locks in the databases `hit` selects with `reason`, whatever
/// their keys hold (flushed or swapped databases, a server that became a replica).
fn end_all_watches(ctx: Ctx, hit: impl Fn(c_int) -> bool, reason: Reason) {
    let ended: Vec<Blocked> = REGISTRY.with(|r| {
        let mut r = r.borrow_mut();
        let r = &mut *r;
        let mut ended = Vec::new();
        let mut emptied = Vec::new();
        for (db, by_key) in r.queues.iter_mut().filter(|(db, _)| hit(**db)) {
            for (key, q) in by_key.iter_mut() {
                ended.extend(q.watchers.drain(..).map(|w| w.client));
                q.hint = None;
                if q.is_empty() {
                    emptied.push(LockId {
                        db: *db,
                        key: key.clone(),
                    });
                }
            }
        }
        for c in &ended {
            r.unregister(*c);
        }
        for id in &emptied {
            r.drop_if_empty(id);
        }
        ended
    });
    for client in ended {
        delivery::answer_watcher_later(ctx, client, reason);
    }
}

/// Serves the key before anything else is judged: on a semaphore, its leases past their
/// deadline end (each replicated as its own expiry, watchers answered `expired`); then, while
/// anyone waits, free places go to the longest waiters. A lock past its deadline with waiters
/// passes to the longest waiter likewise.
/// Whether [`serve_now`] has anything to do for a key whose leases are `held`: a semaphore
/// with a lease past its deadline, or waiters and a free place.
pub(crate) fn needs_serving(ctx: Ctx, key: &Arg, held: &Held<'_>, now: i64) -> bool {
    let dead = match held {
        Held::Sem(s) => s.sem.first_dead(now).is_some(),
        Held::Lock(_) => false,
    };
    dead || (held.live(now) < held.limit() as usize && has_clients(ctx, key.as_ref()))
}

pub(crate) fn serve_now(ctx: Ctx, key: &Arg, lock: &mut LockKey<Write>, now: i64) {
    match lock.stored() {
        Ok(Some(Stored::Sem(_))) => {
            let ended = effects::sem_expire_due(ctx, key, lock, now);
            if has_clients(ctx, key.as_ref()) {
                if ended > 0 {
                    lease_ended(ctx, key, lock, None, Reason::Expired);
                }
                hand_off(ctx, key, lock, now);
            }
        }
        Ok(_) => {
            let dead = lock.state().ok().flatten().map(|s| !s.is_live(now));
            if dead != Some(false) && has_clients(ctx, key.as_ref()) {
                if dead == Some(true) && stats::WATCHING.get() > 0 {
                    // Judged by the state: `expired` if the lease's own deadline came, else
                    // `deleted` (a TTL set earlier than it ended the key).
                    let id = LockId {
                        db: ctx.db(),
                        key: key.as_ref().into(),
                    };
                    settle(ctx, &id, lock.held().unwrap_or(Held::Lock(None)), None);
                }
                hand_off(ctx, key, lock, now);
            }
        }
        Err(_) => {}
    }
}

/// Makes sure the semaphore at `key` (if the key holds one) is looked after at its earliest
/// lease deadline, when that lease ends (`timers`). A wake-up already set no later stays; one
/// that comes early finds nothing due and is set again.
pub(crate) fn arm_expiry<M: Mode>(ctx: Ctx, key: &Arg, lock: &LockKey<M>) {
    let Some(at) = lock.sem().and_then(|s| s.earliest()) else {
        return;
    };
    arm_expiry_at(ctx, ctx.db(), key.as_ref(), at);
}

/// After loading, or on a replica just promoted: every semaphore's leases expire from the
/// timer again (a replica leaves expiry to its primary and arms none).
pub(crate) fn arm_all_expiries(ctx: Ctx) {
    if ctx.flags().is_replica() {
        return;
    }
    crate::storage::for_each_sem(ctx, |db, key, at| arm_expiry_at(ctx, db, key, at));
}

/// SWAPDB gave the semaphores of databases `a` and `b` each other's number, with no per-key
/// event: each one armed there is armed again under its new number (no keyspace walk). The
/// old entries stay and fire harmlessly: they find another semaphore, which they look after
/// and arm again, or none.
pub(crate) fn swap_expiries(ctx: Ctx, a: c_int, b: c_int) {
    if a == b || ctx.flags().is_replica() {
        return;
    }
    let moved: Vec<(c_int, Box<[u8]>, i64)> = REGISTRY.with(|r| {
        let r = r.borrow();
        [(a, b), (b, a)]
            .into_iter()
            .flat_map(|(from, to)| {
                r.expiries
                    .get(&from)
                    .into_iter()
                    .flat_map(move |m| m.iter().map(move |(key, (_, at))| (to, key.clone(), *at)))
            })
            .collect()
    });
    for (db, key, at) in moved {
        arm_expiry_at(ctx, db, &key, at);
    }
}

fn arm_expiry_at(ctx: Ctx, db: c_int, key: &[u8], at: i64) {
    let placed = REGISTRY.with(|r| {
        let mut r = r.borrow_mut();
        let r = &mut *r;
        if let Some((place, armed)) = r.expiries.get(&db).and_then(|m| m.get(key)) {
            if *armed <= at {
                return false;
            }
            r.wakes.remove(*place);
        }
        let id = LockId {
            db,
            key: key.into(),
        };
        let place = r.wakes.insert(at, Wake::Expire(id.clone()));
        r.expiries
            .entry(db)
            .or_default()
            .insert(id.key, (place, at));
        true
    });
    if placed {
        timers::wake_by(ctx, at);
    }
}

/// Forgets the expiry wake-up of `id` (it fired).
fn expiry_fired(id: &LockId) {
    REGISTRY.with(|r| {
        let mut r = r.borrow_mut();
        if let Some(m) = r.expiries.get_mut(&id.db) {
            m.remove(&id.key);
            if m.is_empty() {
                r.expiries.remove(&id.db);
            }
        }
    });
}

/// Gives the free places of the key at `key` (open for writing in `lock`) to the longest
/// waiters, in order: each is granted as its ACQUIRE would be, and every later waiter that
/// asked with the same LEASE is answered with that grant. A lock has one place; a semaphore
/// n. Stops at the first waiter that cannot have a place. While waiters remain, they are
/// looked after again at the next deadline.
pub(crate) fn hand_off(ctx: Ctx, key: &Arg, lock: &mut LockKey<Write>, now: i64) {
    let id = LockId {
        db: ctx.db(),
        key: key.as_ref().into(),
    };
    let mut settled = false;
    loop {
        let Ok(held) = lock.held() else {
            return;
        };
        // The longest waiter's request is judged by the same rule as ACQUIRE, and taken off
        // the queue (with its same-LEASE retries) only if it gets a place or an answer.
        let taken = REGISTRY.with(|r| {
            let mut r = r.borrow_mut();
            let q = r.queue_mut(&id)?;
            let head = q.queue.iter().next()?;
            let limit = head.limit;
            let req = Acquire {
                ttl_ms: head.ttl_ms,
                lease: head.lease.as_deref(),
                block_ms: None,
                limit: Some(limit),
            };
            let outcome = lease::acquire(&held, &req, now, &mut TokenSource);
            let renewed = req.lease.and_then(|l| held.lease(l, now)).map(|l| l.token);
            if matches!(outcome, Ok(Outcome::Contended)) {
                return None;
            }
            let handoff = q.queue.hand_off(now)?;
            let more = !q.queue.is_empty();
            r.unregister(handoff.head.client);
            for (w, _) in &handoff.same_lease {
                r.unregister(w.client);
            }
            r.drop_if_empty(&id);
            Some((handoff, outcome, renewed, limit, more))
        });
        let Some((handoff, outcome, renewed, limit, more)) = taken else {
            break;
        };
        // Watchers of the lease that ended are answered before a place has a new one: with
        // the hint an event left, else by the state (past its deadline: expired).
        if !settled {
            settled = true;
            settle(ctx, &id, lock.held().unwrap_or(Held::Lock(None)), None);
        }
        let head = &handoff.head;
        let lease = head.lease.as_deref();
        let everyone =
            || std::iter::once(head.client).chain(handoff.same_lease.iter().map(|(w, _)| w.client));
        let (grant, deadline_ms) = match outcome {
            Ok(Outcome::Granted { token, deadline_ms }) => {
                let lease_id = if limit == 1 {
                    effects::grant(
                        ctx,
                        key,
                        lock,
                        lease,
                        token,
                        deadline_ms,
                        effects::GrantTo::Waiter,
                    )
                } else {
                    effects::sem_grant(
                        ctx,
                        key,
                        lock,
                        limit,
                        lease,
                        token,
                        deadline_ms,
                        effects::GrantTo::Waiter,
                    )
                };
                (
                    Grant::new(id.clone(), lease_id.as_bytes(), token),
                    deadline_ms,
                )
            }
            Ok(Outcome::Renewed { deadline_ms }) => {
                // The head's LEASE holds a place already: a retry of a granted request.
                let (Some(l), Some(token)) = (lease, renewed) else {
                    return;
                };
                renew(ctx, key, lock, l, deadline_ms, limit);
                (Grant::new(id.clone(), l, token), deadline_ms)
            }
            Err(CommandError::LimitMismatch(n)) => {
                for c in everyone() {
                    delivery::answer_later(ctx, c, Answer::LimitMismatch(n));
                }
                if more {
                    continue;
                }
                break;
            }
            // Token space exhausted: answer nil rather than leave the clients hanging.
            _ => {
                for c in everyone() {
                    delivery::answer_later(ctx, c, Answer::Nil);
                }
                if more {
                    continue;
                }
                break;
            }
        };
        delivery::answer_later(
            ctx,
            head.client,
            Answer::Grant(grant.with_deadline(deadline_ms)),
        );
        // A waiter that sent the same LEASE is a retry of the same request: it holds the lease.
        for (w, at) in &handoff.same_lease {
            renew(ctx, key, lock, &grant.id, *at, limit);
            delivery::answer_later(ctx, w.client, Answer::Grant(grant.with_deadline(*at)));
        }
        if !more {
            break;
        }
    }
    if let Some(at) = lock.held().ok().and_then(|h| h.next_end()) {
        timers::arm(ctx, &id, at);
    }
    arm_expiry(ctx, key, lock);
}

/// Renews lease `lease` of the key to `deadline_ms` for a waiter (counted at its reply).
fn renew(
    ctx: Ctx,
    key: &Arg,
    lock: &mut LockKey<Write>,
    lease: &[u8],
    deadline_ms: i64,
    limit: u32,
) {
    if limit == 1 {
        effects::renew(ctx, key, lock, deadline_ms, None);
    } else {
        effects::sem_renew(ctx, key, lock, lease, deadline_ms, None);
    }
}

/// Takes `client` off its queue or watch (timed out, gone, unblocked). Returns whether it
/// was there, and whether as a watcher.
fn forget(client: Blocked) -> Option<bool> {
    REGISTRY.with(|r| {
        let mut r = r.borrow_mut();
        let (id, watching) = r.unregister(client)?;
        if let Some(q) = r.queue_mut(&id) {
            if watching {
                q.watchers.retain(|w| w.client != client);
            } else {
                q.queue.remove(&client);
            }
        }
        r.drop_if_empty(&id);
        Some(watching)
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
