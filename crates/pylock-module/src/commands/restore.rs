//! `PYLOCK.RESTORE key lease-id token [PXAT unix-time-ms]` (internal)
//!
//! The effect a grant replicates, and the command an AOF rewrite emits for each lock: it stores
//! exactly the given lease id, token and absolute deadline. Only a primary's replication stream
//! and AOF loading may run it; a client gets an error, so no one can forge a lease or a token.
//! Every token it stores raises the token high-water mark, which is what keeps tokens
//! increasing on a promoted replica and after an AOF restart.

use std::ffi::c_int;

use pylock_core::int::parse_i64;
use pylock_core::MAX_LEASE_ID_LEN;
use redis_module::raw;

use crate::api::{Arg, Ctx};
use crate::storage::{observe_token, LockKey};

const NAME: &str = "pylock.restore";

pub(super) fn run(ctx: Ctx, args: &[Arg]) -> c_int {
    let trusted =
        (raw::REDISMODULE_CTX_FLAGS_REPLICATED | raw::REDISMODULE_CTX_FLAGS_LOADING) as c_int;
    if ctx.flags() & trusted == 0 {
        return ctx.reply_error_text(
            "ERR pylock.restore is internal: only replication and AOF loading may call it\0",
        );
    }
    let (key, id, token, deadline) = match args {
        [_, key, id, token] => (key, id, token, None),
        [_, key, id, token, pxat, at] if pxat.as_ref().eq_ignore_ascii_case(b"PXAT") => {
            (key, id, token, Some(at))
        }
        [_, _, _, _, _, _] => return ctx.reply_error_text("ERR syntax error\0"),
        _ => return ctx.reply_error(pylock_core::CommandError::WrongArity, NAME),
    };
    let id = id.as_ref();
    let Some(token) = parse_i64(token.as_ref()).filter(|t| *t > 0) else {
        return ctx.reply_error_text("ERR invalid fencing token\0");
    };
    let deadline = match deadline.map(|d| parse_i64(d.as_ref())) {
        None => None,
        Some(Some(at)) if at >= 0 => Some(at),
        Some(_) => {
            return ctx.reply_error_text("ERR invalid expire time in 'pylock.restore' command\0")
        }
    };
    if id.is_empty() || id.len() > MAX_LEASE_ID_LEN {
        return ctx.reply_error_text("ERR invalid lease id\0");
    }
    let mut lock_key = LockKey::open(ctx, key, true);
    lock_key.store(token, id, deadline);
    observe_token(token);
    // A replica's own AOF learns the grant from this (Redis never propagates module commands
    // verbatim); while loading, Redis propagates nothing.
    ctx.replicate_grant(key, id, token, deadline);
    ctx.signal_modified(key);
    ctx.reply_ok()
}
