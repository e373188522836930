//! `PYLOCK.RELEASE key lease-id`
//!
//! Held by that lease: delete the lock, answer 1, answer its watchers `released`, and hand the
//! lock to the longest waiter.
//! Not held: `NOTHELD`. Held by another lease: `NOTOWNED`, and the other holder's lock is
//! untouched.
//!
//! Replication (through `effects`): a release propagates `DEL key`; a hand-off to a waiter
//! then propagates its grant like any other. Counted: `released`; `notheld` or `notowned`.

use pylock_core::lease;
use pylock_core::watch::Reason;
use pylock_core::{CommandError, ReplySink};

use crate::api::{Arg, ArgDoc, ArgType, Command, Ctx, Docs, KeyUse, Replied};
use crate::blocking;
use crate::effects;
use crate::storage::{Held, LockKey};

pub(super) struct Release;

impl Command for Release {
    const NAME: &'static str = pylock_core::Release::NAME;
    const FLAGS: &'static std::ffi::CStr = c"write fast";
    const ACL: &'static std::ffi::CStr = c"write fast";
    const DOCS: Docs = Docs {
        summary: c"Releases the lock at key if lease-id holds it, passing it to the longest waiter",
        since: c"0.1.0",
        complexity: c"O(1); a hand-off to waiters is O(N) in the lock's waiters",
        tips: c"",
        arity: 3,
        key: KeyUse::Update,
        args: &[
            ArgDoc::required(c"key", ArgType::Key, c""),
            ArgDoc::required(c"lease-id", ArgType::String, c"the lease to release"),
        ],
    };

    fn run(ctx: Ctx, args: &[Arg]) -> Replied {
        let [_, key, rest @ ..] = args else {
            return ctx.reply_error(CommandError::WrongArity, Self::NAME);
        };
        let req = match pylock_core::Release::parse(rest) {
            Ok(req) => req,
            Err(e) => return ctx.reply_error(e, Self::NAME),
        };
        let now = ctx.now_ms();
        let mut lock = LockKey::write(ctx, key);
        let held = match lock.held() {
            Ok(held) => held,
            Err(_) => return ctx.reply_error(CommandError::WrongType, Self::NAME),
        };
        let is_sem = matches!(held, Held::Sem(_));
        if let Err(e) = lease::release(&held, &req, now) {
            return super::refuse(ctx, e, Self::NAME);
        }
        // The grant released: a release is allowed only for a live lease of this id.
        let token = pylock_core::Leases::lease(&held, req.lease, now).map(|l| l.token);
        if is_sem {
            effects::sem_end(ctx, key, &mut lock, req.lease, effects::Ended::Released);
        } else {
            effects::release(ctx, key, &mut lock);
        }
        // Its watchers learn of it, and the longest waiter gets the freed place, before any
        // other command can run.
        if blocking::has_clients(ctx, key.as_ref()) {
            blocking::lease_ended(ctx, key, &lock, token, Reason::Released);
            blocking::hand_off(ctx, key, &mut lock, now);
        }
        ctx.reply_with(|out| out.int(1))
    }
}
