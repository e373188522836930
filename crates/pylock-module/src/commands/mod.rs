//! The PYLOCK commands: one file each, holding its parsing, its effect and its reply.
//!
//! Every command validates all of its input before it opens the key for writing, so an error
//! reply never comes with a change.

use std::ffi::{c_int, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use redis_module::raw;

use crate::api::{log, rm, Arg, Ctx};

mod acquire;
mod confirm;
mod info;
mod release;
mod restore;

type Handler = fn(Ctx, &[Arg]) -> c_int;

struct Spec {
    name: &'static str,
    flags: &'static str,
    /// ACL categories, set only on servers that support them for modules (7.2+).
    acl: &'static str,
    callback: raw::RedisModuleCmdFunc,
}

macro_rules! entry {
    ($handler:path) => {{
        unsafe extern "C" fn callback(
            ctx: *mut raw::RedisModuleCtx,
            argv: *mut *mut raw::RedisModuleString,
            argc: c_int,
        ) -> c_int {
            run(ctx, argv, argc, $handler)
        }
        Some(callback as unsafe extern "C" fn(_, _, _) -> c_int)
    }};
}

fn specs() -> [Spec; 5] {
    [
        Spec {
            name: "pylock.acquire",
            flags: "write deny-oom fast",
            acl: "write fast",
            callback: entry!(acquire::run),
        },
        Spec {
            name: "pylock.confirm",
            flags: "write fast",
            acl: "write fast",
            callback: entry!(confirm::run),
        },
        Spec {
            name: "pylock.release",
            flags: "write fast",
            acl: "write fast",
            callback: entry!(release::run),
        },
        Spec {
            name: "pylock.info",
            flags: "readonly fast",
            acl: "read fast",
            callback: entry!(info::run),
        },
        Spec {
            name: "pylock.restore",
            flags: "write fast",
            acl: "write fast",
            callback: entry!(restore::run),
        },
    ]
}

/// Registers every command with its key at argv[1] (first key 1, last key 1, step 1), using the
/// API that exists on Redis 7.0 as well as on later Redis and on Valkey.
pub(crate) fn register(ctx: *mut raw::RedisModuleCtx) -> Result<(), String> {
    for spec in specs() {
        let name = CString::new(spec.name).map_err(|e| e.to_string())?;
        let flags = CString::new(spec.flags).map_err(|e| e.to_string())?;
        let status = unsafe {
            rm!(RedisModule_CreateCommand)(
                ctx,
                name.as_ptr(),
                spec.callback,
                flags.as_ptr(),
                1,
                1,
                1,
            )
        };
        if status != raw::REDISMODULE_OK as c_int {
            return Err(format!("could not register {}", spec.name));
        }
        // Redis 7.0 has no ACL categories for module commands; grant them by name there.
        let (Some(get_command), Some(set_categories)) =
            (unsafe { raw::RedisModule_GetCommand }, unsafe {
                raw::RedisModule_SetCommandACLCategories
            })
        else {
            continue;
        };
        let acl = CString::new(spec.acl).map_err(|e| e.to_string())?;
        unsafe {
            let command = get_command(ctx, name.as_ptr());
            if command.is_null()
                || set_categories(command, acl.as_ptr()) != raw::REDISMODULE_OK as c_int
            {
                log(
                    ctx,
                    c"warning",
                    &format!("could not set ACL categories of {}", spec.name),
                );
            }
        }
    }
    Ok(())
}

/// Adapts the module's server-wide token sequence to the pure rules.
pub(crate) struct TokenSource;

impl pylock_core::lease::Tokens for TokenSource {
    fn next(&mut self, now_ms: i64) -> Option<i64> {
        crate::storage::next_token(now_ms)
    }
}

/// Runs a callback body (timer, blocked client, keyspace event) so that a panic is logged
/// instead of unwinding into Redis.
pub(crate) fn guard(ctx: Ctx, what: &str, f: impl FnOnce()) {
    if let Err(panic) = catch_unwind(AssertUnwindSafe(f)) {
        ctx.log_warning(&format!(
            "pylock: internal error in {what} callback: {}",
            panic_text(&*panic)
        ));
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// The boundary between Redis and Rust: a panic must never unwind into Redis, so one is caught
/// here, logged, and answered as an error.
fn run(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
    handler: Handler,
) -> c_int {
    let ctx = Ctx(ctx);
    // SAFETY: argv/argc are what Redis passed to this command callback.
    let args = unsafe { Ctx::args(argv, argc) };
    match catch_unwind(AssertUnwindSafe(|| handler(ctx, args))) {
        Ok(status) => status,
        Err(panic) => {
            ctx.log_warning(&format!("pylock: internal error: {}", panic_text(&*panic)));
            ctx.reply_error_text("ERR pylock internal error, see the server log\0")
        }
    }
}

/// Answers a refused CONFIRM or RELEASE, counting NOTHELD and NOTOWNED.
fn refuse(ctx: Ctx, err: Option<pylock_core::CommandError>, command: &str) -> c_int {
    use pylock_core::CommandError;
    let err = err.unwrap_or(CommandError::NotHeld);
    match err {
        CommandError::NotHeld => crate::stats::NOTHELD.incr(),
        CommandError::NotOwned => crate::stats::NOTOWNED.incr(),
        _ => {}
    }
    ctx.reply_error(err, command)
}
