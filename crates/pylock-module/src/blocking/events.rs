//! The events blocking listens to: keyspace events, by which a lock can vanish without a PYLOCK
//! command, and the event loop's before-sleep, where deferred answers are delivered.

use crate::api::{self, Arg, Ctx, KeyspaceHandler, ServerEvent, ServerEventHandler};
use crate::stats;

use super::{delivery, timers, LockId, REGISTRY};

struct KeyspaceWatch;

impl KeyspaceHandler for KeyspaceWatch {
    fn event(ctx: Ctx, key: &Arg) {
        // The common case costs one load: nobody waits anywhere.
        if stats::WAITING.get() == 0 {
            return;
        }
        let db = ctx.db();
        let queued = REGISTRY.with(|r| r.borrow().queue(db, key.as_ref()).is_some());
        if queued {
            // Writing from a notification is not allowed: serve from a timer that fires at once.
            let id = LockId {
                db,
                key: key.as_ref().into(),
            };
            timers::arm(ctx, &id, i64::MIN);
        }
    }
}

struct EventLoop;

impl ServerEventHandler for EventLoop {
    fn event(_ctx: Ctx, event: ServerEvent) {
        if event == ServerEvent::BeforeSleep {
            delivery::deliver_pending();
        }
    }
}

/// Subscribes to the keyspace events by which a lock can vanish and to the event loop's
/// before-sleep event.
pub(crate) fn subscribe(ctx: Ctx) -> Result<(), String> {
    api::subscribe_keyspace::<KeyspaceWatch>(ctx)?;
    if api::subscribe_server_events::<EventLoop>(ctx, &[ServerEvent::BeforeSleep]) {
        Ok(())
    } else {
        Err("could not subscribe to the event loop's before-sleep event".into())
    }
}
