//! Every change to a lock, in one place: each function stores the change, replicates it as an
//! effect, signals WATCH and counts it. Nothing else in the module writes a lock, so "replicate
//! results, not requests" holds by construction: a grant replicates the lease id, token and
//! absolute deadline it stored, never the request that led to it.
//!
//! | effect | stored | replicated | counted |
//! | --- | --- | --- | --- |
//! | [`grant`] (ACQUIRE on a free lock, every hand-off) | new lock, deadline | `PYLOCK.RESTORE … PXAT` | `acquired` |
//! | [`renew`] (same-LEASE ACQUIRE, CONFIRM EXTEND) | deadline | `PEXPIREAT` | the caller's counter |
//! | [`release`] (RELEASE) | key deleted | `DEL` | `released` |
//! | [`revoke`] (a hand-off whose client never got it) | key deleted | `DEL` | — |
//! | [`restore`] (replication stream, AOF loading) | the given lock | `PYLOCK.RESTORE` (a replica's own AOF) | — |
//!
//! Waking waiters is not an effect: callers pass a freed lock on through `blocking`.

use pylock_core::UUID_LEN;

use crate::api::{Arg, Ctx, Write};
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
            None => {
                let mut buf = [0u8; UUID_LEN];
                uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
                LeaseId::Made(buf)
            }
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Given(id) => id,
            Self::Made(buf) => buf,
        }
    }
}

/// Grants the lock at `key` to a new lease: stores it with `token` and the absolute
/// `deadline_ms`, replicates exactly that, signals WATCH and counts `acquired`. The lease id
/// is `lease`, or a UUID made here. Returns the id.
pub(crate) fn grant<'a>(
    ctx: Ctx,
    key: &Arg,
    lock: &mut LockKey<Write>,
    lease: Option<&'a [u8]>,
    token: i64,
    deadline_ms: i64,
) -> LeaseId<'a> {
    let id = LeaseId::new(lease);
    lock.store(token, id.as_bytes(), Some(deadline_ms));
    ctx.replicate_grant(key, id.as_bytes(), token, Some(deadline_ms));
    ctx.signal_modified(key);
    stats::ACQUIRED.incr();
    id
}

/// Moves the holder's deadline to `deadline_ms`, replicates it, signals WATCH and counts the
/// call in `counter`.
pub(crate) fn renew(
    ctx: Ctx,
    key: &Arg,
    lock: &LockKey<Write>,
    deadline_ms: i64,
    counter: &Counter,
) {
    lock.set_deadline(deadline_ms);
    ctx.replicate_deadline(key, deadline_ms);
    ctx.signal_modified(key);
    counter.incr();
}

/// Deletes the lock for RELEASE, replicates `DEL`, signals WATCH and counts `released`.
pub(crate) fn release(ctx: Ctx, key: &Arg, lock: &mut LockKey<Write>) {
    remove(ctx, key, lock);
    stats::RELEASED.incr();
}

/// Takes back a lease that never reached its client: as a release, but not counted as one.
pub(crate) fn revoke(ctx: Ctx, key: &Arg, lock: &mut LockKey<Write>) {
    remove(ctx, key, lock);
}

fn remove(ctx: Ctx, key: &Arg, lock: &mut LockKey<Write>) {
    lock.delete();
    ctx.replicate_delete(key);
    ctx.signal_modified(key);
}

/// Stores exactly the given lease (from the primary's stream or AOF loading), raises the token
/// high-water mark to its token, and propagates it on (a replica's own AOF learns the grant
/// from this; while loading, Redis propagates nothing).
pub(crate) fn restore(
    ctx: Ctx,
    key: &Arg,
    lock: &mut LockKey<Write>,
    id: &[u8],
    token: i64,
    deadline_ms: Option<i64>,
) {
    lock.store(token, id, deadline_ms);
    observe_token(token);
    ctx.replicate_grant(key, id, token, deadline_ms);
    ctx.signal_modified(key);
}
