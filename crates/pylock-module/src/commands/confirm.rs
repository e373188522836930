//! `PYLOCK.CONFIRM key lease-id [EXTEND ttl-ms] [CLAIM new-lease-id]`
//!
//! Held by that lease: the lease reply, after moving the deadline to now + ttl with EXTEND.
//! Not held: `NOTHELD`. Held by another lease: `NOTOWNED`, and the lock is untouched; held by
//! a lease claimed from this one: `CLAIMED`.
//!
//! With CLAIM, the holder's lease passes to `new-lease-id` with a new fencing token, keeping its
//! deadline (or EXTEND's); the lock is never free in between. A retry of that claim (the holder
//! is `new-lease-id`, claimed from `lease-id`) succeeds again with the same token. Watchers of
//! the old lease are answered `claimed`.
//!
//! Replication (through `effects`): EXTEND propagates the whole lease again, `PYLOCK.RESTORE key id token PXAT
//! deadline`; a claim
//! `PYLOCK.RESTORE key new-id token PXAT deadline FROM lease-id`; a plain confirm nothing.
//! Counted: `claimed`, else `extended` or `confirmed`; `notheld` or `notowned`.

use pylock_core::lease::{self, Outcome};
use pylock_core::watch::Reason;
use pylock_core::{CommandError, LeaseReply};

use crate::api::{Arg, ArgDoc, ArgType, Command, Ctx, Docs, KeyUse, Replied};
use crate::blocking;
use crate::effects;
use crate::stats;
use crate::storage::{Held, LockKey, TokenSource};

pub(super) struct Confirm;

impl Command for Confirm {
    const NAME: &'static str = pylock_core::Confirm::NAME;
    const FLAGS: &'static std::ffi::CStr = c"write fast";
    const ACL: &'static std::ffi::CStr = c"write fast";
    const DOCS: Docs = Docs {
        summary: c"Checks that lease-id holds the lock at key; EXTEND resets its TTL, CLAIM passes it to a new id",
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
            ArgDoc::option(
                c"CLAIM",
                c"new-lease-id",
                ArgType::String,
                c"take the lease over under this new id, with a new fencing token",
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
        let mut lock = LockKey::write(ctx, key);
        let held = match lock.held() {
            Ok(held) => held,
            Err(_) => return ctx.reply_error(CommandError::WrongType, Self::NAME),
        };
        let is_sem = matches!(held, Held::Sem(_));
        let (outcome, lease) = match lease::confirm(&held, &req, now, &mut TokenSource) {
            Ok(decided) => decided,
            Err(e) => return super::refuse(ctx, e, Self::NAME),
        };
        // The lease acted on: this id, or the claim's new id for a retry of that claim.
        let id = match req.claim {
            Some(to) if lease.id == to => to,
            _ => req.lease,
        };
        let (token, ttl_now) = (lease.token, lease.ttl_ms(now));
        let acted_on = lease.token;
        let counter = if req.claim.is_some() {
            &stats::CLAIMED
        } else if req.extend_ms.is_some() {
            &stats::EXTENDED
        } else {
            &stats::CONFIRMED
        };
        let reply = match outcome {
            Outcome::Claimed { token, deadline_ms } => {
                // `claim` is set whenever the rules return a claim.
                let Some(to) = req.claim else {
                    return ctx.reply_error(CommandError::Internal, Self::NAME);
                };
                match (is_sem, deadline_ms) {
                    (true, Some(at)) => {
                        effects::sem_claim(ctx, key, &mut lock, req.lease, to, token, at);
                        blocking::arm_expiry(ctx, key, &lock);
                    }
                    _ => effects::claim(ctx, key, &mut lock, req.lease, to, token, deadline_ms),
                }
                // The grant acted on ended (on a retry of the claim, the new lease, which
                // holds on, so nobody is answered).
                blocking::lease_ended(ctx, key, &lock, Some(acted_on), Reason::Claimed);
                // The claimed lease keeps the deadline, or EXTEND moves it (on a retry, too):
                // the new lease's watchers and the key's waiters are looked after then.
                if let Some(at) = deadline_ms {
                    blocking::renewed(ctx, key, to, at);
                }
                LeaseReply {
                    id: to,
                    token,
                    ttl_ms: deadline_ms.map_or(-1, |at| at.saturating_sub(now).max(0)),
                }
            }
            Outcome::Renewed { deadline_ms } => {
                if is_sem {
                    effects::sem_renew(ctx, key, &mut lock, id, deadline_ms, Some(counter));
                    blocking::arm_expiry(ctx, key, &lock);
                } else {
                    effects::renew(ctx, key, &lock, deadline_ms, Some(counter));
                }
                blocking::renewed(ctx, key, id, deadline_ms);
                LeaseReply {
                    id,
                    token,
                    ttl_ms: deadline_ms - now,
                }
            }
            _ => {
                counter.incr();
                LeaseReply {
                    id,
                    token,
                    ttl_ms: ttl_now,
                }
            }
        };
        ctx.reply_with(|out| reply.write(out))
    }
}
