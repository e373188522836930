//! `PYLOCK.ACQUIRE key ttl-ms [LEASE lease-id] [BLOCK timeout-ms] [LIMIT n]`
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
//! With `LIMIT n` (n > 1) the key is a semaphore: up to n live leases, each with its own id,
//! token and deadline; a grant or renewal replicates that one lease (`… LIMIT n`). Another n
//! than the key's, while a lease lives: `LIMITMISMATCH`, nothing changes.
//!
//! Counted: `acquired` for a grant or renewal (a waiter's grant too, when it is handed over);
//! `contended` for nil, now or when a BLOCK wait ends without the lock.

use pylock_core::lease::{self, Outcome};
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
            ArgDoc::option(
                c"LIMIT",
                c"n",
                ArgType::Integer,
                c"admit up to n leases at once (a semaphore; 1 to 100000, default 1)",
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
        let Ok(held) = lock.held() else {
            return ctx.reply_error(CommandError::WrongType, Self::NAME);
        };
        // Leases past their deadline end first (each as its own expiry, on a semaphore), and
        // free places go to the waiters, before this call is judged (the queue is normally
        // served the moment a place frees; this covers a key that vanished in a way no event
        // reported, and a deadline whose timer has not fired yet).
        let held = if blocking::needs_serving(ctx, key, &held, now) {
            blocking::serve_now(ctx, key, &mut lock, now);
            let Ok(held) = lock.held() else {
                return ctx.reply_error(CommandError::WrongType, Self::NAME);
            };
            held
        } else {
            held
        };
        let outcome = lease::acquire(&held, &req, now, &mut TokenSource);
        let next_end = held.next_end();
        let renewed_token = req
            .lease
            .and_then(|id| pylock_core::Leases::lease(&held, id, now))
            .map(|l| l.token);
        let limit = req.limit();
        match outcome {
            Ok(Outcome::Granted { token, deadline_ms }) => {
                let id = if limit == 1 {
                    effects::grant(
                        ctx,
                        key,
                        &mut lock,
                        req.lease,
                        token,
                        deadline_ms,
                        effects::GrantTo::Caller,
                    )
                } else {
                    let id = effects::sem_grant(
                        ctx,
                        key,
                        &mut lock,
                        limit,
                        req.lease,
                        token,
                        deadline_ms,
                        effects::GrantTo::Caller,
                    );
                    blocking::arm_expiry(ctx, key, &lock);
                    id
                };
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
                // A renewal needs a live lease of that id; the rules return it for no other.
                let (Some(id), Some(token)) = (req.lease, renewed_token) else {
                    return ctx.reply_error(CommandError::Internal, Self::NAME);
                };
                if limit == 1 {
                    effects::renew(ctx, key, &lock, deadline_ms, Some(&stats::ACQUIRED));
                } else {
                    effects::sem_renew(
                        ctx,
                        key,
                        &mut lock,
                        id,
                        deadline_ms,
                        Some(&stats::ACQUIRED),
                    );
                    blocking::arm_expiry(ctx, key, &lock);
                }
                blocking::renewed(ctx, key, id, deadline_ms);
                ctx.reply_with(|out| {
                    LeaseReply {
                        id,
                        token,
                        ttl_ms: deadline_ms - now,
                    }
                    .write(out)
                })
            }
            Ok(_) if req.block_ms.is_some() && ctx.flags().may_block() => {
                blocking::block(ctx, key, &req, next_end)
            }
            Ok(_) => {
                stats::CONTENDED.incr();
                ctx.reply_with(|out| out.nil())
            }
            Err(e) => ctx.reply_error(e, Self::NAME),
        }
    }
}
