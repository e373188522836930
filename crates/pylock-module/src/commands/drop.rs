//! `PYLOCK.DROP key lease-id` (internal)
//!
//! The effect that the end of one lease of a semaphore replicates (release, expiry, a claim
//! moving it to a new id, a hand-off taken back): it removes that lease, and the key with its
//! last one. Only a primary's replication stream and AOF loading may run it, as
//! `PYLOCK.RESTORE`.

use pylock_core::{CommandError, MAX_LEASE_ID_LEN};

use crate::api::{Arg, ArgDoc, ArgType, Command, Ctx, Docs, KeyUse, Replied};
use crate::effects;
use crate::storage::LockKey;

pub(super) struct Drop;

impl Command for Drop {
    const NAME: &'static str = "pylock.drop";
    const FLAGS: &'static std::ffi::CStr = c"write fast";
    const ACL: &'static std::ffi::CStr = c"write fast";
    const DOCS: Docs = Docs {
        summary: c"Internal: removes one lease of a semaphore (replication and AOF loading only)",
        since: c"0.3.0",
        complexity: c"O(log N) in the key's leases",
        tips: c"",
        arity: 3,
        key: KeyUse::Update,
        args: &[
            ArgDoc::required(c"key", ArgType::Key, c""),
            ArgDoc::required(c"lease-id", ArgType::String, c""),
        ],
    };

    fn run(ctx: Ctx, args: &[Arg]) -> Replied {
        if !ctx.flags().replicated_or_loading() {
            return ctx.reply_error(CommandError::InternalOnly, Self::NAME);
        }
        let [_, key, id] = args else {
            return ctx.reply_error(CommandError::WrongArity, Self::NAME);
        };
        let id = id.as_ref();
        if id.is_empty() || id.len() > MAX_LEASE_ID_LEN {
            return ctx.reply_error(CommandError::InvalidLeaseId, Self::NAME);
        }
        let mut lock = LockKey::write(ctx, key);
        if lock.stored().is_err() {
            return ctx.reply_error(CommandError::WrongType, Self::NAME);
        }
        effects::drop_lease(ctx, key, &mut lock, id);
        ctx.reply_ok()
    }
}
