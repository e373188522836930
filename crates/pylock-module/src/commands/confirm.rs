//! `PYLOCK.CONFIRM key lease-id [EXTEND ttl-ms]`
//!
//! Held by that lease: the lease reply, after moving the deadline to now + ttl with EXTEND.
//! Not held: `NOTHELD`. Held by another lease: `NOTOWNED`, and the lock is untouched.
//!
//! Replication (through `effects`): EXTEND propagates `PEXPIREAT key deadline`; a plain
//! confirm propagates nothing. Counted: `extended` or `confirmed`; `notheld` or `notowned`.

use pylock_core::lease::{self, Outcome};
use pylock_core::{CommandError, LeaseReply};

use crate::api::{Arg, ArgDoc, ArgType, Command, Ctx, Docs, KeyUse, Replied};
use crate::effects;
use crate::stats;
use crate::storage::LockKey;

pub(super) struct Confirm;

impl Command for Confirm {
    const NAME: &'static str = pylock_core::Confirm::NAME;
    const FLAGS: &'static std::ffi::CStr = c"write fast";
    const ACL: &'static std::ffi::CStr = c"write fast";
    const DOCS: Docs = Docs {
        summary: c"Checks that lease-id holds the lock at key, and with EXTEND resets its TTL",
        since: c"0.1.0",
        complexity: c"O(1)",
        tips: c"nondeterministic_output",
        arity: -3,
        key: KeyUse::Update,
        args: &[
            ArgDoc::required(c"key", ArgType::Key, c""),
            ArgDoc::required(c"lease-id", ArgType::String, c"the lease to check"),
            ArgDoc::option(
                c"EXTEND",
                c"ttl-ms",
                ArgType::Integer,
                c"set the TTL to this many milliseconds from now",
            ),
        ],
    };

    fn run(ctx: Ctx, args: &[Arg]) -> Replied {
        let [_, key, rest @ ..] = args else {
            return ctx.reply_error(CommandError::WrongArity, Self::NAME);
        };
        let now = ctx.now_ms();
        let req = match pylock_core::Confirm::parse(rest, now) {
            Ok(req) => req,
            Err(e) => return ctx.reply_error(e, Self::NAME),
        };
        // Opened for writing even without EXTEND: a write command must not make the read-path
        // lookup (which would count keyspace hits and, on a replica, hide expired keys).
        let lock = LockKey::write(ctx, key);
        let state = match lock.state() {
            Ok(state) => state,
            Err(_) => return ctx.reply_error(CommandError::WrongType, Self::NAME),
        };
        let held = match (lease::confirm(state, &req, now), state) {
            (Ok(outcome), Some(held)) => (outcome, held),
            (Err(e), _) => return super::refuse(ctx, e, Self::NAME),
            (Ok(_), None) => return super::refuse(ctx, CommandError::NotHeld, Self::NAME),
        };
        let (outcome, held) = held;
        let ttl_ms = match outcome {
            Outcome::Renewed { deadline_ms } => {
                effects::renew(ctx, key, &lock, deadline_ms, &stats::EXTENDED);
                deadline_ms - now
            }
            _ => {
                stats::CONFIRMED.incr();
                held.ttl_ms(now)
            }
        };
        ctx.reply_with(|out| {
            LeaseReply {
                id: held.id,
                token: held.token,
                ttl_ms,
            }
            .write(out)
        })
    }
}
