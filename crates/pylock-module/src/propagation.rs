//! Whether a replicated effect would reach anyone.
//!
//! Redis drops every propagated command (`alsoPropagate` → `shouldPropagate` in `server.c`)
//! unless AOF is on, or the server is a primary with a replication backlog or a replica. On a
//! server with neither, `RM_Replicate` still looks the command up by name and builds its
//! argument objects, only for Redis to throw them away: a third of a grant's server time. So
//! the `replicate_*` wrappers in `api` build an effect only when [`effects_needed`] says so, and
//! otherwise call `RM_ReplicateVerbatim`, which in that state propagates nothing either and,
//! like `RM_Replicate`, counts the change in `server.dirty` (what RDB save points go by).
//!
//! AOF and the role are read from the context flags at each call. Whether a replication stream
//! may exist is cached, because Redis does not expose it cheaply; the cache errs towards
//! building effects:
//!
//! - it starts as "may exist" and becomes "none" only once the module is subscribed to the
//!   events below (`lib` subscribes, then calls [`recheck`]) and `INFO replication` shows no
//!   replica and no backlog;
//! - a backlog on a primary is created only when a replica's full sync starts, and that sync
//!   forks (disk or diskless) before any command can run after the snapshot point: the fork
//!   event re-reads INFO, so every effect after the snapshot is built;
//! - a replica keeps its backlog; when it is promoted, the role-change event re-reads INFO;
//! - a primary restarted from an RDB that carries replication info creates its backlog while
//!   loading, before any command, and its replicas come back by partial resync without a fork:
//!   the end-of-loading event re-reads INFO (the module loads before the data does), and so
//!   does every replica coming online or going;
//! - the backlog of a primary whose replicas left is freed later (`repl-backlog-ttl`): the cache
//!   stays "may exist" until the next fork or role change finds it gone.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::api::{Ctx, Flags, ServerEvent};

/// False only while no replication stream can exist (see the module docs).
static STREAM_MAY_EXIST: AtomicBool = AtomicBool::new(true);

/// Whether an effect replicated in a context with these flags would be written anywhere.
pub(crate) fn effects_needed(flags: Flags) -> bool {
    if flags.aof() {
        return true;
    }
    // A replica propagates to its AOF only: its own replicas get its primary's stream.
    if flags.is_replica() {
        return false;
    }
    STREAM_MAY_EXIST.load(Ordering::Relaxed)
}

/// Reads the state again on the events that can create a replication stream (forks, a full
/// sync's snapshot among them; role changes; the end of loading, since a primary restarted from
/// an RDB with replication info keeps a backlog and its replicas come back by partial resync
/// with no fork; replicas coming or going). `lib` subscribes the module to them; without server
/// events (an old server) the module does not load.
pub(crate) fn event(ctx: Ctx, event: ServerEvent) {
    if matches!(
        event,
        ServerEvent::ForkChild
            | ServerEvent::RoleChanged
            | ServerEvent::Loading { .. }
            | ServerEvent::ReplicaChange
    ) {
        recheck(ctx);
    }
}

/// Sets the cache from `INFO replication`: "none" only if it shows no replica and no backlog.
pub(crate) fn recheck(ctx: Ctx) {
    let zero = |field| ctx.server_info_int(c"replication", field) == Some(0);
    let idle = zero(c"connected_slaves") && zero(c"repl_backlog_active");
    STREAM_MAY_EXIST.store(!idle, Ordering::Relaxed);
}
