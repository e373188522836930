//! `PYLOCK.ACQUIRE key ttl-ms [LEASE lease-id] [BLOCK timeout-ms]`
//!
//! Free lock: grant a new lease (server-made UUID v4 unless LEASE is given) with a fresh
//! fencing token; answer the lease reply. Held by the same LEASE: reset its TTL, keep its
//! token. Held by another lease: nil, nothing changes; with BLOCK, the client waits in the
//! lock's FIFO queue instead (see `blocking`), unless it runs inside MULTI or a script.
//!
//! Replication (through `effects`): a grant propagates `PYLOCK.RESTORE key id token PXAT
//! deadline`, a renewal the same with the new deadline, so replicas and AOF replay hold exactly the
//! primary's lease id, token and absolute deadline. Contention propagates nothing.
//!
//! Counted: `acquired` for a grant or renewal (a waiter's grant too, when it is handed over);
//! `contended` for nil, now or when a BLOCK wait ends without the lock.

use pylock_core::lease::{self, Outcome};
use pylock_core::watch::Reason;
use pylock_core::{CommandError, LeaseReply, ReplySink};

use crate::api::{Arg, ArgDoc, ArgType, Command, Ctx, Docs, KeyUse, Replied};
use crate::blocking;
use crate::effects;
use crate::stats;
use crate::storage::{LockKey, TokenSource};

pub(super) struct Acquire;

impl Command for Acquire {
    const NAME: &'static str = pylock_core::Acquire::NAME;
    const FLAGS: &'static std::ffi::CStr = c"write deny-oom fast";
    const ACL: &'static std::ffi::CStr = c"write fast";
    const DOCS: Docs = Docs {
        summary: c"Takes the lock at key for ttl-ms, or waits for it in FIFO order with BLOCK",
        since: c"0.1.0",
        complexity: c"O(1); a hand-off to waiters is O(N) in the lock's waiters",
        tips: c"nondeterministic_output",
        arity: -3,
        key: KeyUse::Update,
        args: &[
            ArgDoc::required(c"key", ArgType::Key, c""),
            ArgDoc::required(c"ttl-ms", ArgType::Integer, c"lease time in milliseconds"),
            ArgDoc::option(
                c"LEASE",
                c"lease-id",
                ArgType::String,
                c"the lease's id (1 to 128 bytes) instead of a server-made UUID",
            ),
            ArgDoc::option(
                c"BLOCK",
                c"timeout-ms",
                ArgType::Integer,
                c"wait up to this long for a held lock (0: forever)",
            ),
        ],
    };

    fn run(ctx: Ctx, args: &[Arg]) -> Replied {
        let [_, key, rest @ ..] = args else {
            return ctx.reply_error(CommandError::WrongArity, Self::NAME);
        };
        let now = ctx.now_ms();
        let req = match pylock_core::Acquire::parse(rest, now) {
            Ok(req) => req,
            Err(e) => return ctx.reply_error(e, Self::NAME),
        };

        let mut lock = LockKey::write(ctx, key);
        let Ok(mut state) = lock.state() else {
            return ctx.reply_error(CommandError::WrongType, Self::NAME);
        };
        // Waiters come first: a free lock with a queue goes to the queue's head before this
        // call is judged (the queue is normally served the moment the lock frees; this covers
        // a lock that vanished in a way no event reported). Only then is the key read again.
        // Watchers of a lease past its deadline are answered `expired` first.
        if state.is_none_or(|s| !s.is_live(now)) && blocking::has_clients(ctx, key.as_ref()) {
            if state.is_some() {
                blocking::lease_ended(ctx, key, &lock, Reason::Expired);
            }
            blocking::hand_off(ctx, key, &mut lock, now);
            let Ok(after) = lock.state() else {
                return ctx.reply_error(CommandError::WrongType, Self::NAME);
            };
            state = after;
        }
        match lease::acquire(&state, &req, now, &mut TokenSource) {
            Ok(Outcome::Granted { token, deadline_ms }) => {
                let id = effects::grant(
                    ctx,
                    key,
                    &mut lock,
                    req.lease,
                    token,
                    deadline_ms,
                    effects::GrantTo::Caller,
                );
                ctx.reply_with(|out| {
                    LeaseReply {
                        id: id.as_bytes(),
                        token,
                        ttl_ms: deadline_ms - now,
                    }
                    .write(out)
                })
            }
            Ok(Outcome::Renewed { deadline_ms }) => {
                // A renewal needs a live holder; the rules return it for no other state.
                let Some(held) = state else {
                    return ctx.reply_error(CommandError::Internal, Self::NAME);
                };
                effects::renew(ctx, key, &lock, deadline_ms, Some(&stats::ACQUIRED));
                blocking::renewed(ctx, key, deadline_ms);
                ctx.reply_with(|out| {
                    LeaseReply {
                        id: held.id,
                        token: held.token,
                        ttl_ms: deadline_ms - now,
                    }
                    .write(out)
                })
            }
            Ok(_) if req.block_ms.is_some() && ctx.flags().may_block() => {
                let holder_deadline = state.and_then(|s| s.expires_at_ms);
                blocking::block(ctx, key, &req, holder_deadline)
            }
            Ok(_) => {
                stats::CONTENDED.incr();
                ctx.reply_with(|out| out.nil())
            }
            Err(e) => ctx.reply_error(e, Self::NAME),
        }
    }
}
