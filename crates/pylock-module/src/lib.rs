//! The `pylock` Redis module: locks and leases that Redis itself enforces.
//!
//! # Layout
//!
//! - [`api`]: the slice of the module API used, behind small wrappers; the reply sink.
//! - [`storage`]: the `pylock-lk` data type (RDB, AOF rewrite, digest, memory), the key
//!   accessor, and the server-wide fencing-token sequence.
//! - [`commands`]: one file per command; each owns its parsing, effect, replication and reply.
//! - [`waiters`]: fair blocking acquire: per-lock FIFO queues, timers, hand-off.
//! - [`stats`]: the `INFO pylock` counters.
//! - [`propagation`]: whether a replicated effect would reach anyone (AOF, replicas).
//!
//! The lease rules themselves live in `pylock-core`, which has no Redis in it.

use std::ffi::c_int;

use redis_module::{raw, redis_module, Context, RedisString, Status};

mod api;
mod commands;
mod propagation;
mod stats;
mod storage;
mod waiters;

use storage::LOCK_TYPE;

fn init(ctx: &Context, _args: &[RedisString]) -> Status {
    if let Some(name) = api::missing_required() {
        ctx.log_warning(&format!(
            "pylock needs {name}, which this server lacks (Redis 7.0 or later, Valkey 8 or later)"
        ));
        return Status::Err;
    }
    unsafe {
        // Signal WATCH only for keys we change, not for every key opened for writing.
        api::rm!(RedisModule_SetModuleOptions)(
            ctx.ctx,
            raw::REDISMODULE_OPTION_NO_IMPLICIT_SIGNAL_MODIFIED as c_int,
        );
    }
    if let Err(e) = commands::register(ctx.ctx).and_then(|()| waiters::subscribe(ctx.ctx)) {
        ctx.log_warning(&format!("pylock: {e}"));
        return Status::Err;
    }
    // Effects are built only while AOF or a replication stream can take them.
    propagation::track(ctx.ctx);
    // Replaces the toolkit's default info callback with the `INFO pylock` section.
    unsafe { api::rm!(RedisModule_RegisterInfoFunc)(ctx.ctx, Some(stats::info)) };
    Status::Ok
}

redis_module! {
    name: "pylock",
    version: 1,
    allocator: (redis_module::alloc::RedisAlloc, redis_module::alloc::RedisAlloc),
    data_types: [LOCK_TYPE],
    init: init,
}
