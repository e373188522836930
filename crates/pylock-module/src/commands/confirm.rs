//! `PYLOCK.CONFIRM key lease-id [EXTEND ttl-ms]`
//!
//! Held by that lease: the lease reply, after moving the deadline to now + ttl with EXTEND.
//! Not held: `NOTHELD`. Held by another lease: `NOTOWNED`, and the lock is untouched.
//!
//! Replication: EXTEND propagates `PEXPIREAT key deadline`; a plain confirm propagates nothing.

use std::ffi::c_int;

use pylock_core::lease::{self, Outcome};
use pylock_core::{CommandError, Confirm, LeaseReply};

use crate::api::{raw_ok, Arg, Ctx};
use crate::stats;
use crate::storage::LockKey;

pub(super) fn run(mut ctx: Ctx, args: &[Arg]) -> c_int {
    let [_, key, rest @ ..] = args else {
        return ctx.reply_error(CommandError::WrongArity, Confirm::NAME);
    };
    let now = ctx.now_ms();
    let req = match Confirm::parse(rest, now) {
        Ok(req) => req,
        Err(e) => return ctx.reply_error(e, Confirm::NAME),
    };
    // Opened for writing even without EXTEND: a write command must not make the read-path
    // lookup (which would count keyspace hits and, on a replica, hide expired keys).
    let lock_key = LockKey::open(ctx, key, true);
    let state = match lock_key.state() {
        Ok(state) => state,
        Err(_) => return ctx.reply_error(CommandError::WrongType, Confirm::NAME),
    };
    let outcome = lease::confirm(state, &req, now);
    let (Ok(outcome), Some(held)) = (outcome, state) else {
        return super::refuse(ctx, outcome.err(), Confirm::NAME);
    };
    let ttl_ms = match outcome {
        Outcome::Renewed { deadline_ms } => {
            lock_key.set_deadline(deadline_ms);
            ctx.replicate_deadline(key, deadline_ms);
            ctx.signal_modified(key);
            stats::EXTENDED.incr();
            deadline_ms - now
        }
        _ => {
            stats::CONFIRMED.incr();
            held.ttl_ms(now)
        }
    };
    LeaseReply {
        id: held.id,
        token: held.token,
        ttl_ms,
    }
    .write(&mut ctx);
    raw_ok()
}
