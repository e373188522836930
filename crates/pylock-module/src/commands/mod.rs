//! The PYLOCK commands: one file each, holding its parsing, its effect and its reply.
//!
//! Every command validates all of its input before it opens the key for writing, so an error
//! reply never comes with a change. Each is a type implementing `api::Command`: its name,
//! flags, ACL categories and handler; `api` runs the handler under the panic guard.

use pylock_core::CommandError;

use crate::api::{self, Ctx, Replied};
use crate::stats;

mod acquire;
mod confirm;
mod drop;
mod info;
mod release;
mod restore;
mod watch;

/// Registers every command.
pub(crate) fn register(ctx: Ctx) -> Result<(), String> {
    api::register_command::<acquire::Acquire>(ctx)?;
    api::register_command::<confirm::Confirm>(ctx)?;
    api::register_command::<release::Release>(ctx)?;
    api::register_command::<info::Info>(ctx)?;
    api::register_command::<watch::Watch>(ctx)?;
    api::register_command::<restore::Restore>(ctx)?;
    api::register_command::<drop::Drop>(ctx)
}

/// Answers a refused CONFIRM or RELEASE (`NOTHELD`, `NOTOWNED` or `CLAIMED`), counting the
/// first two.
fn refuse(ctx: Ctx, err: CommandError, command: &str) -> Replied {
    match err {
        CommandError::NotHeld => stats::NOTHELD.incr(),
        CommandError::NotOwned => stats::NOTOWNED.incr(),
        _ => {}
    }
    ctx.reply_error(err, command)
}
