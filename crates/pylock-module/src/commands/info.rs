//! `PYLOCK.INFO key`
//!
//! Not held: nil. Held: `lease <id> token <int> ttl <ms> waiters <int>`. A read: it answers on
//! read-only replicas too, where a lease past its deadline reads as free.

use std::ffi::c_int;

use pylock_core::reply::InfoReply;
use pylock_core::{CommandError, Info, LeaseReply, ReplySink};

use crate::api::{raw_ok, Arg, Ctx};
use crate::storage::LockKey;
use crate::waiters;

pub(super) fn run(mut ctx: Ctx, args: &[Arg]) -> c_int {
    let [_, key, rest @ ..] = args else {
        return ctx.reply_error(CommandError::WrongArity, Info::NAME);
    };
    if let Err(e) = Info::parse(rest) {
        return ctx.reply_error(e, Info::NAME);
    }
    let now = ctx.now_ms();
    let lock_key = LockKey::open(ctx, key, false);
    match lock_key.state() {
        Err(_) => return ctx.reply_error(CommandError::WrongType, Info::NAME),
        Ok(Some(held)) if held.is_live(now) => {
            let lease = LeaseReply {
                id: held.id,
                token: held.token,
                ttl_ms: held.ttl_ms(now),
            };
            InfoReply {
                lease,
                waiters: waiters::count(ctx, key.as_ref()),
            }
            .write(&mut ctx);
        }
        Ok(_) => ctx.nil(),
    }
    raw_ok()
}
