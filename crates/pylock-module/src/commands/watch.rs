//! `PYLOCK.WATCH key lease-id [TIMEOUT timeout-ms]`
//!
//! Not held by that lease: the reason at once, a bulk string (`notheld`, `notowned`,
//! `claimed`). Held: the client blocks until the lease ends and is answered with why
//! (`released`, `expired`, `claimed`, `deleted`, `flushed`, `moved`, `demoted`; see
//! `blocking`), or nil when TIMEOUT passes (0 or absent: never) or `CLIENT UNBLOCK` ends it.
//! Inside MULTI or a script it never blocks: nil while held.
//!
//! Changes nothing and replicates nothing. It is flagged `write` only so that a read-only
//! replica refuses it with Redis's own `READONLY` error, as the other lease commands: a replica
//! learns of a lease's end from its primary's stream, which does not say why. Counted in
//! `watching` while blocked.

use pylock_core::lease;
use pylock_core::watch::Reason;
use pylock_core::{CommandError, ReplySink};

use crate::api::{Arg, ArgDoc, ArgType, Command, Ctx, Docs, KeyUse, Replied};
use crate::blocking;
use crate::storage::{LockKey, Stored};

pub(super) struct Watch;

impl Command for Watch {
    const NAME: &'static str = pylock_core::Watch::NAME;
    const FLAGS: &'static std::ffi::CStr = c"write";
    const ACL: &'static std::ffi::CStr = c"write";
    const DOCS: Docs = Docs {
        summary: c"Waits until lease-id stops holding the lock at key, and answers why",
        since: c"0.2.0",
        complexity: c"O(1)",
        tips: c"",
        arity: -3,
        key: KeyUse::Read,
        args: &[
            ArgDoc::required(c"key", ArgType::Key, c""),
            ArgDoc::required(c"lease-id", ArgType::String, c"the lease to watch"),
            ArgDoc::option(
                c"TIMEOUT",
                c"timeout-ms",
                ArgType::Integer,
                c"answer nil if the lease still holds after this long (0: wait forever)",
            ),
        ],
    };

    fn run(ctx: Ctx, args: &[Arg]) -> Replied {
        let [_, key, rest @ ..] = args else {
            return ctx.reply_error(CommandError::WrongArity, Self::NAME);
        };
        let req = match pylock_core::Watch::parse(rest) {
            Ok(req) => req,
            Err(e) => return ctx.reply_error(e, Self::NAME),
        };
        let now = ctx.now_ms();
        // Write mode for the lookup a write command makes (no keyspace hit counts); nothing
        // is changed.
        let lock = LockKey::write(ctx, key);
        let held = match lock.held() {
            Ok(held) => held,
            Err(_) => return ctx.reply_error(CommandError::WrongType, Self::NAME),
        };
        match lease::watch(&held, &req, now) {
            Ok(lease) if ctx.flags().may_block() => {
                // The lease's own deadline (the key's expiry may be earlier).
                let own = match lock.stored() {
                    Ok(Some(Stored::Lock(l))) => l.deadline_ms(),
                    Ok(Some(Stored::Sem(s))) => s
                        .find(req.lease)
                        .and_then(|at| s.get(at))
                        .map(|l| l.deadline_ms),
                    _ => None,
                };
                blocking::watch(ctx, key, lease, own.or(lease.expires_at_ms), req.timeout_ms)
            }
            Ok(_) => ctx.reply_nil(),
            Err(e) => match Reason::at_call(e) {
                Some(reason) => ctx.reply_with(|out| out.bulk(reason.as_str().as_bytes())),
                None => ctx.reply_error(e, Self::NAME),
            },
        }
    }
}
