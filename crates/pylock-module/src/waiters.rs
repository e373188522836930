//! Fair blocking acquire: per-lock FIFO queues of blocked clients, and the hand-off.
//!
//! A contended `PYLOCK.ACQUIRE … BLOCK ms` blocks its client (`RM_BlockClient`) and joins the
//! queue of its lock, keyed by database and key. Whenever the lock is found free while the
//! queue is non-empty, [`hand_off`] grants it to the queue's head on the spot: it stores the
//! new lease, replicates it like any grant, and unblocks that client with the lease as its
//! reply. Because this happens inside the command or callback that freed the lock, no other
//! client can take the lock in between. What triggers a hand-off:
//!
//! - `PYLOCK.RELEASE` of the holder (inside the release itself);
//! - the holder's deadline: a module timer per queue fires at the deadline;
//! - any other way the key disappears (DEL, UNLINK, RENAME, eviction, expiry seen elsewhere):
//!   a keyspace notification schedules an immediate timer, since a notification callback must
//!   not write;
//! - any ACQUIRE of the key (it serves the queue before judging its own request).
//!
//! A waiter leaves the queue when it times out (nil reply), disconnects, or is unblocked with
//! `CLIENT UNBLOCK`. BLOCK's timeout is a module timer per waiter, not Redis's own blocking
//! timeout: on Redis 7.0, a client whose Redis timeout passes after the module unblocked it
//! but before Redis delivered the unblock (same event-loop turn) is released with no reply
//! at all and hangs. With the module's own timer, the grant and the timeout are decided in
//! one place, so every waiter gets exactly one answer. A grant whose client disconnected
//! before the reply reached it is revoked and the lock passes on, so no lock stays held by a
//! lease nobody received.
//!
//! All of this runs on Redis's main thread: the state is thread-local.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::ffi::{c_int, c_void};
use std::rc::Rc;

use pylock_core::lease::{self, Outcome};
use pylock_core::{Acquire, LeaseReply, ReplySink, UUID_LEN};
use redis_module::raw;

use crate::api::{raw_ok, rm, Arg, Ctx};
use crate::stats;
use crate::storage::LockKey;

/// A lock's identity: database number and key bytes.
type LockId = (c_int, Box<[u8]>);

struct Waiter {
    bc: *mut raw::RedisModuleBlockedClient,
    /// Tells this waiter's timeout timer apart from a later waiter at the same address.
    serial: u64,
    /// The BLOCK timeout timer, if the waiter has a timeout.
    timeout: Option<raw::RedisModuleTimerID>,
    ttl_ms: i64,
    lease: Option<Box<[u8]>>,
}

#[derive(Default)]
struct Queue {
    waiters: VecDeque<Waiter>,
    /// The pending timer and the Unix ms it fires at.
    timer: Option<(raw::RedisModuleTimerID, i64)>,
}

#[derive(Default)]
struct State {
    queues: HashMap<LockId, Queue>,
    /// Which lock each blocked client waits for, to find it on timeout or disconnect.
    by_client: HashMap<usize, LockId>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
    static NEXT_SERIAL: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// BLOCK timeouts above this (about 35,000 years) wait forever: Redis computes a timer's due
/// time as now + period in µs, which must not overflow.
const MAX_TIMEOUT_MS: i64 = 1 << 50;

/// Clients waiting on all locks.
pub(crate) fn total() -> u64 {
    STATE.with(|s| s.borrow().by_client.len() as u64)
}

/// Clients waiting on the lock at `key` in the context's database.
pub(crate) fn count(ctx: Ctx, key: &[u8]) -> i64 {
    STATE.with(|s| {
        let s = s.borrow();
        if s.by_client.is_empty() {
            return 0;
        }
        s.queues
            .get(&(ctx.db(), key.into()))
            .map_or(0, |q| q.waiters.len() as i64)
    })
}

/// Whether anyone waits on `key` in the context's database. Cheap when nobody waits anywhere.
pub(crate) fn has_waiters(ctx: Ctx, key: &[u8]) -> bool {
    count(ctx, key) > 0
}

/// Whether this call may block: not inside MULTI, a script, another no-blocking context, or
/// on the replication link (a primary never sends ACQUIRE, but a replica must never block its
/// primary's stream whatever arrives).
pub(crate) fn may_block(ctx: Ctx) -> bool {
    let no = raw::REDISMODULE_CTX_FLAGS_MULTI
        | raw::REDISMODULE_CTX_FLAGS_LUA
        | raw::REDISMODULE_CTX_FLAGS_DENY_BLOCKING
        | raw::REDISMODULE_CTX_FLAGS_REPLICATED;
    ctx.flags() & no as c_int == 0
}

/// Blocks the calling client until the lock at `key` is handed to it or `block_ms` passes
/// (0: forever). The holder's deadline is `holder_deadline_ms`, when known.
pub(crate) fn block(mut ctx: Ctx, key: &Arg, req: &Acquire<'_>, holder_deadline_ms: Option<i64>) {
    // No Redis-side timeout (0): the module's own timer below ends the wait (see the module
    // docs for why). The timeout callback still serves `CLIENT UNBLOCK`.
    let bc = unsafe {
        rm!(RedisModule_BlockClient)(ctx.0, Some(on_reply), Some(on_timeout), Some(free_grant), 0)
    };
    if bc.is_null() {
        ctx.nil();
        return;
    }
    unsafe { rm!(RedisModule_SetDisconnectCallback)(bc, Some(on_disconnect)) };
    let serial = NEXT_SERIAL.with(|n| {
        let serial = n.get();
        n.set(serial.wrapping_add(1));
        serial
    });
    // Redis computes a timer's due time in µs: longer timeouts than this wait forever.
    let timeout = match req.block_ms {
        Some(ms) if ms > 0 && ms <= MAX_TIMEOUT_MS => Some(start_timer(
            ctx,
            ms,
            Job::Timeout {
                bc: bc as usize,
                serial,
            },
        )),
        _ => None,
    };
    let id: LockId = (ctx.db(), key.as_ref().into());
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        s.by_client.insert(bc as usize, id.clone());
        s.queues
            .entry(id.clone())
            .or_default()
            .waiters
            .push_back(Waiter {
                bc,
                serial,
                timeout,
                ttl_ms: req.ttl_ms,
                lease: req.lease.map(Into::into),
            });
    });
    if let Some(at) = holder_deadline_ms {
        arm(ctx, &id, at);
    }
}

/// Grants the lock at `key` (open for writing in `lock_key`, and free) to the longest waiter,
/// then answers every further waiter that asked with the same LEASE. Does nothing if nobody
/// waits. Re-arms the deadline timer while waiters remain.
pub(crate) fn hand_off(
    ctx: Ctx,
    key: *mut raw::RedisModuleString,
    lock_key: &mut LockKey,
    now: i64,
) {
    let Some(key_bytes) = string_bytes(key) else {
        return;
    };
    let id: LockId = (ctx.db(), key_bytes.into());
    let Some(head) = pop_waiter(ctx, &id, |_| true) else {
        return;
    };
    let req = Acquire {
        ttl_ms: head.ttl_ms,
        lease: head.lease.as_deref(),
        block_ms: None,
    };
    let Ok(Outcome::Granted { token, deadline_ms }) =
        lease::acquire(None, &req, now, &mut crate::commands::TokenSource)
    else {
        // Token space exhausted: answer nil rather than leave the client hanging.
        answer_later(ctx, head.bc, Answer::Nil);
        return;
    };
    let mut uuid_buf = [0u8; UUID_LEN];
    let lease_id: Box<[u8]> = match &head.lease {
        Some(l) => l.clone(),
        None => uuid::Uuid::new_v4()
            .hyphenated()
            .encode_lower(&mut uuid_buf)
            .as_bytes()
            .into(),
    };
    lock_key.store(token, &lease_id, Some(deadline_ms));
    let key_arg = Arg::from_ptr(key);
    ctx.replicate_grant(&key_arg, &lease_id, token, Some(deadline_ms));
    ctx.signal_modified(&key_arg);
    stats::ACQUIRED.incr();
    let (db, key_box) = id.clone();
    // Shared by every waiter answered with this grant: it is delivered if any of them got it.
    let delivered = Rc::new(GrantGroup::default());
    answer_later(
        ctx,
        head.bc,
        Answer::Grant(Grant {
            id: lease_id.clone(),
            token,
            deadline_ms,
            db,
            key: key_box.clone(),
            delivered: delivered.clone(),
        }),
    );
    // A waiter that sent the same LEASE is a retry of the same request: it holds the lock now.
    while let Some(same) = pop_waiter(ctx, &id, |w| w.lease.as_deref() == Some(&*lease_id)) {
        let deadline = now.saturating_add(same.ttl_ms);
        lock_key.set_deadline(deadline);
        ctx.replicate_deadline(&key_arg, deadline);
        stats::ACQUIRED.incr();
        let grant = Grant {
            id: lease_id.clone(),
            token,
            deadline_ms: deadline,
            db,
            key: key_box.clone(),
            delivered: delivered.clone(),
        };
        answer_later(ctx, same.bc, Answer::Grant(grant));
    }
    let deadline = lock_key.expires_at_ms();
    if let Some(at) = deadline {
        arm(ctx, &id, at);
    }
}

/// Removes and returns the first waiter of `id` that matches `pick`, dropping the queue when it
/// empties.
fn pop_waiter(ctx: Ctx, id: &LockId, pick: impl Fn(&Waiter) -> bool) -> Option<Waiter> {
    let waiter = STATE.with(|s| {
        let mut s = s.borrow_mut();
        let queue = s.queues.get_mut(id)?;
        let pos = queue.waiters.iter().position(pick)?;
        let waiter = queue.waiters.remove(pos)?;
        s.by_client.remove(&(waiter.bc as usize));
        Some(waiter)
    });
    if let Some(timer) = waiter.as_ref().and_then(|w| w.timeout) {
        stop_timer(ctx, timer);
    }
    drop_if_empty(ctx, id);
    waiter
}

/// Forgets a blocked client (timed out or gone). Returns whether it was queued.
fn forget(ctx: Ctx, bc: *mut raw::RedisModuleBlockedClient) -> bool {
    let id = STATE.with(|s| s.borrow_mut().by_client.remove(&(bc as usize)));
    let Some(id) = id else { return false };
    let timer = STATE.with(|s| {
        let mut s = s.borrow_mut();
        let q = s.queues.get_mut(&id)?;
        let pos = q.waiters.iter().position(|w| w.bc == bc)?;
        q.waiters.remove(pos)?.timeout
    });
    if let Some(timer) = timer {
        stop_timer(ctx, timer);
    }
    drop_if_empty(ctx, &id);
    true
}

fn drop_if_empty(ctx: Ctx, id: &LockId) {
    let timer = STATE.with(|s| {
        let mut s = s.borrow_mut();
        match s.queues.get(id) {
            Some(q) if q.waiters.is_empty() => s.queues.remove(id).and_then(|q| q.timer),
            _ => None,
        }
    });
    if let Some((timer, _)) = timer {
        stop_timer(ctx, timer);
    }
}

// ---- timers ---------------------------------------------------------------------------------

/// What a timer does when it fires.
enum Job {
    /// Hand the lock to its waiters if it is free (else re-arm at the holder's deadline).
    Serve(LockId),
    /// A grant never reached its client: take it back if it still holds the lock, unchanged
    /// since (same deadline), and no other waiter answered with it received it.
    Revoke {
        lock: LockId,
        lease: Box<[u8]>,
        token: i64,
        deadline_ms: i64,
        delivered: Rc<GrantGroup>,
    },
    /// A waiter's BLOCK time ran out: answer nil if it still waits.
    Timeout { bc: usize, serial: u64 },
    /// Unblock the clients whose answers are decided (see [`answer_later`]).
    Deliver,
}

/// Makes sure the queue of `id` has a timer firing no later than `at_ms`.
fn arm(ctx: Ctx, id: &LockId, at_ms: i64) {
    let current = STATE.with(|s| s.borrow().queues.get(id).map(|q| q.timer));
    let Some(current) = current else { return }; // nobody waits
    if let Some((_, fires)) = current {
        if fires <= at_ms {
            return;
        }
    }
    if let Some((timer, _)) = current {
        stop_timer(ctx, timer);
    }
    // At `now == deadline` the lease rules already count the lock as free (Redis itself
    // expires the key a millisecond later), so the timer fires at the deadline itself.
    // Clamped like BLOCK timeouts: Redis computes a timer's due time as now + period in µs,
    // and an overflowing one would sort first and stall every module timer. `serve` re-arms
    // when the timer fires before the deadline.
    let period = at_ms.saturating_sub(ctx.now_ms()).clamp(0, MAX_TIMEOUT_MS);
    let timer = start_timer(ctx, period, Job::Serve(id.clone()));
    STATE.with(|s| {
        if let Some(q) = s.borrow_mut().queues.get_mut(id) {
            q.timer = Some((timer, at_ms));
        }
    });
}

fn start_timer(ctx: Ctx, period_ms: i64, job: Job) -> raw::RedisModuleTimerID {
    let data = Box::into_raw(Box::new(job)).cast::<c_void>();
    unsafe { rm!(RedisModule_CreateTimer)(ctx.0, period_ms, Some(on_timer), data) }
}

fn stop_timer(ctx: Ctx, timer: raw::RedisModuleTimerID) {
    let mut data: *mut c_void = std::ptr::null_mut();
    let stopped = unsafe { rm!(RedisModule_StopTimer)(ctx.0, timer, &mut data) };
    if stopped == raw::REDISMODULE_OK as c_int && !data.is_null() {
        drop(unsafe { Box::from_raw(data.cast::<Job>()) });
    }
}

unsafe extern "C" fn on_timer(ctx: *mut raw::RedisModuleCtx, data: *mut c_void) {
    if data.is_null() {
        return;
    }
    let job = *Box::from_raw(data.cast::<Job>());
    let ctx = Ctx(ctx);
    IN_TIMER.with(|t| t.set(true));
    crate::commands::guard(ctx, "timer", || match job {
        Job::Serve(id) if ctx.flags() & raw::REDISMODULE_CTX_FLAGS_SLAVE as c_int != 0 => {
            STATE.with(|s| {
                if let Some(q) = s.borrow_mut().queues.get_mut(&id) {
                    q.timer = None;
                }
            });
        }
        Job::Serve(id) => {
            STATE.with(|s| {
                if let Some(q) = s.borrow_mut().queues.get_mut(&id) {
                    q.timer = None;
                }
            });
            serve(ctx, &id);
        }
        // After a role change this server is a replica: its primary decides the lock now.
        Job::Revoke { .. } if ctx.flags() & raw::REDISMODULE_CTX_FLAGS_SLAVE as c_int != 0 => {}
        Job::Revoke {
            lock,
            lease,
            token,
            deadline_ms,
            delivered,
        } => revoke(ctx, &lock, &lease, token, deadline_ms, delivered),
        Job::Timeout { bc, serial } => time_out(ctx, bc, serial),
        Job::Deliver => deliver(),
    });
    IN_TIMER.with(|t| t.set(false));
}

/// Ends the wait of the blocked client `bc` with nil, if it is still the waiter `serial`.
fn time_out(ctx: Ctx, bc: usize, serial: u64) {
    let waiting = STATE.with(|s| {
        let mut s = s.borrow_mut();
        let s = &mut *s;
        let q = s.by_client.get(&bc).and_then(|id| s.queues.get_mut(id))?;
        let w = q.waiters.iter_mut().find(|w| w.bc as usize == bc)?;
        // This timer has fired: it must not be stopped again.
        w.timeout = None;
        Some(w.serial == serial)
    });
    let bc = bc as *mut raw::RedisModuleBlockedClient;
    if waiting == Some(true) && forget(ctx, bc) {
        // The reply callback answers nil and counts the call as contended.
        unblock(bc, None);
    }
}

/// Opens the lock of `id` and hands it over if it is free; otherwise waits for its deadline.
fn serve(ctx: Ctx, id: &LockId) {
    if !STATE.with(|s| s.borrow().queues.contains_key(id)) {
        return;
    }
    if writes_paused() {
        arm(ctx, id, ctx.now_ms().saturating_add(PAUSE_POLL_MS));
        return;
    }
    with_key(ctx, id, |ctx, key, lock_key| {
        let now = ctx.now_ms();
        match lock_key.state() {
            Ok(Some(held)) if held.is_live(now) => {
                if let Some(at) = held.expires_at_ms {
                    arm(ctx, id, at);
                }
            }
            Ok(_) if serves_key(ctx, key) => hand_off(ctx, key, lock_key, now),
            Ok(_) => redirect_all(ctx, id),
            // Someone put another type at the key: nobody can get this lock; let waiters time out.
            Err(_) => {}
        }
    });
}

/// How often a timer retries a hand-off or a revocation while writes are paused.
const PAUSE_POLL_MS: i64 = 10;

/// Whether writes are paused (`CLIENT PAUSE WRITE` or `ALL`, or a failover's pause). Timers
/// must not write then: Redis holds back writes and key expiry until the pause ends, and on
/// Redis 7.0 storing over a key whose expiry the pause held back fails an assertion in
/// `dbAdd` and aborts the server.
fn writes_paused() -> bool {
    // SAFETY: reads server state; called on the main thread from a timer callback.
    unsafe { raw::RedisModule_AvoidReplicaTraffic }.is_some_and(|f| unsafe { f() } != 0)
}

/// Whether this node serves `key`. Outside a cluster, always. In a cluster, a timer or event
/// may fire after the key's slot moved away (or while it is migrating and the key has left):
/// a grant here would then be a second lock beside the one on the new node. `RM_Call` applies
/// the cluster's own routing check, so a cheap read tells.
fn serves_key(ctx: Ctx, key: *mut raw::RedisModuleString) -> bool {
    if ctx.flags() & raw::REDISMODULE_CTX_FLAGS_CLUSTER as c_int == 0 {
        return true;
    }
    let reply = unsafe { rm!(RedisModule_Call)(ctx.0, c"EXISTS".as_ptr(), c"s".as_ptr(), key) };
    if reply.is_null() {
        return false;
    }
    unsafe { rm!(RedisModule_FreeCallReply)(reply) };
    true
}

/// Answers every waiter of `id` with `TRYAGAIN`: this node no longer serves the lock, and a
/// retry (cluster clients retry TRYAGAIN by themselves) is redirected to the node that does.
fn redirect_all(ctx: Ctx, id: &LockId) {
    while let Some(waiter) = pop_waiter(ctx, id, |_| true) {
        answer_later(ctx, waiter.bc, Answer::Moved);
    }
}

fn revoke(
    ctx: Ctx,
    id: &LockId,
    lease: &[u8],
    token: i64,
    deadline_ms: i64,
    delivered: Rc<GrantGroup>,
) {
    if delivered.delivered.get() {
        return;
    }
    if writes_paused() {
        let job = Job::Revoke {
            lock: id.clone(),
            lease: lease.into(),
            token,
            deadline_ms,
            delivered,
        };
        start_timer(ctx, PAUSE_POLL_MS, job);
        return;
    }
    with_key(ctx, id, |ctx, key, lock_key| {
        let ours = matches!(lock_key.lock(), Ok(Some(l)) if l.token() == token && l.id() == lease);
        // A renewal since the grant means a client holds the lease after all.
        if !ours || lock_key.expires_at_ms() != Some(deadline_ms) {
            return;
        }
        lock_key.delete();
        let key_arg = Arg::from_ptr(key);
        ctx.replicate_delete(&key_arg);
        ctx.signal_modified(&key_arg);
        let now = ctx.now_ms();
        if serves_key(ctx, key) {
            hand_off(ctx, key, lock_key, now);
        } else {
            redirect_all(ctx, id);
        }
    });
}

/// Runs `f` with the key of `id` open for writing, in its database.
fn with_key(ctx: Ctx, id: &LockId, f: impl FnOnce(Ctx, *mut raw::RedisModuleString, &mut LockKey)) {
    let (db, key) = id;
    unsafe { rm!(RedisModule_SelectDb)(ctx.0, *db) };
    let name = unsafe { rm!(RedisModule_CreateString)(ctx.0, key.as_ptr().cast(), key.len()) };
    if name.is_null() {
        return;
    }
    {
        let mut lock_key = LockKey::open(ctx, &Arg::from_ptr(name), true);
        f(ctx, name, &mut lock_key);
    }
    unsafe { rm!(RedisModule_FreeString)(ctx.0, name) };
}

// ---- blocked-client callbacks ---------------------------------------------------------------

/// What an unblocked waiter is answered with.
enum Answer {
    /// The lock was handed to it.
    Grant(Grant),
    /// This node no longer serves the lock's slot: `TRYAGAIN`.
    Moved,
    /// No lease after all (the token space is exhausted): nil, like a timeout.
    Nil,
}

/// A lease handed to a waiter.
struct Grant {
    id: Box<[u8]>,
    token: i64,
    deadline_ms: i64,
    db: c_int,
    key: Box<[u8]>,
    /// Shared by every waiter answered with this grant (same LEASE).
    delivered: Rc<GrantGroup>,
}

/// The waiters answered with one grant (several only when they sent the same LEASE). The
/// grant is taken back only when none of them received it, decided once the last of them is
/// settled (replied to, gone, or unblocked otherwise).
#[derive(Default)]
struct GrantGroup {
    delivered: Cell<bool>,
    in_flight: Cell<u32>,
}

impl GrantGroup {
    fn join(&self) {
        self.in_flight.set(self.in_flight.get() + 1);
    }

    /// One member settled; true when it was the last and nobody received the grant.
    fn settle(&self) -> bool {
        let left = self.in_flight.get().saturating_sub(1);
        self.in_flight.set(left);
        left == 0 && !self.delivered.get()
    }
}

thread_local! {
    /// Waiters taken off their queue with their answer decided, not yet unblocked.
    static PENDING: RefCell<HashMap<usize, Answer>> = RefCell::new(HashMap::new());
    /// Whether a `Job::Deliver` timer is scheduled.
    static DELIVERY_SCHEDULED: Cell<bool> = const { Cell::new(false) };
    /// Whether a module timer's job is running now.
    static IN_TIMER: Cell<bool> = const { Cell::new(false) };
}

/// Records `answer` for the blocked client `bc` and unblocks it from a timer, not here.
///
/// A hand-off made inside a command (RELEASE, or an ACQUIRE that serves the queue) would
/// otherwise unblock the client in the middle of the event loop's command processing, and a
/// `CLIENT UNBLOCK` of it in the same turn would meet a client the module already unblocked:
/// Redis 7.0 then skips the timeout callback and the ACQUIRE never gets a reply. Until the
/// timer runs, the client is still blocked as Redis sees it, so `CLIENT UNBLOCK` and
/// disconnects take the normal callbacks, which find the answer here and cancel it. Between a
/// timer and the next `beforeSleep` (where Redis sends the reply) no command runs, so the
/// delivery itself cannot race. The lock is already stored for the waiter meanwhile, so
/// nobody else can take it. A hand-off made in a timer (expiry) is unblocked at once for the
/// same reason: waiting for another timer would cost a millisecond of Redis's timer tick.
fn answer_later(ctx: Ctx, bc: *mut raw::RedisModuleBlockedClient, answer: Answer) {
    if let Answer::Grant(g) = &answer {
        g.delivered.join();
    }
    if IN_TIMER.with(Cell::get) {
        unblock(bc, Some(answer));
        return;
    }
    PENDING.with(|p| p.borrow_mut().insert(bc as usize, answer));
    if !DELIVERY_SCHEDULED.with(Cell::get) {
        DELIVERY_SCHEDULED.with(|d| d.set(true));
        start_timer(ctx, 0, Job::Deliver);
    }
}

/// Unblocks every client whose answer is decided.
fn deliver() {
    DELIVERY_SCHEDULED.with(|d| d.set(false));
    let pending: Vec<(usize, Answer)> = PENDING.with(|p| p.borrow_mut().drain().collect());
    for (bc, answer) in pending {
        unblock(bc as *mut raw::RedisModuleBlockedClient, Some(answer));
    }
}

/// Takes back the decided answer of `bc`, if it was not delivered yet.
fn take_pending(bc: *mut raw::RedisModuleBlockedClient) -> Option<Answer> {
    PENDING.with(|p| p.borrow_mut().remove(&(bc as usize)))
}

/// A decided answer that will never be delivered: a grant in it is revoked (unless another
/// waiter answered with the same grant received it).
fn cancel(ctx: Ctx, answer: Answer) {
    if let Answer::Grant(g) = answer {
        if !g.delivered.settle() {
            return;
        }
        start_timer(
            ctx,
            0,
            Job::Revoke {
                lock: (g.db, g.key),
                lease: g.id,
                token: g.token,
                deadline_ms: g.deadline_ms,
                delivered: g.delivered,
            },
        );
    }
}

fn unblock(bc: *mut raw::RedisModuleBlockedClient, answer: Option<Answer>) {
    let privdata = answer.map_or(std::ptr::null_mut(), |a| {
        Box::into_raw(Box::new(a)).cast::<c_void>()
    });
    unsafe { rm!(RedisModule_UnblockClient)(bc, privdata) };
}

/// Replies to a client the lock was handed to.
unsafe extern "C" fn on_reply(
    ctx: *mut raw::RedisModuleCtx,
    _argv: *mut *mut raw::RedisModuleString,
    _argc: c_int,
) -> c_int {
    let mut ctx = Ctx(ctx);
    let answer = rm!(RedisModule_GetBlockedClientPrivateData)(ctx.0).cast::<Answer>();
    match answer.as_mut() {
        Some(Answer::Moved) => {
            ctx.reply_error_text("TRYAGAIN this node no longer serves the lock's slot\0");
        }
        Some(Answer::Grant(g)) => {
            g.delivered.delivered.set(true);
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
    raw_ok()
}

/// BLOCK ran out, or `CLIENT UNBLOCK` without ERROR: nil, and leave the queue.
unsafe extern "C" fn on_timeout(
    ctx: *mut raw::RedisModuleCtx,
    _argv: *mut *mut raw::RedisModuleString,
    _argc: c_int,
) -> c_int {
    let mut ctx = Ctx(ctx);
    crate::commands::guard(ctx, "timeout", || {
        let bc = rm!(RedisModule_GetBlockedClientHandle)(ctx.0);
        // Queued, or taken off the queue with an answer not yet delivered; a client the
        // module already unblocked never reaches this callback.
        let was_waiting = if forget(ctx, bc) {
            true
        } else if let Some(answer) = take_pending(bc) {
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
            rm!(RedisModule_UnblockClient)(bc, std::ptr::null_mut());
        }
    });
    raw_ok()
}

/// The client went away while waiting (or `CLIENT UNBLOCK … ERROR`): leave the queue.
unsafe extern "C" fn on_disconnect(
    ctx: *mut raw::RedisModuleCtx,
    bc: *mut raw::RedisModuleBlockedClient,
) {
    let ctx = Ctx(ctx);
    crate::commands::guard(ctx, "disconnect", || {
        if forget(ctx, bc) {
            rm!(RedisModule_UnblockClient)(bc, std::ptr::null_mut());
        } else if let Some(answer) = take_pending(bc) {
            // Decided but not delivered: take the grant back.
            cancel(ctx, answer);
            rm!(RedisModule_UnblockClient)(bc, std::ptr::null_mut());
        }
    });
}

/// Frees a grant; one that never reached its client is revoked so the lock passes on.
unsafe extern "C" fn free_grant(ctx: *mut raw::RedisModuleCtx, privdata: *mut c_void) {
    if privdata.is_null() {
        return;
    }
    let Answer::Grant(grant) = *Box::from_raw(privdata.cast::<Answer>()) else {
        return;
    };
    if grant.delivered.settle() {
        let lock = (grant.db, grant.key);
        let ctx = Ctx(ctx);
        crate::commands::guard(ctx, "free", || {
            start_timer(
                ctx,
                0,
                Job::Revoke {
                    lock,
                    lease: grant.id,
                    token: grant.token,
                    deadline_ms: grant.deadline_ms,
                    delivered: grant.delivered,
                },
            );
        });
    }
}

// ---- keyspace events ------------------------------------------------------------------------

/// Subscribes to the events by which a lock can vanish without a PYLOCK command.
pub(crate) fn subscribe(ctx: *mut raw::RedisModuleCtx) -> Result<(), String> {
    let types = raw::REDISMODULE_NOTIFY_GENERIC
        | raw::REDISMODULE_NOTIFY_EXPIRED
        | raw::REDISMODULE_NOTIFY_EVICTED;
    let status = unsafe {
        rm!(RedisModule_SubscribeToKeyspaceEvents)(ctx, types as c_int, Some(on_keyspace_event))
    };
    if status == raw::REDISMODULE_OK as c_int {
        Ok(())
    } else {
        Err("could not subscribe to keyspace events".into())
    }
}

unsafe extern "C" fn on_keyspace_event(
    ctx: *mut raw::RedisModuleCtx,
    _type: c_int,
    _event: *const std::ffi::c_char,
    key: *mut raw::RedisModuleString,
) -> c_int {
    // The common case costs one thread-local read: nobody waits anywhere.
    if total() == 0 {
        return raw_ok();
    }
    let ctx = Ctx(ctx);
    let Some(key) = string_bytes(key) else {
        return raw_ok();
    };
    let id: LockId = (ctx.db(), key.into());
    crate::commands::guard(ctx, "keyspace event", || {
        // Writing from a notification is not allowed: serve from a timer that fires at once.
        if STATE.with(|s| s.borrow().queues.contains_key(&id)) {
            arm(ctx, &id, i64::MIN);
        }
    });
    raw_ok()
}

fn string_bytes<'a>(s: *mut raw::RedisModuleString) -> Option<&'a [u8]> {
    if s.is_null() {
        return None;
    }
    // SAFETY: Redis keeps the string alive for the callback or command that handed it to us,
    // and no caller keeps the slice beyond that.
    Some(unsafe { crate::api::string_bytes(s) })
}
