//! The `pylock` Redis module: locks and leases that Redis itself enforces.
//!
//! # Layout
//!
//! Layers call downwards only; nothing calls up.
//!
//! ```text
//! lib (init) ─┬─ commands/   one file per command: parse, decide (pylock-core), effect, reply
//!             │     │
//!             │  blocking/   fair waiting: queues, hand-off, delivery, timers, events
//!             │     │
//!             │  effects     every change to a lock: store + replicate + signal + count
//!             │     │
//!             │  storage     the `pylock-lk` data type, typed lock keys, the token sequence
//!             │     │
//!             ├─ stats       the `INFO pylock` counters
//!             ├─ propagation whether a replicated effect would reach anyone (AOF, replicas)
//!             │     │
//!             └─ api         all unsafe: the module API behind safe wrappers, the callback
//!                            trampolines and the panic guard
//! ```
//!
//! - [`commands`]: one file per command; each owns its parsing, its decision, its effect and
//!   its reply.
//! - [`blocking`]: `ACQUIRE … BLOCK`: per-lock FIFO queues, the hand-off, the deferred
//!   delivery of answers, timers and events. The queue rules are pure, in `pylock_core::queue`.
//! - [`effects`]: grant, renew, release, revoke, restore.
//! - [`storage`]: the `pylock-lk` data type (RDB, AOF rewrite, digest, memory), the key
//!   accessor, and the server-wide fencing-token sequence.
//! - [`stats`]: the `INFO pylock` counters.
//! - [`propagation`]: whether a replicated effect would reach anyone.
//! - [`api`]: every call into Redis and every callback from it.
//!
//! The lease rules themselves live in `pylock-core`, which has no Redis in it.

use redis_module::{redis_module, Context, RedisString, Status};

mod api;
mod blocking;
mod commands;
mod effects;
mod propagation;
mod sem;
mod stats;
mod storage;

use storage::LOCK_TYPE;

fn init(ctx: &Context, _args: &[RedisString]) -> Status {
    if let Some(name) = api::missing_required() {
        ctx.log_warning(&format!(
            "pylock needs {name}, which this server lacks (Redis 7.0 or later, Valkey 8 or later)"
        ));
        return Status::Err;
    }
    // SAFETY: the context Redis passed to the module's OnLoad.
    let c = unsafe { api::init_ctx(ctx.ctx) };
    api::configure(c);
    if let Err(e) = commands::register(c).and_then(|()| blocking::subscribe(c)) {
        ctx.log_warning(&format!("pylock: {e}"));
        return Status::Err;
    }
    // Effects are built only while AOF or a replication stream can take them.
    if api::subscribe_server_events::<ServerEvents>(c, &ServerEvents::ALL) {
        propagation::recheck(c);
    } else {
        ctx.log_warning("pylock: could not subscribe to the server events it needs");
        return Status::Err;
    }
    Status::Ok
}

/// The module's one handler of server events: Redis keeps one callback per module and event,
/// so every layer that needs an event is called from here.
struct ServerEvents;

impl ServerEvents {
    const ALL: [api::ServerEvent; 6] = [
        api::ServerEvent::ForkChild,
        api::ServerEvent::RoleChanged,
        api::ServerEvent::Loading { ended: true },
        api::ServerEvent::ReplicaChange,
        api::ServerEvent::Flushed(None),
        api::ServerEvent::Swapped(0, 0),
    ];
}

impl api::ServerEventHandler for ServerEvents {
    fn event(ctx: api::Ctx, event: api::ServerEvent) {
        propagation::event(ctx, event);
        if event == (api::ServerEvent::Loading { ended: true }) {
            storage::adopt_legacy_deadlines(ctx);
            blocking::arm_all_expiries(ctx);
        }
        if event == api::ServerEvent::RoleChanged {
            blocking::arm_all_expiries(ctx);
        }
        blocking::server_event(ctx, event);
    }
}

redis_module! {
    name: "pylock",
    version: 1,
    allocator: (redis_module::alloc::RedisAlloc, redis_module::alloc::RedisAlloc),
    data_types: [LOCK_TYPE],
    init: init,
}
