//! `PYLOCK.ACQUIRE key ttl-ms [LEASE lease-id] [BLOCK timeout-ms]`
//!
//! Free lock: grant a new lease (server-made UUID v4 unless LEASE is given) with a fresh
//! fencing token; answer the lease reply. Held by the same LEASE: reset its TTL, keep its
//! token. Held by another lease: nil, nothing changes; with BLOCK, the client waits in the
//! lock's FIFO queue instead (see `waiters`), unless it runs inside MULTI or a script.
//!
//! Replication: a grant propagates `PYLOCK.RESTORE key id token PXAT deadline`, a renewal
//! `PEXPIREAT key deadline`, so replicas and AOF replay hold exactly the primary's lease id,
//! token and absolute deadline. Contention propagates nothing.

use std::ffi::c_int;

use pylock_core::lease::{self, Outcome};
use pylock_core::{Acquire, CommandError, LeaseReply, ReplySink, UUID_LEN};

use crate::api::{raw_ok, Arg, Ctx};
use crate::commands::TokenSource;
use crate::stats;
use crate::storage::LockKey;
use crate::waiters;

pub(super) fn run(mut ctx: Ctx, args: &[Arg]) -> c_int {
    let [_, key, rest @ ..] = args else {
        return ctx.reply_error(CommandError::WrongArity, Acquire::NAME);
    };
    let now = ctx.now_ms();
    let req = match Acquire::parse(rest, now) {
        Ok(req) => req,
        Err(e) => return ctx.reply_error(e, Acquire::NAME),
    };

    let mut lock_key = LockKey::open(ctx, key, true);
    let free = match lock_key.state() {
        Ok(state) => state.is_none_or(|s| !s.is_live(now)),
        Err(_) => return ctx.reply_error(CommandError::WrongType, Acquire::NAME),
    };
    // Waiters come first: a free lock with a queue goes to the queue's head before this call
    // is judged (the queue is normally served the moment the lock frees; this covers a lock
    // that vanished in a way no event reported).
    if free && waiters::has_waiters(ctx, key.as_ref()) {
        waiters::hand_off(ctx, key.as_ptr(), &mut lock_key, now);
    }
    let Ok(state) = lock_key.state() else {
        return ctx.reply_error(CommandError::WrongType, Acquire::NAME);
    };
    match lease::acquire(state, &req, now, &mut TokenSource) {
        Ok(Outcome::Granted { token, deadline_ms }) => {
            let mut uuid_buf = [0u8; UUID_LEN];
            let id: &[u8] = match req.lease {
                Some(id) => id,
                None => uuid::Uuid::new_v4()
                    .hyphenated()
                    .encode_lower(&mut uuid_buf)
                    .as_bytes(),
            };
            lock_key.store(token, id, Some(deadline_ms));
            ctx.replicate_grant(key, id, token, Some(deadline_ms));
            ctx.signal_modified(key);
            stats::ACQUIRED.incr();
            LeaseReply {
                id,
                token,
                ttl_ms: deadline_ms - now,
            }
            .write(&mut ctx);
        }
        Ok(Outcome::Renewed { deadline_ms }) => {
            lock_key.set_deadline(deadline_ms);
            ctx.replicate_deadline(key, deadline_ms);
            ctx.signal_modified(key);
            stats::ACQUIRED.incr();
            if let Some(held) = state {
                LeaseReply {
                    id: held.id,
                    token: held.token,
                    ttl_ms: deadline_ms - now,
                }
                .write(&mut ctx);
            }
        }
        Ok(_) if req.block_ms.is_some() && waiters::may_block(ctx) => {
            let holder_deadline = state.and_then(|s| s.expires_at_ms);
            waiters::block(ctx, key, &req, holder_deadline);
        }
        Ok(_) => {
            stats::CONTENDED.incr();
            ctx.nil();
        }
        Err(lease::TokensExhausted) => {
            return ctx.reply_error_text("ERR fencing tokens exhausted\0");
        }
    }
    raw_ok()
}
