//! Counters since start, shown by `INFO pylock`.

use std::ffi::CString;
use std::sync::atomic::{AtomicU64, Ordering};

use redis_module::raw;

use crate::api::rm;

/// One counter per outcome; each call of a command lands in exactly one.
pub(crate) struct Counter(AtomicU64);

impl Counter {
    const fn new() -> Self {
        Self(AtomicU64::new(0))
    }
    pub(crate) fn incr(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Takes back an `incr` whose outcome did not happen after all.
    pub(crate) fn decr(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// ACQUIRE granted (a new lease, the same LEASE again, or a hand-off to a waiter).
pub(crate) static ACQUIRED: Counter = Counter::new();
/// ACQUIRE answered nil: another lease held the lock and BLOCK was absent or ran out.
pub(crate) static CONTENDED: Counter = Counter::new();
/// RELEASE released.
pub(crate) static RELEASED: Counter = Counter::new();
/// CONFIRM without EXTEND succeeded.
pub(crate) static CONFIRMED: Counter = Counter::new();
/// CONFIRM with EXTEND succeeded.
pub(crate) static EXTENDED: Counter = Counter::new();
/// CONFIRM or RELEASE answered NOTHELD.
pub(crate) static NOTHELD: Counter = Counter::new();
/// CONFIRM or RELEASE answered NOTOWNED.
pub(crate) static NOTOWNED: Counter = Counter::new();

/// Clients blocked waiting for any lock right now.
pub(crate) fn waiting() -> u64 {
    crate::waiters::total()
}

/// The `INFO pylock` section.
pub(crate) unsafe extern "C" fn info(ctx: *mut raw::RedisModuleInfoCtx, _for_crash_report: i32) {
    // An empty section name makes the section just "pylock", the module's name.
    if rm!(RedisModule_InfoAddSection)(ctx, c"".as_ptr()) != raw::REDISMODULE_OK as i32 {
        return; // this section was not asked for
    }
    let fields: [(&str, u64); 9] = [
        ("acquired", ACQUIRED.get()),
        ("contended", CONTENDED.get()),
        ("released", RELEASED.get()),
        ("confirmed", CONFIRMED.get()),
        ("extended", EXTENDED.get()),
        ("notheld", NOTHELD.get()),
        ("notowned", NOTOWNED.get()),
        ("waiting", waiting()),
        // Not a counter: the largest fencing token granted or seen. Operators (and the tests)
        // use it to check that a replica or a restarted server continues the sequence.
        (
            "token_high_water",
            u64::try_from(crate::storage::token_high_water()).unwrap_or(0),
        ),
    ];
    for (name, value) in fields {
        let Ok(name) = CString::new(name) else {
            continue;
        };
        rm!(RedisModule_InfoAddFieldULongLong)(ctx, name.as_ptr(), value);
    }
}
