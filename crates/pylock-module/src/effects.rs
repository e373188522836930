//! Every change to a lock, in one place: each function stores the change, replicates it as an
//! effect, signals WATCH and counts it. Nothing else in the module writes a lock, so "replicate
//! results, not requests" holds by construction: a grant replicates the lease id, token and
//! absolute deadline it stored, never the request that led to it.
//!
//! | effect | stored | replicated | event | counted |
//! | --- | --- | --- | --- | --- |
//! | [`grant`] (ACQUIRE on a free lock) | new lock, deadline | `PYLOCK.RESTORE … PXAT` | `pylock.acquire` | `acquired` |
//! | [`grant`] to a waiter (the lock passed to the longest waiter) | new lock, deadline | `PYLOCK.RESTORE … PXAT` | `pylock.handoff` | `acquired`, when the waiter's reply is sent (`blocking::delivery`) |
//! | [`renew`] (same-LEASE ACQUIRE, CONFIRM EXTEND) | deadline | `PYLOCK.RESTORE … PXAT [… FROM]` (the whole lease) | `pylock.extend` | the caller's counter |
//! | [`claim`] (CONFIRM … CLAIM) | the new id, token and deadline, claimed from the old id | `PYLOCK.RESTORE … PXAT … FROM` | `pylock.claim` | `claimed` |
//! | [`restore_expiry`] (a PERSIST or RESTORE left the key's expiry past the lease's deadline, or none) | the key's expiry | `PEXPIREAT` | — | — |
//! | [`release`] (RELEASE) | key deleted | `DEL` | `pylock.release` | `released` |
//! | [`revoke`] (a hand-off whose client never got it) | key deleted | `DEL` | `pylock.revoke` | — |
//! | [`restore`] (replication stream, AOF loading) | the given lock | `PYLOCK.RESTORE` (a replica's own AOF) | `pylock.restore` | — |
//!
//! A semaphore (n > 1) changes one lease at a time, and replicates that lease alone, never the
//! whole set:
//!
//! | effect | stored | replicated | event | counted |
//! | --- | --- | --- | --- | --- |
//! | [`sem_grant`] (a new lease, to a caller or a waiter) | the lease; key expiry = latest deadline | `PYLOCK.RESTORE … PXAT … LIMIT n` | `pylock.acquire` / `pylock.handoff` | `acquired` (a caller's) |
//! | [`sem_renew`] | its deadline | `PYLOCK.RESTORE … PXAT [FROM] LIMIT n` | `pylock.extend` | the caller's counter |
//! | [`sem_claim`] | the old id's place goes to the new id, new token | `PYLOCK.DROP key old`, `PYLOCK.RESTORE … FROM old LIMIT n` | `pylock.claim` | `claimed` |
//! | [`sem_end`] (release, expiry, revocation) | the lease removed; the key with its last | `PYLOCK.DROP key id` | `pylock.release` / `pylock.expire` / `pylock.revoke` | `released` (a release) |
//! | [`sem_restore`], [`drop_lease`] (replication stream, AOF loading) | as given | the same (a replica's own AOF) | `pylock.restore` | — |
//!
//! Events are keyspace notifications of the module class (`d` in `notify-keyspace-events`),
//! published after the change (`__keyspace@<db>__:<key>` carries the event name,
//! `__keyevent@<db>__:<event>` the key). A release that passes the lock on publishes
//! `pylock.release`, then `pylock.handoff`. A replica applies the replicated effects: it
//! publishes `pylock.restore` for a grant, a claim or a renewal, and Redis's own `del` and
//! `expire` (class `g`) for the rest. The module's own keyspace handler (in `blocking`) listens to classes `g`, `x`
//! and `e` only, so these events never reach it and never trigger a hand-off.
//!
//! Waking waiters and answering PYLOCK.WATCH are not effects: callers pass a freed lock on, and
//! report an ended lease, through `blocking`. ("WATCH" below is Redis's MULTI/EXEC WATCH.)

use std::ffi::CStr;

use pylock_core::UUID_LEN;

use crate::api::{Arg, Ctx, Write};
use crate::sem::{Sem, Slot};
use crate::stats::{self, Counter};
use crate::storage::{observe_token, LockKey};

/// A lease id: the caller's own, or a UUID v4 the server made, held without allocating.
pub(crate) enum LeaseId<'a> {
    Given(&'a [u8]),
    Made([u8; UUID_LEN]),
}

impl LeaseId<'_> {
    /// `lease` if given, else a new random UUID (version 4, lowercase, hyphenated).
    pub(crate) fn new(lease: Option<&[u8]>) -> LeaseId<'_> {
        match lease {
            Some(id) => LeaseId::Given(id),
            None => LeaseId::Made(hyphenated_lower(uuid::Uuid::new_v4().as_bytes())),
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Given(id) => id,
            Self::Made(buf) => buf,
        }
    }
}

/// The 36-byte text of a UUID, lowercase and hyphenated (8-4-4-4-12), as `uuid`'s
/// `hyphenated().encode_lower` writes it: a table look-up per nibble instead of its
/// per-nibble arithmetic, each byte at a fixed place: about 50 instructions fewer per grant.
fn hyphenated_lower(bytes: &[u8; 16]) -> [u8; UUID_LEN] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // Where each byte's two digits go: after the hyphens at 8, 13, 18 and 23.
    const AT: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
    let mut out = [b'-'; UUID_LEN];
    for (b, at) in bytes.iter().zip(AT) {
        out[at] = HEX[usize::from(b >> 4)];
        out[at + 1] = HEX[usize::from(b & 0x0f)];
    }
    out
}

/// The keyspace events (module class) that effects publish, one per kind of change.
pub(crate) mod event {
    use std::ffi::CStr;

    /// A new lease, granted to a `PYLOCK.ACQUIRE` call on a free lock.
    pub(crate) const ACQUIRE: &CStr = c"pylock.acquire";
    /// A new lease, granted to the longest waiter (`BLOCK`) as the lock was freed.
    pub(crate) const HANDOFF: &CStr = c"pylock.handoff";
    /// A lease's deadline moved: same-LEASE ACQUIRE, `CONFIRM … EXTEND`.
    pub(crate) const EXTEND: &CStr = c"pylock.extend";
    /// `CONFIRM … CLAIM` passed the lease to a new id.
    pub(crate) const CLAIM: &CStr = c"pylock.claim";
    /// `PYLOCK.RELEASE` removed the lock.
    pub(crate) const RELEASE: &CStr = c"pylock.release";
    /// A hand-off whose client was gone before its reply was taken back.
    pub(crate) const REVOKE: &CStr = c"pylock.revoke";
    /// A lease stored from the primary's replication stream or from AOF loading.
    pub(crate) const RESTORE: &CStr = c"pylock.restore";
    /// A semaphore's lease reached its deadline and was removed.
    pub(crate) const EXPIRE: &CStr = c"pylock.expire";
}

/// Who a new lease goes to, which is all that tells the two grants apart.
#[derive(Clone, Copy)]
pub(crate) enum GrantTo {
    /// The caller of an ACQUIRE on a free lock: publishes `pylock.acquire`.
    Caller,
    /// The longest waiter of a freed lock: publishes `pylock.handoff`.
    Waiter,
}

/// Grants the lock at `key` to a new lease: stores it with `token` and the absolute
/// `deadline_ms`, replicates exactly that, signals WATCH, publishes the grant's event and, for
/// a caller, counts `acquired` (a waiter's grant is counted when its reply is sent: a grant
/// its client never receives is taken back and not counted). The lease id is `lease`, or a UUID made here. Returns the id. ACQUIRE
/// and every hand-off grant through here.
pub(crate) fn grant<'a>(
    ctx: Ctx,
    key: &Arg,
    lock: &mut LockKey<Write>,
    lease: Option<&'a [u8]>,
    token: i64,
    deadline_ms: i64,
    to: GrantTo,
) -> LeaseId<'a> {
    let id = LeaseId::new(lease);
    lock.store(token, id.as_bytes(), Some(deadline_ms), None);
    ctx.replicate_grant(key, id.as_bytes(), token, Some(deadline_ms), None);
    announce_grant(ctx, key, to);
    id
}

/// Moves the holder's deadline to `deadline_ms`, replicates it, signals WATCH, publishes
/// `pylock.extend` and counts the call in `counter` (none: a waiter's, counted at its reply).
pub(crate) fn renew(
    ctx: Ctx,
    key: &Arg,
    lock: &LockKey<Write>,
    deadline_ms: i64,
    counter: Option<&Counter>,
) {
    lock.set_deadline(deadline_ms);
    // The whole lease, not `PEXPIREAT`: a replica (and an AOF) then holds the lease's own
    // deadline exactly, and never mistakes a client's EXPIRE, replicated verbatim, for one.
    if let Ok(Some(held)) = lock.lock() {
        ctx.replicate_grant(
            key,
            held.id(),
            held.token(),
            Some(deadline_ms),
            held.claimed_from(),
        );
    }
    ctx.signal_modified(key);
    ctx.notify(event::EXTEND, key);
    if let Some(c) = counter {
        c.incr();
    }
}

/// Passes the lease `from` (the holder) to the id `to` with the new `token` and `deadline_ms`,
/// remembering `from` as the claimed-from id; replicates exactly that, signals WATCH, publishes
/// `pylock.claim` and counts `claimed`. The lock is never free in between.
pub(crate) fn claim(
    ctx: Ctx,
    key: &Arg,
    lock: &mut LockKey<Write>,
    from: &[u8],
    to: &[u8],
    token: i64,
    deadline_ms: Option<i64>,
) {
    lock.store(token, to, deadline_ms, Some(from));
    ctx.replicate_grant(key, to, token, deadline_ms, Some(from));
    ctx.signal_modified(key);
    ctx.notify(event::CLAIM, key);
    stats::CLAIMED.incr();
}

/// Puts the key's expiry back to the lease's own deadline after a PERSIST or a RESTORE left
/// it later or removed it, and replicates it.
pub(crate) fn restore_expiry(ctx: Ctx, key: &Arg, lock: &LockKey<Write>, deadline_ms: i64) {
    lock.set_key_expiry(deadline_ms);
    ctx.replicate_deadline(key, deadline_ms);
    ctx.signal_modified(key);
}

/// Deletes the lock for RELEASE, replicates `DEL`, signals WATCH, publishes `pylock.release`
/// and counts `released`.
pub(crate) fn release(ctx: Ctx, key: &Arg, lock: &mut LockKey<Write>) {
    remove(ctx, key, lock, event::RELEASE);
    stats::RELEASED.incr();
}

/// Takes back a lease that never reached its client: as a release, but published as
/// `pylock.revoke` and not counted as one.
pub(crate) fn revoke(ctx: Ctx, key: &Arg, lock: &mut LockKey<Write>) {
    remove(ctx, key, lock, event::REVOKE);
}

fn remove(ctx: Ctx, key: &Arg, lock: &mut LockKey<Write>, event: &CStr) {
    lock.delete();
    ctx.replicate_delete(key);
    ctx.signal_modified(key);
    ctx.notify(event, key);
}

/// Stores exactly the given lease (from the primary's stream or AOF loading), raises the token
/// high-water mark to its token, propagates it on (a replica's own AOF learns the grant from
/// this; while loading, Redis propagates nothing) and publishes `pylock.restore`.
pub(crate) fn restore(
    ctx: Ctx,
    key: &Arg,
    lock: &mut LockKey<Write>,
    id: &[u8],
    token: i64,
    deadline_ms: Option<i64>,
    claimed_from: Option<&[u8]>,
) {
    lock.store(token, id, deadline_ms, claimed_from);
    observe_token(token);
    ctx.replicate_grant(key, id, token, deadline_ms, claimed_from);
    ctx.signal_modified(key);
    ctx.notify(event::RESTORE, key);
}

// ---- semaphores (n > 1) --------------------------------------------------------------------

/// Grants a new lease on the semaphore at `key` (created with `limit` if the key holds none):
/// stores it beside the live ones, keeps the key's expiry at the latest deadline, replicates
/// that one lease, signals WATCH, publishes the grant's event and, for a caller, counts
/// `acquired`. Returns the id.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sem_grant<'a>(
    ctx: Ctx,
    key: &Arg,
    lock: &mut LockKey<Write>,
    limit: u32,
    lease: Option<&'a [u8]>,
    token: i64,
    deadline_ms: i64,
    to: GrantTo,
) -> LeaseId<'a> {
    let id = LeaseId::new(lease);
    let slot = Slot {
        token,
        deadline_ms,
        id: id.as_bytes().into(),
        from: None,
    };
    match lock.sem_mut().filter(|s| s.limit() == limit) {
        Some(sem) => {
            sem.insert(slot);
            lock.sem_changed();
        }
        None => {
            let mut sem = Box::new(Sem::new(limit));
            sem.insert(slot);
            lock.store_sem(sem);
        }
    }
    ctx.replicate_sem_lease(key, id.as_bytes(), token, deadline_ms, None, limit);
    announce_grant(ctx, key, to);
    id
}

/// Moves the deadline of lease `id` of the semaphore at `key`, replicates that lease, signals
/// WATCH, publishes `pylock.extend` and counts the call in `counter`.
pub(crate) fn sem_renew(
    ctx: Ctx,
    key: &Arg,
    lock: &mut LockKey<Write>,
    id: &[u8],
    deadline_ms: i64,
    counter: Option<&Counter>,
) {
    let Some(sem) = lock.sem_mut() else {
        return;
    };
    let Some(at) = sem.find(id) else {
        return;
    };
    sem.set_deadline(at, deadline_ms);
    let limit = sem.limit();
    if let Some(l) = sem.get(at) {
        ctx.replicate_sem_lease(key, &l.id, l.token, deadline_ms, l.from.as_deref(), limit);
    }
    lock.sem_changed();
    ctx.signal_modified(key);
    ctx.notify(event::EXTEND, key);
    if let Some(c) = counter {
        c.incr();
    }
}

/// Passes lease `from` of the semaphore at `key` to the id `to` with the new `token` and
/// `deadline_ms`: the place is never free in between. Replicates the old id's removal and the
/// new lease, signals WATCH, publishes `pylock.claim` and counts `claimed`.
pub(crate) fn sem_claim(
    ctx: Ctx,
    key: &Arg,
    lock: &mut LockKey<Write>,
    from: &[u8],
    to: &[u8],
    token: i64,
    deadline_ms: i64,
) {
    let Some(sem) = lock.sem_mut() else {
        return;
    };
    if let Some(at) = sem.find(from) {
        sem.remove(at);
    }
    sem.insert(Slot {
        token,
        deadline_ms,
        id: to.into(),
        from: Some(from.into()),
    });
    let limit = sem.limit();
    lock.sem_changed();
    ctx.replicate_drop(key, from);
    ctx.replicate_sem_lease(key, to, token, deadline_ms, Some(from), limit);
    ctx.signal_modified(key);
    ctx.notify(event::CLAIM, key);
    stats::CLAIMED.incr();
}

/// How a semaphore's lease ended, for [`sem_end`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// RELEASE: published `pylock.release`, counted `released`.
    Released,
    /// Its deadline passed: `pylock.expire`.
    Expired,
    /// A hand-off whose client never got it: `pylock.revoke`.
    Revoked,
}

/// Removes lease `id` from the semaphore at `key` (the key with its last lease), replicates
/// `PYLOCK.DROP key id`, signals WATCH and publishes the event of `how`. Returns whether the
/// lease was there.
pub(crate) fn sem_end(
    ctx: Ctx,
    key: &Arg,
    lock: &mut LockKey<Write>,
    id: &[u8],
    how: Ended,
) -> bool {
    let Some(sem) = lock.sem_mut() else {
        return false;
    };
    let Some(at) = sem.find(id) else {
        return false;
    };
    sem.remove(at);
    lock.sem_changed();
    ctx.replicate_drop(key, id);
    ctx.signal_modified(key);
    ctx.notify(
        match how {
            Ended::Released => event::RELEASE,
            Ended::Expired => event::EXPIRE,
            Ended::Revoked => event::REVOKE,
        },
        key,
    );
    if how == Ended::Released {
        stats::RELEASED.incr();
    }
    true
}

/// Removes every lease of the semaphore at `key` whose deadline has come by `now_ms`, each as
/// its own replicated expiry. Returns how many.
pub(crate) fn sem_expire_due(ctx: Ctx, key: &Arg, lock: &mut LockKey<Write>, now_ms: i64) -> usize {
    let mut n = 0;
    loop {
        let Some(id) = lock.sem().and_then(|s| {
            let at = s.first_dead(now_ms)?;
            s.get(at).map(|l| Box::<[u8]>::from(&*l.id))
        }) else {
            return n;
        };
        if !sem_end(ctx, key, lock, &id, Ended::Expired) {
            return n;
        }
        n += 1;
    }
}

/// Stores exactly the given lease of a semaphore of `limit` (from the primary's stream or AOF
/// loading): beside the others when the key holds a semaphore of that n, else in a new one
/// that replaces whatever the key held. Raises the token high-water mark, propagates it on,
/// publishes `pylock.restore`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sem_restore(
    ctx: Ctx,
    key: &Arg,
    lock: &mut LockKey<Write>,
    limit: u32,
    id: &[u8],
    token: i64,
    deadline_ms: i64,
    claimed_from: Option<&[u8]>,
) {
    let slot = Slot {
        token,
        deadline_ms,
        id: id.into(),
        from: claimed_from.map(Into::into),
    };
    match lock.sem_mut().filter(|s| s.limit() == limit) {
        Some(sem) => {
            if let Some(at) = sem.find(id) {
                sem.remove(at);
            }
            sem.insert(slot);
            lock.sem_changed();
        }
        None => {
            let mut sem = Box::new(Sem::new(limit));
            sem.insert(slot);
            lock.store_sem(sem);
        }
    }
    observe_token(token);
    ctx.replicate_sem_lease(key, id, token, deadline_ms, claimed_from, limit);
    ctx.signal_modified(key);
    ctx.notify(event::RESTORE, key);
}

/// Removes lease `id` at `key` as the primary's stream or an AOF says (`PYLOCK.DROP`): from a
/// semaphore (the key with its last lease), or the lock if `id` holds it. Propagates it on.
pub(crate) fn drop_lease(ctx: Ctx, key: &Arg, lock: &mut LockKey<Write>, id: &[u8]) {
    let removed = if let Some(sem) = lock.sem_mut() {
        match sem.find(id) {
            Some(at) => {
                sem.remove(at);
                lock.sem_changed();
                true
            }
            None => false,
        }
    } else if matches!(lock.lock(), Ok(Some(l)) if l.id() == id) {
        lock.delete();
        true
    } else {
        false
    };
    if removed {
        ctx.replicate_drop(key, id);
        ctx.signal_modified(key);
    }
}

/// What every grant does after storing and replicating it, on a lock or a semaphore: signals
/// WATCH, publishes `pylock.acquire` or `pylock.handoff`, and counts a caller's grant (a
/// waiter's is counted at its reply).
fn announce_grant(ctx: Ctx, key: &Arg, to: GrantTo) {
    ctx.signal_modified(key);
    ctx.notify(
        match to {
            GrantTo::Caller => event::ACQUIRE,
            GrantTo::Waiter => event::HANDOFF,
        },
        key,
    );
    if let GrantTo::Caller = to {
        stats::ACQUIRED.incr();
    }
}
