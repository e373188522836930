//! `PYLOCK.RESTORE key lease-id token [PXAT unix-time-ms] [FROM claimed-from] [LIMIT n]`
//! (internal)
//!
//! The effect a grant or a claim replicates, and the command an AOF rewrite emits for each
//! lock: it stores exactly the given lease id, token, absolute deadline and the id the lease
//! was claimed from. Only a primary's replication stream
//! and AOF loading may run it; a client gets an error, so no one can forge a lease or a token.
//! Every token it stores raises the token high-water mark, which is what keeps tokens
//! increasing on a promoted replica and after an AOF restart.
//!
//! With `LIMIT n` (n > 1, and `PXAT` required) it stores one lease of a semaphore: beside the
//! others when the key holds a semaphore of that n, else in a new one replacing the key.

use pylock_core::int::parse_i64;
use pylock_core::{CommandError, MAX_LEASE_ID_LEN, MAX_LIMIT};

use crate::api::{Arg, ArgDoc, ArgType, Command, Ctx, Docs, KeyUse, Replied};
use crate::effects;
use crate::storage::LockKey;

pub(super) struct Restore;

impl Command for Restore {
    const NAME: &'static str = "pylock.restore";
    const FLAGS: &'static std::ffi::CStr = c"write fast";
    const ACL: &'static std::ffi::CStr = c"write fast";
    const DOCS: Docs = Docs {
        summary: c"Internal: stores exactly the given lease (replication and AOF loading only)",
        since: c"0.1.0",
        complexity: c"O(1)",
        tips: c"",
        arity: -4,
        key: KeyUse::Overwrite,
        args: &[
            ArgDoc::required(c"key", ArgType::Key, c""),
            ArgDoc::required(c"lease-id", ArgType::String, c""),
            ArgDoc::required(c"token", ArgType::Integer, c"the lease's fencing token"),
            ArgDoc::option(
                c"PXAT",
                c"unix-time-milliseconds",
                ArgType::UnixTime,
                c"the lease's absolute deadline",
            ),
            ArgDoc::option(
                c"FROM",
                c"claimed-from",
                ArgType::String,
                c"the lease id this lease was claimed from",
            ),
            ArgDoc::option(
                c"LIMIT",
                c"n",
                ArgType::Integer,
                c"the semaphore's n: store this lease beside the key's others",
            ),
        ],
    };

    fn run(ctx: Ctx, args: &[Arg]) -> Replied {
        if !ctx.flags().replicated_or_loading() {
            return ctx.reply_error(CommandError::InternalOnly, Self::NAME);
        }
        let [_, key, id, token, options @ ..] = args else {
            return ctx.reply_error(CommandError::WrongArity, Self::NAME);
        };
        let mut deadline = None;
        let mut from = None;
        let mut limit = None;
        let mut rest = options;
        while let [name, value, tail @ ..] = rest {
            let name = name.as_ref();
            let slot = if name.eq_ignore_ascii_case(b"PXAT") {
                &mut deadline
            } else if name.eq_ignore_ascii_case(b"FROM") {
                &mut from
            } else if name.eq_ignore_ascii_case(b"LIMIT") {
                &mut limit
            } else {
                return ctx.reply_error(CommandError::Syntax, Self::NAME);
            };
            if slot.replace(value).is_some() {
                return ctx.reply_error(CommandError::Syntax, Self::NAME);
            }
            rest = tail;
        }
        if !rest.is_empty() {
            return ctx.reply_error(CommandError::Syntax, Self::NAME);
        }
        let id = id.as_ref();
        // Positive and plausible (`pylock_core::token::plausible_limit`): an AOF line or a
        // stream cannot push the token sequence to its end.
        let Some(token) = parse_i64(token.as_ref())
            .filter(|t| pylock_core::stored::check_token(*t, ctx.now_ms()).is_ok())
        else {
            return ctx.reply_error(CommandError::InvalidToken, Self::NAME);
        };
        let deadline = match deadline.map(|d| parse_i64(d.as_ref())) {
            None => None,
            Some(Some(at)) if at >= 0 => Some(at),
            Some(_) => return ctx.reply_error(CommandError::InvalidExpire, Self::NAME),
        };
        if id.is_empty() || id.len() > MAX_LEASE_ID_LEN {
            return ctx.reply_error(CommandError::InvalidLeaseId, Self::NAME);
        }
        let from = from.map(|f| f.as_ref());
        if from.is_some_and(|f| f.is_empty() || f.len() > MAX_LEASE_ID_LEN || f == id) {
            return ctx.reply_error(CommandError::InvalidLeaseId, Self::NAME);
        }
        let limit = match limit.map(|n| parse_i64(n.as_ref())) {
            None => 1,
            Some(Some(n)) if (1..=i64::from(MAX_LIMIT)).contains(&n) => n as u32,
            Some(Some(_)) => return ctx.reply_error(CommandError::InvalidLimit, Self::NAME),
            Some(None) => return ctx.reply_error(CommandError::NotInteger, Self::NAME),
        };
        let mut lock = LockKey::write(ctx, key);
        if limit > 1 {
            let Some(at) = deadline else {
                return ctx.reply_error(CommandError::InvalidExpire, Self::NAME);
            };
            effects::sem_restore(ctx, key, &mut lock, limit, id, token, at, from);
        } else {
            effects::restore(ctx, key, &mut lock, id, token, deadline, from);
        }
        ctx.reply_ok()
    }
}
