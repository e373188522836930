//! `PYLOCK.INFO key`
//!
//! Not held: nil. Held: `lease <id> token <int> ttl <ms> waiters <int>`; on a semaphore
//! (n > 1), `limit <n> holders <count> waiters <int> leases <[id, token, ttl-ms]...>`, the
//! live leases earliest deadline first. A read: it answers on
//! read-only replicas too, where a lease past its deadline reads as free.

use pylock_core::reply::InfoReply;
use pylock_core::{CommandError, LeaseReply};

use crate::api::{Arg, ArgDoc, ArgType, Command, Ctx, Docs, KeyUse, Replied};
use crate::blocking;
use crate::storage::{Held, LockKey};
use pylock_core::Leases;

pub(super) struct Info;

impl Command for Info {
    const NAME: &'static str = pylock_core::Info::NAME;
    const FLAGS: &'static std::ffi::CStr = c"readonly fast";
    const ACL: &'static std::ffi::CStr = c"read fast";
    const DOCS: Docs = Docs {
        summary: c"Shows the lease that holds the lock at key: id, token, TTL and waiters",
        since: c"0.1.0",
        complexity: c"O(1)",
        tips: c"nondeterministic_output",
        arity: 2,
        key: KeyUse::Read,
        args: &[ArgDoc::required(c"key", ArgType::Key, c"")],
    };

    fn run(ctx: Ctx, args: &[Arg]) -> Replied {
        let [_, key, rest @ ..] = args else {
            return ctx.reply_error(CommandError::WrongArity, Self::NAME);
        };
        if let Err(e) = pylock_core::Info::parse(rest) {
            return ctx.reply_error(e, Self::NAME);
        }
        let now = ctx.now_ms();
        let lock = LockKey::read(ctx, key);
        match lock.held() {
            Err(_) => ctx.reply_error(CommandError::WrongType, Self::NAME),
            Ok(Held::Sem(view)) => {
                let holders = view.live(now);
                if holders == 0 {
                    return ctx.reply_nil();
                }
                let waiters = blocking::count(ctx, key.as_ref());
                let leases = view
                    .sem
                    .by_deadline()
                    .map(|slot| view.state(slot))
                    .filter(|l| l.is_live(now))
                    .map(|l| LeaseReply {
                        id: l.id,
                        token: l.token,
                        ttl_ms: l.ttl_ms(now),
                    });
                ctx.reply_with(|out| {
                    pylock_core::reply::write_sem_info(
                        out,
                        view.sem.limit(),
                        waiters,
                        holders,
                        leases,
                    )
                })
            }
            Ok(Held::Lock(Some(held))) if held.is_live(now) => {
                let lease = LeaseReply {
                    id: held.id,
                    token: held.token,
                    ttl_ms: held.ttl_ms(now),
                };
                let waiters = blocking::count(ctx, key.as_ref());
                ctx.reply_with(|out| InfoReply { lease, waiters }.write(out))
            }
            Ok(_) => ctx.reply_nil(),
        }
    }
}
