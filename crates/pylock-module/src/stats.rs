//! Counters since start, shown by `INFO pylock`.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::api::InfoSink;

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
    pub(crate) fn get(&self) -> u64 {
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
/// CONFIRM … CLAIM succeeded (a claim, or a retry of one).
pub(crate) static CLAIMED: Counter = Counter::new();
/// CONFIRM or RELEASE answered NOTHELD.
pub(crate) static NOTHELD: Counter = Counter::new();
/// CONFIRM or RELEASE answered NOTOWNED.
pub(crate) static NOTOWNED: Counter = Counter::new();

/// Not a counter: clients blocked waiting for any lock right now. `blocking` raises it when a
/// client starts waiting and lowers it when its wait ends, however it ends.
pub(crate) static WAITING: Counter = Counter::new();

/// Not a counter: clients blocked in PYLOCK.WATCH right now, raised and lowered like
/// [`WAITING`].
pub(crate) static WATCHING: Counter = Counter::new();

/// Writes the `INFO pylock` section's fields.
pub(crate) fn info(out: &mut InfoSink) {
    let fields = [
        (c"acquired", ACQUIRED.get()),
        (c"contended", CONTENDED.get()),
        (c"released", RELEASED.get()),
        (c"confirmed", CONFIRMED.get()),
        (c"extended", EXTENDED.get()),
        (c"notheld", NOTHELD.get()),
        (c"notowned", NOTOWNED.get()),
        (c"waiting", WAITING.get()),
        (c"claimed", CLAIMED.get()),
        (c"watching", WATCHING.get()),
        // Not a counter: the largest fencing token granted or seen. Operators (and the tests)
        // use it to check that a replica or a restarted server continues the sequence.
        (
            c"token_high_water",
            u64::try_from(crate::storage::token_high_water()).unwrap_or(0),
        ),
    ];
    for (name, value) in fields {
        out.field(name, value);
    }
}
