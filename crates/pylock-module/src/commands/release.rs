//! `PYLOCK.RELEASE key lease-id`
//!
//! Held by that lease: delete the lock, answer 1, and hand the lock to the longest waiter. Not held: `NOTHELD`. Held by another lease:
//! `NOTOWNED`, and the other holder's lock is untouched.
//!
//! Replication: a release propagates `DEL key`; a hand-off to a waiter then propagates its
//! grant like any other.

use std::ffi::c_int;

use pylock_core::lease;
use pylock_core::{CommandError, Release, ReplySink};

use crate::api::{raw_ok, Arg, Ctx};
use crate::stats;
use crate::storage::LockKey;
use crate::waiters;

pub(super) fn run(mut ctx: Ctx, args: &[Arg]) -> c_int {
    let [_, key, rest @ ..] = args else {
        return ctx.reply_error(CommandError::WrongArity, Release::NAME);
    };
    let req = match Release::parse(rest) {
        Ok(req) => req,
        Err(e) => return ctx.reply_error(e, Release::NAME),
    };
    let now = ctx.now_ms();
    let mut lock_key = LockKey::open(ctx, key, true);
    let outcome = match lock_key.state() {
        Ok(state) => lease::release(state, &req, now),
        Err(_) => return ctx.reply_error(CommandError::WrongType, Release::NAME),
    };
    if let Err(e) = outcome {
        return super::refuse(ctx, Some(e), Release::NAME);
    }
    lock_key.delete();
    ctx.replicate_delete(key);
    ctx.signal_modified(key);
    stats::RELEASED.incr();
    // The longest waiter gets the lock before any other command can run.
    if waiters::has_waiters(ctx, key.as_ref()) {
        waiters::hand_off(ctx, key.as_ptr(), &mut lock_key, now);
    }
    ctx.int(1);
    raw_ok()
}
