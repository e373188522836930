//! The contention checker: many clients hammer a few locks (or semaphores of n, with
//! [`Config::limit`]), and a checker proves from the server's own answers that no lock was ever
//! held by two leases at once (no semaphore by more than n), that no waiter was passed over,
//! that a claimed lease has one claimant, and that watchers learn of a lease's end in time and
//! for the right reason.
//!
//! Used by `crates/pylock-module/tests/contention.rs` (small runs, both servers, with and
//! without faults) and `tests/cluster.rs`, and by `scripts/check-contention` (this crate's
//! `check-contention` binary, large runs).
//!
//! # The workload
//!
//! Each worker thread has its own connection (and a second one for a duplicate claimant, and a
//! watcher thread with a third) and loops until the run's deadline, on a key picked at random
//! among a few:
//!
//! - **a lease cycle**: `ACQUIRE` (with or without `LEASE`, sometimes with `BLOCK`), sometimes an
//!   immediate retry with the same `LEASE` (a renewal), sometimes a **claim**
//!   (`CONFIRM key id CLAIM new-id`, as a task message's run takes over the lease it was
//!   given), itself sometimes **retried** (the same CLAIM again, as after a lost reply) or
//!   **raced** by a duplicate on the second connection that holds the same old id and claims
//!   with its own new id; then a *guarded section* on the lock's resource, work that sometimes
//!   outlives the TTL, a `CONFIRM` (plain or `EXTEND`) and usually a `RELEASE`. The loser of a
//!   race then tries a fenced write with the old lease's token, after the winner entered;
//! - **a watch**: for a share of leases, the worker's watcher thread sends
//!   `PYLOCK.WATCH key id TIMEOUT …` and records the answer and when it came; the worker waits
//!   until the server shows that client blocked (`CLIENT LIST ID`) before it goes on;
//! - **a stale call**: `CONFIRM` or `RELEASE` with one of its own earlier lease ids, one that it
//!   released, claimed away or saw refused (it must never succeed) or one it left to expire;
//! - **a ghost call**: `CONFIRM` or `RELEASE` with a lease id nobody was ever granted;
//! - **a look**: `PYLOCK.INFO`, whose holder must be a lease some client was granted.
//!
//! # What a client can soundly conclude, and what is checked
//!
//! Every worker's lease ids are unique, and a lease that lapsed never comes back (the only
//! same-`LEASE` retry happens right after the grant, and a retry that is granted afresh is
//! recorded as a new grant). Times are one monotonic clock shared by all workers. A successful
//! claim is recorded as a grant of the new id (it carries a new token), and as a proof that the
//! old lease held at the claim.
//!
//! 1. **Token order.** If grant (or claim) A's reply arrived before grant B's request was sent,
//!    the server granted A first, so A's token must be smaller. Tokens are never repeated.
//! 2. **At most n valid leases at a time (timing).** A grant happened somewhere in its
//!    request/reply window; a success (`CONFIRM`, renewal, claim, `RELEASE`) proves the lease
//!    valid somewhere in its own window. So the lease was certainly valid from the grant's
//!    *reply* to the last success's *request*. No more than n such intervals of one key may be
//!    open at one moment (for a lock: two must not overlap), and no other grant of the key may
//!    fall wholly inside n of them.
//! 3. **At most n valid leases at a time (server order).** The guarded section writes
//!    `e:<token>` on entering and `x:<token>` on leaving to a per-key log list, in the server's
//!    own order. A section followed by a success of its lease ran wholly under a valid lease,
//!    so no more than n such sections may be open at once in the log (for a lock: none
//!    interleave), and for a lock the fence must never refuse them.
//! 4. **Fencing keeps every update.** The section reads the key's counter and later writes
//!    counter + 1, both through a Lua fence that refuses a token lower than the largest seen.
//!    The final counter must equal the number of writes the fence accepted, and every accepted
//!    write of a proven section must be in the log. A race's loser, writing with the claimed
//!    lease's older token after the winner entered, must be refused. (This holds for n > 1
//!    too: a write is accepted only if no section with a larger token entered since its read,
//!    so no accepted write is overwritten unseen; concurrent holders are refused instead.)
//! 5. **One claimant per lease.** Of all the claims of one lease (by its id and token), at most
//!    one new id ever succeeds; a retry of it answers the same id and token; its token is
//!    above the claimed lease's; and a `CLAIMED` answer means some client's claim of that lease
//!    succeeded.
//! 6. **Only owners succeed.** A ghost id, or an id already released, claimed away or refused,
//!    never gets a success from `CONFIRM` or `RELEASE`. A `CONFIRM` reports the token of the
//!    grant.
//! 7. **Watchers are told.** Each watch ends with the reason of the event that ended its lease
//!    (`released`, `claimed`, `expired` at the deadline), never before the event could have
//!    happened, and at most [`Config::watch_limit`] after the earliest moment it could have
//!    happened (so the bound includes the ending call's own request time). A fault that held
//!    the server up (SIGSTOP, `DEBUG RELOAD`, `DEBUG LOADAOF`) moves that moment to the
//!    fault's end; a reload also ends a watch with `flushed`, since the server empties its
//!    databases before it loads them again. A watch that may have reached the server after
//!    the end (the worker did not see it blocked) may instead be answered at once (`notheld`,
//!    `notowned`, `claimed`).
//! 8. **Every grant is accounted for.** The server's `INFO pylock` counters equal what the
//!    clients received, so no grant went to nobody; `PYLOCK.INFO` only ever shows granted
//!    leases; no client is left waiting or watching.
//! 9. **No waiter is passed over (FIFO).** A queue observer lists the server's clients about
//!    every millisecond and records those blocked in `ACQUIRE … BLOCK`. A waiter seen queued
//!    by time q came before every `ACQUIRE` of its key sent after q, so none of them may be
//!    granted before it: if one was, the waiter's token must be smaller, or the waiter must
//!    have timed out before that grant's reply could have been sent (its reply nil, and the
//!    grant answered no earlier than the waiter's own timeout less 5 ms). Claims keep their
//!    place and are not such requests; a wait that spans a reload is left out. One server
//!    only (a cluster's clients are on several nodes).
//!
//! [`check_history`] holds every check that needs only the clients' records, so a history
//! made by hand (the unit tests below) shows that each check fails when it should.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use testkit::redis::{self, ConnectionLike, Value};
use testkit::{Cluster, Server};

/// A small deterministic generator (SplitMix64), so a failing run can be replayed by its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// A number in `lo..hi` (`hi` > `lo`).
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below(hi.saturating_sub(lo).max(1) as u64) as i64
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// One element of `items` (non-empty).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// The size and shape of a run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Worker threads, one connection each.
    pub workers: usize,
    /// Locks they contend for.
    pub keys: usize,
    /// How long the workers run.
    pub duration: Duration,
    /// Lease TTLs are drawn from this range of milliseconds.
    pub ttl_ms: (i64, i64),
    /// Percentage of acquires that use `BLOCK`.
    pub block_percent: u64,
    /// Percentage of granted leases whose section starts with a claim (a third of them plain,
    /// a third retried, a third raced by a duplicate).
    pub claim_percent: u64,
    /// Percentage of leases a watcher watches (when the worker's watcher is free).
    pub watch_percent: u64,
    /// How long after the earliest moment a lease could have ended its watcher may be answered.
    pub watch_limit: Duration,
    /// Seed of the workers' generators.
    pub seed: u64,
    /// Leases each key admits at once: 1 is a lock; above 1 every `ACQUIRE` says `LIMIT n`
    /// and the key is a semaphore.
    pub limit: u64,
}

impl Config {
    /// A few seconds' run, as the test suite uses.
    pub fn small(seed: u64) -> Self {
        Self {
            workers: 6,
            keys: 3,
            duration: Duration::from_millis(2500),
            ttl_ms: (15, 120),
            block_percent: 30,
            claim_percent: 30,
            watch_percent: 50,
            watch_limit: Duration::from_millis(50),
            seed,
            limit: 1,
        }
    }
}

/// How a worker ended one of its leases itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndKind {
    /// A RELEASE that answered 1.
    Released,
    /// A claim of it that succeeded.
    Claimed,
}

impl EndKind {
    /// The reason its watchers must be given.
    pub fn reason(self) -> &'static str {
        match self {
            EndKind::Released => "released",
            EndKind::Claimed => "claimed",
        }
    }
}

/// The call that ended a lease, and its request/reply window (µs since the run's start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct End {
    /// What ended it.
    pub kind: EndKind,
    /// When the call was sent.
    pub sent: u64,
    /// When its reply arrived.
    pub received: u64,
}

/// What a watcher got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchAnswer {
    /// A reason (bulk string).
    Reason(String),
    /// nil: its TIMEOUT passed.
    Nil,
    /// An error, or a reply of another shape.
    Error(String),
}

/// One watch of a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    /// µs since the run's start when `PYLOCK.WATCH` was sent.
    pub sent: u64,
    /// Whether the worker saw the watcher blocked before it went on (so the watch was in place
    /// before the lease could end by the worker's hand).
    pub confirmed: bool,
    /// The watch's TIMEOUT, ms.
    pub timeout_ms: u64,
    /// The answer, and when it arrived; `None` if it never came (the run ended first).
    pub answer: Option<(WatchAnswer, u64)>,
}

/// One grant (or a renewal retry that was granted afresh, or a successful claim), as a client
/// saw it.
#[derive(Debug, Clone)]
pub struct Grant {
    /// Index of the lock.
    pub key: usize,
    /// Lease id.
    pub id: Vec<u8>,
    /// Fencing token.
    pub token: i64,
    /// µs since the run's start when the request was sent.
    pub sent: u64,
    /// µs since the run's start when the reply arrived.
    pub received: u64,
    /// Whether the request used `BLOCK`.
    pub blocking: bool,
    /// When the last success of this lease (CONFIRM, renewal, claim of it, RELEASE) was
    /// requested.
    pub last_proof: Option<u64>,
    /// For a claim: the id of the lease it took over.
    pub claimed_from: Option<Vec<u8>>,
    /// The earliest and latest µs the lease's deadline can be at, as last set (by the grant, a
    /// renewal or an EXTEND).
    pub deadline: (u64, u64),
    /// How the worker ended it, if it did (otherwise it expired, or is still running).
    pub end: Option<End>,
    /// Its watch, if it had one.
    pub watch: Option<Watch>,
}

impl Grant {
    /// A grant with no proof, end or watch yet, and a deadline `ttl_ms` after its window.
    pub fn new(key: usize, id: &[u8], token: i64, window: (u64, u64), ttl_ms: i64) -> Self {
        let ttl = ttl_ms.max(0) as u64 * 1000;
        Self {
            key,
            id: id.to_vec(),
            token,
            sent: window.0,
            received: window.1,
            blocking: false,
            last_proof: None,
            claimed_from: None,
            deadline: (window.0 + ttl, window.1 + ttl),
            end: None,
            watch: None,
        }
    }
}

/// How a claim was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The lease reply, with this token.
    Won(i64),
    /// `CLAIMED`: the lease was claimed under another id.
    Claimed,
    /// `NOTHELD`.
    NotHeld,
    /// `NOTOWNED`.
    NotOwned,
}

/// One `CONFIRM … CLAIM`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// Index of the lock.
    pub key: usize,
    /// The lease claimed.
    pub from_id: Vec<u8>,
    /// Its token.
    pub from_token: i64,
    /// The new id the claimant asked for.
    pub new_id: Vec<u8>,
    /// µs since the run's start when the claim was sent.
    pub sent: u64,
    /// µs since the run's start when its reply arrived.
    pub received: u64,
    /// Whether it resent an earlier claim of the same claimant.
    pub retry: bool,
    /// The answer.
    pub outcome: ClaimOutcome,
}

/// A race's loser writing through the fence with the claimed lease's token, after the winner
/// (token `above`) entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FenceProbe {
    /// Index of the lock.
    pub key: usize,
    /// The older token it wrote with.
    pub token: i64,
    /// The winner's token.
    pub above: i64,
    /// Whether the fence accepted the write (it must not).
    pub accepted: bool,
}

/// One `ACQUIRE … BLOCK` that had to wait or was answered, as its client saw it, for the FIFO
/// check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait {
    /// Index of the lock.
    pub key: usize,
    /// The server's `CLIENT ID` of the worker's connection.
    pub client: i64,
    /// µs since the run's start when the request was sent.
    pub sent: u64,
    /// µs since the run's start when its reply arrived.
    pub received: u64,
    /// Its `BLOCK` timeout, ms.
    pub block_ms: u64,
    /// The granted lease's token, or `None` for nil (the wait timed out).
    pub token: Option<i64>,
}

/// A moment the observer saw a client blocked in `PYLOCK.ACQUIRE`: within the `CLIENT LIST`
/// call's request/reply window (µs since the run's start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeenQueued {
    /// The client's `CLIENT ID`.
    pub client: i64,
    /// When the `CLIENT LIST` was sent.
    pub sent: u64,
    /// When its reply arrived.
    pub received: u64,
}

/// What a fault does to a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// SIGSTOP … SIGCONT: the server does nothing meanwhile.
    Stop,
    /// `DEBUG RELOAD` or `DEBUG LOADAOF`: the server empties its databases and loads them
    /// again, answering nothing meanwhile.
    Reload,
}

/// A fault, from its start to its end (µs since the run's start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// What it was.
    pub kind: FaultKind,
    /// When it began.
    pub from: u64,
    /// When it was over.
    pub to: u64,
}

/// What the fault injector of a run gets: whether the workers are done, and where to record
/// each fault's span, so the watcher check knows when the server could not answer.
#[derive(Debug)]
pub struct Faults {
    start: Instant,
    done: AtomicBool,
    log: Mutex<Vec<Fault>>,
}

impl Faults {
    fn new(start: Instant) -> Self {
        Self {
            start,
            done: AtomicBool::new(false),
            log: Mutex::new(Vec::new()),
        }
    }

    /// Whether the workers are done (the injector must then return).
    pub fn done(&self) -> bool {
        self.done.load(Ordering::SeqCst)
    }

    /// Sleeps `ms` in small steps, returning early (false) once the workers are done.
    pub fn sleep(&self, ms: u64) -> bool {
        for _ in 0..ms / 10 {
            if self.done() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        !self.done()
    }

    /// Runs one fault, `f`, recording its span.
    pub fn inject<R>(&self, kind: FaultKind, f: impl FnOnce() -> R) -> R {
        let from = self.start.elapsed().as_micros() as u64;
        let r = f();
        let to = self.start.elapsed().as_micros() as u64;
        if let Ok(mut log) = self.log.lock() {
            log.push(Fault { kind, from, to });
        }
        r
    }
}

/// One guarded section.
#[derive(Debug, Clone)]
pub struct Section {
    /// Index of the lock.
    pub key: usize,
    /// The token it ran with.
    pub token: i64,
    /// Whether a success of its lease followed it (so it ran wholly under a valid lease).
    pub confirmed: bool,
    /// Whether the fence accepted the read.
    pub entered: bool,
    /// Whether the fence accepted the write.
    pub wrote: bool,
}

/// Calls and outcomes, summed over workers.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// Every command sent.
    pub commands: u64,
    /// ACQUIRE calls (retries included).
    pub acquires: u64,
    /// ACQUIRE calls with BLOCK.
    pub blocking_acquires: u64,
    /// Lease replies to ACQUIRE (new grants and renewals).
    pub acquire_leases: u64,
    /// New grants (fresh tokens).
    pub grants: u64,
    /// New grants to BLOCK calls.
    pub blocking_grants: u64,
    /// nil replies to ACQUIRE (held, or BLOCK timed out).
    pub contended: u64,
    /// Renewal retries answered with the same token.
    pub renewals: u64,
    /// Renewal retries granted afresh (the first lease had lapsed, the lock was free).
    pub regrants: u64,
    /// Successful plain CONFIRMs.
    pub confirmed: u64,
    /// Successful CONFIRM … EXTEND.
    pub extended: u64,
    /// Successful RELEASEs.
    pub released: u64,
    /// NOTHELD replies.
    pub notheld: u64,
    /// NOTOWNED replies.
    pub notowned: u64,
    /// Calls on a worker's own lease that found it lapsed (NOTHELD/NOTOWNED/nil on retry).
    pub own_lease_lost: u64,
    /// CONFIRM/RELEASE with a released, refused or abandoned lease id.
    pub stale_calls: u64,
    /// CONFIRM/RELEASE with a never-granted lease id.
    pub ghost_calls: u64,
    /// PYLOCK.INFO calls.
    pub infos: u64,
    /// Guarded sections run.
    pub sections: u64,
    /// Reads the fence refused (lower token than one it saw).
    pub fence_read_refused: u64,
    /// Writes the fence refused.
    pub fence_write_refused: u64,
    /// Writes the fence accepted (each adds 1 to a counter).
    pub fence_writes: u64,
    /// Lease cycles whose section started with a claim.
    pub claim_cycles: u64,
    /// CONFIRM … CLAIM calls sent (first tries, retries and duplicates).
    pub claims_sent: u64,
    /// Claims answered with the lease reply (first tries and retries): `INFO pylock_claimed`.
    pub claims_won: u64,
    /// Of those, retries answered with the same lease.
    pub claim_retries_won: u64,
    /// Claims raced by a duplicate.
    pub claim_races: u64,
    /// Claims answered `CLAIMED`.
    pub claims_refused_claimed: u64,
    /// Claims that found the lease lapsed (NOTHELD/NOTOWNED).
    pub claims_lapsed: u64,
    /// Stale CONFIRM/RELEASE answered `CLAIMED`.
    pub stale_claimed: u64,
    /// Fenced writes by a race's loser with its older token.
    pub fence_probes: u64,
    /// Watches sent.
    pub watches: u64,
    /// Watches the worker saw blocked before it went on.
    pub watches_confirmed: u64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        macro_rules! sum {
            ($($f:ident),*) => { $( self.$f += o.$f; )* };
        }
        sum!(
            commands,
            acquires,
            blocking_acquires,
            acquire_leases,
            grants,
            blocking_grants,
            contended,
            renewals,
            regrants,
            confirmed,
            extended,
            released,
            notheld,
            notowned,
            own_lease_lost,
            stale_calls,
            ghost_calls,
            infos,
            sections,
            fence_read_refused,
            fence_write_refused,
            fence_writes,
            claim_cycles,
            claims_sent,
            claims_won,
            claim_retries_won,
            claim_races,
            claims_refused_claimed,
            claims_lapsed,
            stale_claimed,
            fence_probes,
            watches,
            watches_confirmed
        );
    }
}

/// Everything a run recorded.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Every grant, all workers.
    pub grants: Vec<Grant>,
    /// Every guarded section.
    pub sections: Vec<Section>,
    /// Holders seen by PYLOCK.INFO: (key, lease id, token).
    pub seen_holders: Vec<(usize, Vec<u8>, i64)>,
    /// Every claim sent.
    pub claims: Vec<Claim>,
    /// Every fenced write by a race's loser.
    pub fence_probes: Vec<FenceProbe>,
    /// Every answered `ACQUIRE … BLOCK` (not the renewal retries).
    pub waits: Vec<Wait>,
    /// Every sighting of a client blocked in `PYLOCK.ACQUIRE` (one server only).
    pub seen_queued: Vec<SeenQueued>,
    /// The faults injected, in order.
    pub faults: Vec<Fault>,
    /// Violations found while running (a non-owner's success, a wrong token, an unexpected
    /// reply).
    pub violations: Vec<String>,
    /// Sums.
    pub counts: Counts,
    /// Fence writes accepted per key.
    pub writes_per_key: Vec<u64>,
    /// Wall time of the run.
    pub elapsed: Duration,
}

/// The checker's verdict.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Sums of the run.
    pub counts: Counts,
    /// Pairs of grants whose order the timing fixed, each checked for token order.
    pub ordered_pairs: u64,
    /// Leases with a proven validity interval.
    pub proven_intervals: u64,
    /// Sections proven to have run under a valid lease.
    pub confirmed_sections: u64,
    /// Log entries read back from the server.
    pub log_entries: u64,
    /// Leases claimed, each checked for a single successful claimant.
    pub claimed_leases: u64,
    /// Claimed leases whose claim was raced by a duplicate.
    pub raced_leases: u64,
    /// Waiters seen queued (blocked in `ACQUIRE … BLOCK`) by the observer, each checked
    /// against every grant requested after it was seen.
    pub waiters_seen_queued: u64,
    /// Pairs (a waiter seen queued, a grant of its key requested later) checked for FIFO order.
    pub fifo_pairs: u64,
    /// The most proven validity intervals of one key open at one moment (at most the limit).
    pub peak_proven_concurrency: u64,
    /// Watches checked (answered).
    pub watches_checked: u64,
    /// Notification delays (µs, an upper bound: from the earliest moment the lease could have
    /// ended) of watches seen blocked, by the reason answered; faults not involved.
    pub watch_delays: Vec<(String, u64)>,
    /// The same, for watches whose lease ended during or just before a fault (measured from
    /// the fault's end), and `flushed` answers (from the reload's end).
    pub watch_delays_after_faults: Vec<(String, u64)>,
    /// Answered watches whose end is known only within a window wider than [`TIGHT_US`] (a
    /// BLOCK grant's deadline that could not be read back because the lease ended first):
    /// checked for lateness, but left out of the delays.
    pub watch_ends_unbounded: u64,
    /// Answered watches that came later than the limit (each is also a violation).
    pub watch_late: u64,
    /// Every violation found (empty: the run passed).
    pub violations: Vec<String>,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl Report {
    /// Whether no violation was found.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// A human-readable summary and verdict.
    pub fn summary(&self) -> String {
        let c = &self.counts;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "ran {:.1} s: {} commands ({} ACQUIRE, {} with BLOCK; {} INFO; {} stale and {} ghost CONFIRM/RELEASE)",
            self.elapsed.as_secs_f64(),
            c.commands,
            c.acquires,
            c.blocking_acquires,
            c.infos,
            c.stale_calls,
            c.ghost_calls
        );
        let _ = writeln!(
            s,
            "grants {} ({} by BLOCK, {} re-grants), renewals {}, contended {}, confirmed {}, extended {}, released {}, NOTHELD {}, NOTOWNED {}, own leases found lapsed {}",
            c.grants, c.blocking_grants, c.regrants, c.renewals, c.contended, c.confirmed,
            c.extended, c.released, c.notheld, c.notowned, c.own_lease_lost
        );
        let _ = writeln!(
            s,
            "guarded sections {} ({} proven under a valid lease), fence writes {} accepted, {} reads and {} writes refused",
            c.sections,
            self.confirmed_sections,
            c.fence_writes,
            c.fence_read_refused,
            c.fence_write_refused
        );
        let _ = writeln!(
            s,
            "claims: {} sections began with one, {} sent ({} raced by a duplicate), {} won ({} of them retries), {} answered CLAIMED, {} found the lease lapsed; {} stale calls answered CLAIMED; {} fenced writes by losers with the older token",
            c.claim_cycles,
            c.claims_sent,
            c.claim_races,
            c.claims_won,
            c.claim_retries_won,
            c.claims_refused_claimed,
            c.claims_lapsed,
            c.stale_claimed,
            c.fence_probes
        );
        let _ = writeln!(
            s,
            "watches: {} sent, {} seen blocked, {} answered and checked ({} with an end known only within more than {} ms), {} answered later than the limit",
            c.watches,
            c.watches_confirmed,
            self.watches_checked,
            self.watch_ends_unbounded,
            TIGHT_US / 1000,
            self.watch_late
        );
        for (what, delays) in [
            ("without faults", &self.watch_delays),
            ("after a fault", &self.watch_delays_after_faults),
        ] {
            for reason in ["released", "claimed", "expired", "flushed"] {
                let mut d: Vec<u64> = delays
                    .iter()
                    .filter(|(r, _)| r == reason)
                    .map(|(_, d)| *d)
                    .collect();
                if d.is_empty() {
                    continue;
                }
                d.sort_unstable();
                let _ = writeln!(
                    s,
                    "  watch delay, {reason} {what}: n {}, median {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                    d.len(),
                    percentile(&d, 50) as f64 / 1000.0,
                    percentile(&d, 99) as f64 / 1000.0,
                    d[d.len() - 1] as f64 / 1000.0
                );
            }
        }
        let _ = writeln!(
            s,
            "checked: {} time-ordered grant pairs, {} proven validity intervals (at most {} open at once on one key), {} server log entries, {} claimed leases ({} raced), {} waiters seen queued against {} later-requested grants (FIFO)",
            self.ordered_pairs,
            self.proven_intervals,
            self.peak_proven_concurrency,
            self.log_entries,
            self.claimed_leases,
            self.raced_leases,
            self.waiters_seen_queued,
            self.fifo_pairs
        );
        crate::write_verdict(&mut s, &self.violations);
        s
    }
}

/// How precisely a lease's end must be known (µs) for its watcher's delay to be reported.
pub const TIGHT_US: u64 = 5000;

/// The `p`th percentile of sorted values (nearest rank).
pub fn percentile(sorted: &[u64], p: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

/// The key names of lock `i`: the lock, its fence, its counter and its log. They share a hash
/// tag, so on a cluster they live on one node and the fence's script can reach all of them.
pub fn key_names(i: usize) -> [String; 4] {
    [
        format!("lock:{{c:{i}}}"),
        format!("fence:{{c:{i}}}"),
        format!("counter:{{c:{i}}}"),
        format!("log:{{c:{i}}}"),
    ]
}

/// Tokens are compared as decimal strings (length first), so the fence is exact for every
/// positive i64, beyond Lua's 2^53.
const FENCE_LIB: &str = r#"
local function lower(a, b) return #a < #b or (#a == #b and a < b) end
local max = redis.call('HGET', KEYS[1], 'max') or '0'
local t = ARGV[1]
"#;

/// The fence's read: KEYS = fence, log, counter; ARGV = token. `{1, value}` or `{0}`.
const ENTER: &str = r#"
if lower(t, max) then redis.call('RPUSH', KEYS[2], 'e:' .. t .. ':0') return {0} end
redis.call('HSET', KEYS[1], 'max', t)
redis.call('RPUSH', KEYS[2], 'e:' .. t .. ':1')
return {1, tonumber(redis.call('GET', KEYS[3]) or '0')}
"#;

/// The fence's write: KEYS = fence, log, counter; ARGV = token, value. 1 or 0.
const EXIT: &str = r#"
if lower(t, max) then redis.call('RPUSH', KEYS[2], 'x:' .. t .. ':0') return 0 end
redis.call('HSET', KEYS[1], 'max', t)
redis.call('SET', KEYS[3], ARGV[2])
redis.call('RPUSH', KEYS[2], 'x:' .. t .. ':1')
return 1
"#;

/// A watched lease's deadline: KEYS = lock; ARGV = lease id. Its deadline (Unix ms) while that
/// lease holds the key, else nil: a lock's `PEXPIRETIME` (exact), or on a semaphore, whose key
/// TTL is its latest lease's, the server's clock plus the lease's TTL left in `PYLOCK.INFO`
/// (to within a millisecond either side).
const DEADLINE: &str = r#"
local info = redis.call('PYLOCK.INFO', KEYS[1])
if not info then return false end
if info[1] == 'lease' then
  if info[2] ~= ARGV[1] then return false end
  return redis.call('PEXPIRETIME', KEYS[1])
end
for _, l in ipairs(info[8]) do
  if l[1] == ARGV[1] then
    local t = redis.call('TIME')
    return math.floor(tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000) + l[3]
  end
end
return false
"#;

/// A reply, classified.
#[derive(Debug)]
enum Reply {
    Lease(Vec<u8>, i64),
    Nil,
    One,
    NotHeld,
    NotOwned,
    Claimed,
    Other(String),
}

/// Sends a command; a `LOADING` refusal (the server is loading, as during `DEBUG LOADAOF`) ran
/// nothing, so the command is sent again. `sent` is then moved to the last attempt.
fn query_retrying(
    con: &mut dyn ConnectionLike,
    cmd: &redis::Cmd,
    sent: &mut Option<Instant>,
) -> redis::RedisResult<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(s) = sent.as_mut() {
            *s = Instant::now();
        }
        match cmd.query::<Value>(con) {
            Err(e) if e.code() == Some("LOADING") && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2));
            }
            other => return other,
        }
    }
}

fn call(con: &mut dyn ConnectionLike, args: &[&[u8]], sent: &mut Option<Instant>) -> Reply {
    let mut cmd = redis::cmd(std::str::from_utf8(args[0]).unwrap_or("PING"));
    for a in &args[1..] {
        cmd.arg(*a);
    }
    match query_retrying(con, &cmd, sent) {
        Ok(Value::Nil) => Reply::Nil,
        Ok(Value::Int(1)) => Reply::One,
        Ok(Value::Array(items)) => match items.as_slice() {
            [Value::BulkString(id), Value::Int(token), Value::Int(_)] => {
                Reply::Lease(id.clone(), *token)
            }
            _ => Reply::Other(format!("{items:?}")),
        },
        Ok(other) => Reply::Other(format!("{other:?}")),
        Err(e) => match e.code() {
            Some("NOTHELD") => Reply::NotHeld,
            Some("NOTOWNED") => Reply::NotOwned,
            Some("CLAIMED") => Reply::Claimed,
            _ => Reply::Other(testkit::error_text(&e)),
        },
    }
}

/// A lease id a worker used before, to try again later.
struct Stale {
    key: usize,
    id: Vec<u8>,
    /// Index in the worker's grants.
    grant: usize,
    /// Released, claimed away, or refused: any later success is a violation.
    dead: bool,
}

/// A watch for the watcher thread: the grant (index in the worker's grants), its key and id.
struct WatchJob {
    grant: usize,
    key: usize,
    id: Vec<u8>,
}

/// A watch's answer, from the watcher thread.
struct WatchDone {
    grant: usize,
    sent: u64,
    answer: WatchAnswer,
    at: u64,
}

/// A worker's watcher: a thread with its own connection that runs one WATCH at a time.
struct Watcher {
    jobs: Option<mpsc::Sender<WatchJob>>,
    done: mpsc::Receiver<WatchDone>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The watcher connection's `CLIENT ID`, to see it blocked; `None` on a cluster.
    client_id: Option<i64>,
    /// The grant being watched now.
    busy: Option<usize>,
}

/// The watches' TIMEOUT: far beyond any lease's life in the workload, so nil means a watcher
/// that was never told.
const WATCH_TIMEOUT_MS: u64 = 3000;

fn watch_loop(
    mut con: Box<dyn ConnectionLike + Send>,
    jobs: mpsc::Receiver<WatchJob>,
    done: mpsc::Sender<WatchDone>,
    start: Instant,
) {
    let since = |at: Instant| at.saturating_duration_since(start).as_micros() as u64;
    while let Ok(job) = jobs.recv() {
        let [lock, ..] = key_names(job.key);
        let mut cmd = redis::cmd("PYLOCK.WATCH");
        cmd.arg(&lock)
            .arg(&job.id)
            .arg("TIMEOUT")
            .arg(WATCH_TIMEOUT_MS);
        let mut sent = Some(Instant::now());
        let reply = query_retrying(&mut *con, &cmd, &mut sent);
        let at = since(Instant::now());
        let answer = match reply {
            Ok(Value::BulkString(b)) => WatchAnswer::Reason(String::from_utf8_lossy(&b).into()),
            Ok(Value::Nil) => WatchAnswer::Nil,
            Ok(other) => WatchAnswer::Error(format!("{other:?}")),
            Err(e) => WatchAnswer::Error(testkit::error_text(&e)),
        };
        let sent = sent.map_or(0, since);
        let out = WatchDone {
            grant: job.grant,
            sent,
            answer,
            at,
        };
        if done.send(out).is_err() {
            return;
        }
    }
}

fn claim_args<'a>(
    lock: &'a str,
    from: &'a [u8],
    to: &'a [u8],
    extend: &'a Option<String>,
) -> Vec<&'a [u8]> {
    let mut args: Vec<&[u8]> = vec![b"PYLOCK.CONFIRM", lock.as_bytes(), from];
    if let Some(e) = extend {
        args.extend([b"EXTEND".as_slice(), e.as_bytes()]);
    }
    args.extend([b"CLAIM".as_slice(), to]);
    args
}

/// One call with its request/reply window in µs since `start`.
fn timed(con: &mut dyn ConnectionLike, args: &[&[u8]], start: Instant) -> (Reply, u64, u64) {
    let mut at = Some(Instant::now());
    let r = call(con, args, &mut at);
    let received = start.elapsed().as_micros() as u64;
    let sent = at.map_or(0, |at| at.duration_since(start).as_micros() as u64);
    (r, sent, received)
}

struct Worker<'a> {
    n: usize,
    cfg: &'a Config,
    con: Box<dyn ConnectionLike + Send>,
    /// `con`'s `CLIENT ID`, for the FIFO check; `None` on a cluster.
    client_id: Option<i64>,
    /// The duplicate claimant's connection.
    dup: Box<dyn ConnectionLike + Send>,
    watcher: Option<Watcher>,
    rng: Rng,
    start: Instant,
    /// `start` in Unix µs.
    wall_start_us: i64,
    serial: u64,
    stale: Vec<Stale>,
    out: History,
}

impl Worker<'_> {
    fn now(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    fn count_reply(&mut self, r: &Reply) {
        self.out.counts.commands += 1;
        match r {
            Reply::NotHeld => self.out.counts.notheld += 1,
            Reply::NotOwned => self.out.counts.notowned += 1,
            _ => {}
        }
    }

    fn send(&mut self, args: &[&[u8]]) -> (Reply, u64, u64) {
        let out = timed(&mut *self.con, args, self.start);
        self.count_reply(&out.0);
        out
    }

    fn violation(&mut self, text: String) {
        self.out
            .violations
            .push(format!("worker {}: {text}", self.n));
    }

    fn unexpected(&mut self, what: &str, r: &Reply) {
        let text = match r {
            Reply::Other(text) => text.clone(),
            other => format!("{other:?}"),
        };
        self.violation(format!("unexpected reply to {what}: {text}"));
    }

    fn next_id(&mut self, prefix: &str) -> Vec<u8> {
        self.serial += 1;
        format!("{prefix}-{}-{}-{}", self.cfg.seed, self.n, self.serial).into_bytes()
    }

    fn record_grant(&mut self, grant: Grant) -> usize {
        self.out.counts.grants += 1;
        if grant.blocking {
            self.out.counts.blocking_grants += 1;
        }
        self.out.grants.push(grant);
        self.out.grants.len() - 1
    }

    fn prove(&mut self, grant: usize, sent: u64) {
        let g = &mut self.out.grants[grant];
        g.last_proof = Some(g.last_proof.map_or(sent, |p| p.max(sent)));
    }

    /// A renewal or EXTEND of `grant` for `ttl_ms`, answered in `window`.
    fn renewed(&mut self, grant: usize, window: (u64, u64), ttl_ms: i64) {
        let ttl = ttl_ms.max(0) as u64 * 1000;
        self.out.grants[grant].deadline = (window.0 + ttl, window.1 + ttl);
        self.read_deadline(grant);
    }

    /// For a watched lease, reads its deadline from the server (`PEXPIRETIME`, in the same
    /// script as a check that the lease still holds): the request/reply window of a `BLOCK`
    /// grant can be hundreds of ms wide, the deadline itself is exact to the millisecond. The
    /// server's clock is this machine's, so Unix ms convert to the run's µs.
    fn read_deadline(&mut self, grant: usize) {
        if self.out.grants[grant].watch.is_none() {
            return;
        }
        let [lock, ..] = key_names(self.out.grants[grant].key);
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(DEADLINE)
            .arg(1)
            .arg(&lock)
            .arg(&self.out.grants[grant].id);
        self.out.counts.commands += 1;
        if let Ok(Value::Int(ms)) = query_retrying(&mut *self.con, &cmd, &mut None) {
            let at = (ms as i128 * 1000 - self.wall_start_us as i128).max(0) as u64;
            let before = if self.cfg.limit > 1 { 1000 } else { 0 };
            self.out.grants[grant].deadline = (at.saturating_sub(before), at + 1000);
        }
    }

    fn ended(&mut self, grant: usize, kind: EndKind, window: (u64, u64)) {
        self.out.grants[grant].end = Some(End {
            kind,
            sent: window.0,
            received: window.1,
        });
    }

    fn remember(&mut self, key: usize, id: Vec<u8>, grant: usize, dead: bool) {
        if self.stale.len() >= 8 {
            self.stale.remove(0);
        }
        self.stale.push(Stale {
            key,
            id,
            grant,
            dead,
        });
    }

    fn run(&mut self, until: Instant) {
        while Instant::now() < until && self.out.violations.len() < 100 {
            self.collect_watches(false);
            let key = self.rng.below(self.cfg.keys as u64) as usize;
            match self.rng.below(100) {
                0..=71 => self.lease_cycle(key),
                72..=83 => self.stale_call(),
                84..=91 => self.ghost_call(key),
                _ => self.look(key),
            }
        }
        // Every lease of the run ends by itself (release or expiry), so the last watch ends.
        if let Some(w) = self.watcher.as_mut() {
            w.jobs = None;
            if let Some(t) = w.thread.take() {
                if t.join().is_err() {
                    self.violation("the watcher thread panicked".into());
                }
            }
        }
        self.collect_watches(false);
    }

    /// Stores the answers the watcher has sent. With `one`, returns after the first (or at
    /// once if there is none).
    fn collect_watches(&mut self, one: bool) -> bool {
        let mut got = false;
        while let Some(d) = self.watcher.as_ref().and_then(|w| w.done.try_recv().ok()) {
            if let Some(w) = self.watcher.as_mut() {
                if w.busy == Some(d.grant) {
                    w.busy = None;
                }
            }
            if let Some(watch) = self.out.grants[d.grant].watch.as_mut() {
                watch.sent = d.sent;
                watch.answer = Some((d.answer, d.at));
            }
            got = true;
            if one {
                break;
            }
        }
        got
    }

    /// Hands `grant` to the watcher if it is free (and the dice say so), then waits until the
    /// server shows the watcher blocked, or answered, or 1 s has passed.
    fn maybe_watch(&mut self, grant: usize) {
        if !self.rng.chance(self.cfg.watch_percent) {
            return;
        }
        self.collect_watches(false);
        let (key, id) = (
            self.out.grants[grant].key,
            self.out.grants[grant].id.clone(),
        );
        let Some(w) = self.watcher.as_mut() else {
            return;
        };
        let Some(jobs) = w.jobs.as_ref() else {
            return;
        };
        if w.busy.is_some() || jobs.send(WatchJob { grant, key, id }).is_err() {
            return;
        }
        w.busy = Some(grant);
        let client_id = w.client_id;
        self.out.counts.watches += 1;
        self.out.grants[grant].watch = Some(Watch {
            sent: self.now(),
            confirmed: false,
            timeout_ms: WATCH_TIMEOUT_MS,
            answer: None,
        });
        if let Some(client_id) = client_id {
            self.see_blocked(grant, client_id);
        }
        self.read_deadline(grant);
    }

    /// Waits until the server shows the watcher `client_id` blocked (the watch of `grant` is
    /// in place), or answered, or 1 s has passed.
    fn see_blocked(&mut self, grant: usize, client_id: i64) {
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            if self.collect_watches(true) {
                return;
            }
            self.out.counts.commands += 1;
            let list = query_retrying(
                &mut *self.con,
                redis::cmd("CLIENT").arg("LIST").arg("ID").arg(client_id),
                &mut None,
            );
            let blocked = match list {
                Ok(Value::BulkString(b)) => {
                    let line = String::from_utf8_lossy(&b).into_owned();
                    let field = |name: &str| {
                        line.split_whitespace()
                            .find_map(|f| f.strip_prefix(name))
                            .map(str::to_owned)
                    };
                    field("cmd=").as_deref() == Some("pylock.watch")
                        && field("flags=").is_some_and(|f| f.contains('b'))
                }
                _ => false,
            };
            if blocked {
                self.out.counts.watches_confirmed += 1;
                if let Some(w) = self.out.grants[grant].watch.as_mut() {
                    w.confirmed = true;
                }
                return;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    fn lease_cycle(&mut self, key: usize) {
        let [lock, fence, counter, log] = key_names(key);
        let (lo, hi) = self.cfg.ttl_ms;
        let ttl = self.rng.range(lo, hi);
        let ttl_s = ttl.to_string();
        let custom = self.rng.chance(50).then(|| self.next_id("w"));
        let block = self
            .rng
            .chance(self.cfg.block_percent)
            .then(|| self.rng.range(5, 3 * hi).to_string());
        let mut args: Vec<&[u8]> = vec![b"PYLOCK.ACQUIRE", lock.as_bytes(), ttl_s.as_bytes()];
        if let Some(id) = &custom {
            args.extend([b"LEASE".as_slice(), id]);
        }
        if let Some(b) = &block {
            args.extend([b"BLOCK".as_slice(), b.as_bytes()]);
        }
        let limit_s = self.cfg.limit.to_string();
        if self.cfg.limit > 1 {
            args.extend([b"LIMIT".as_slice(), limit_s.as_bytes()]);
        }
        self.out.counts.acquires += 1;
        if block.is_some() {
            self.out.counts.blocking_acquires += 1;
        }
        let (r, sent, received) = self.send(&args);
        if let (Some(client), Some(b)) = (self.client_id, &block) {
            let token = match r {
                Reply::Lease(_, t) => Some(Some(t)),
                Reply::Nil => Some(None),
                _ => None,
            };
            if let Some(token) = token {
                self.out.waits.push(Wait {
                    key,
                    client,
                    sent,
                    received,
                    block_ms: b.parse().unwrap_or(0),
                    token,
                });
            }
        }
        let (id, token) = match r {
            Reply::Nil => {
                self.out.counts.contended += 1;
                return;
            }
            Reply::Lease(id, token) => (id, token),
            other => return self.unexpected("ACQUIRE", &other),
        };
        self.out.counts.acquire_leases += 1;
        if custom.as_ref().is_some_and(|c| *c != id) {
            self.violation(format!("asked for lease {custom:?}, granted {id:?}"));
        }
        let mut g = Grant::new(key, &id, token, (sent, received), ttl);
        g.blocking = block.is_some();
        let mut grant = self.record_grant(g);
        let mut token = token;
        let mut id = id;

        // A retry with the same LEASE, as after a lost reply: a renewal while the lease holds.
        if custom.is_some() && self.rng.chance(15) {
            self.out.counts.acquires += 1;
            let mut retry: Vec<&[u8]> = vec![
                b"PYLOCK.ACQUIRE",
                lock.as_bytes(),
                ttl_s.as_bytes(),
                b"LEASE",
                &id,
            ];
            if self.cfg.limit > 1 {
                retry.extend([b"LIMIT".as_slice(), limit_s.as_bytes()]);
            }
            let (r, sent, received) = self.send(&retry);
            match r {
                Reply::Lease(_, t) if t == token => {
                    self.out.counts.acquire_leases += 1;
                    self.out.counts.renewals += 1;
                    self.prove(grant, sent);
                    self.renewed(grant, (sent, received), ttl);
                }
                Reply::Lease(_, t) => {
                    // The first lease lapsed and the lock was free: a new grant, same id.
                    self.out.counts.acquire_leases += 1;
                    self.out.counts.regrants += 1;
                    self.remember(key, id.clone(), grant, true);
                    grant = self.record_grant(Grant::new(key, &id, t, (sent, received), ttl));
                    token = t;
                }
                Reply::Nil => {
                    self.out.counts.contended += 1;
                    self.out.counts.own_lease_lost += 1;
                    self.remember(key, id, grant, true);
                    return;
                }
                other => return self.unexpected("ACQUIRE retry", &other),
            }
        }

        // The section may start with a claim of the lease, as a task message's run would.
        let claim_mode = self
            .rng
            .chance(self.cfg.claim_percent)
            .then(|| self.rng.below(3));
        self.maybe_watch(grant);
        let mut loser = None;
        if let Some(mode) = claim_mode {
            let Some((g, new_id, t, lost)) = self.claim(key, grant, mode) else {
                return;
            };
            (grant, id, token, loser) = (g, new_id, t, lost);
            self.maybe_watch(grant);
        }

        // The guarded section: read through the fence, work, write through the fence.
        self.out.counts.sections += 1;
        let t = token.to_string();
        let fenced = |con: &mut dyn ConnectionLike, body: &str, args: &[&str]| {
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(format!("{FENCE_LIB}{body}"))
                .arg(3)
                .arg(&fence)
                .arg(&log)
                .arg(&counter)
                .arg(args);
            query_retrying(con, &cmd, &mut None)
        };
        self.out.counts.commands += 1;
        let entered = match fenced(&mut *self.con, ENTER, &[&t]) {
            Ok(Value::Array(v)) => match v.as_slice() {
                [Value::Int(1), Value::Int(value)] => Some(*value),
                [Value::Int(0)] => None,
                _ => return self.violation(format!("fence read replied {v:?}")),
            },
            other => return self.violation(format!("fence read replied {other:?}")),
        };
        // The race's loser ignores its CLAIMED and writes with the claimed lease's token, after
        // the winner entered: the fence must refuse it.
        if let Some(old) = loser {
            self.out.counts.fence_probes += 1;
            self.out.counts.commands += 1;
            let value = (entered.unwrap_or(0) + 1).to_string();
            let accepted = match fenced(&mut *self.dup, EXIT, &[&old.to_string(), &value]) {
                Ok(Value::Int(1)) => true,
                Ok(Value::Int(0)) => false,
                other => return self.violation(format!("loser's fence write replied {other:?}")),
            };
            if accepted {
                self.out.counts.fence_writes += 1;
                self.out.writes_per_key[key] += 1;
            }
            self.out.fence_probes.push(FenceProbe {
                key,
                token: old,
                above: token,
                accepted,
            });
        }
        let work_ms = if self.rng.chance(70) {
            self.rng.range(0, ttl / 2 + 1)
        } else {
            self.rng.range(ttl / 2, ttl * 3 / 2 + 1)
        };
        std::thread::sleep(Duration::from_millis(work_ms as u64));
        let mut wrote = false;
        match entered {
            None => self.out.counts.fence_read_refused += 1,
            Some(value) => {
                self.out.counts.commands += 1;
                match fenced(&mut *self.con, EXIT, &[&t, &(value + 1).to_string()]) {
                    Ok(Value::Int(1)) => {
                        wrote = true;
                        self.out.counts.fence_writes += 1;
                        self.out.writes_per_key[key] += 1;
                    }
                    Ok(Value::Int(0)) => self.out.counts.fence_write_refused += 1,
                    other => return self.violation(format!("fence write replied {other:?}")),
                }
            }
        }
        let section = self.out.sections.len();
        self.out.sections.push(Section {
            key,
            token,
            confirmed: false,
            entered: entered.is_some(),
            wrote,
        });

        // CONFIRM, plain or with EXTEND.
        let mut alive = true;
        if self.rng.chance(60) {
            let extend = self.rng.chance(50).then(|| self.rng.range(lo, hi));
            let extend_s = extend.map(|e| e.to_string());
            let mut args: Vec<&[u8]> = vec![b"PYLOCK.CONFIRM", lock.as_bytes(), &id];
            if let Some(e) = &extend_s {
                args.extend([b"EXTEND".as_slice(), e.as_bytes()]);
            }
            let (r, sent, received) = self.send(&args);
            match r {
                Reply::Lease(got, t) => {
                    if got != id || t != token {
                        self.violation(format!("CONFIRM of {id:?}/{token} answered {got:?}/{t}"));
                    }
                    if let Some(e) = extend {
                        self.out.counts.extended += 1;
                        self.renewed(grant, (sent, received), e);
                    } else {
                        self.out.counts.confirmed += 1;
                    }
                    self.prove(grant, sent);
                    self.out.sections[section].confirmed = true;
                }
                Reply::NotHeld | Reply::NotOwned => {
                    self.out.counts.own_lease_lost += 1;
                    alive = false;
                }
                other => return self.unexpected("CONFIRM", &other),
            }
        }
        // RELEASE, usually; otherwise the lease is left to expire.
        if alive && self.rng.chance(80) {
            let (r, sent, received) = self.send(&[b"PYLOCK.RELEASE", lock.as_bytes(), &id]);
            match r {
                Reply::One => {
                    self.out.counts.released += 1;
                    self.prove(grant, sent);
                    self.ended(grant, EndKind::Released, (sent, received));
                    self.out.sections[section].confirmed = true;
                }
                Reply::NotHeld | Reply::NotOwned => self.out.counts.own_lease_lost += 1,
                other => return self.unexpected("RELEASE", &other),
            }
            self.remember(key, id, grant, true);
        } else {
            self.remember(key, id, grant, !alive);
        }
    }

    /// Claims the lease of `from`: `mode` 0 once, 1 then a retry of the same claim, 2 raced by
    /// a duplicate on the second connection (and the winner sometimes retries). Returns the
    /// lease the section runs under (grant index, id, token) and, after a race, the claimed
    /// lease's token for the loser's fenced write; `None` if no claim won (the lease lapsed).
    fn claim(
        &mut self,
        key: usize,
        from: usize,
        mode: u64,
    ) -> Option<(usize, Vec<u8>, i64, Option<i64>)> {
        let [lock, ..] = key_names(key);
        let (lo, hi) = self.cfg.ttl_ms;
        let (from_id, from_token) = (
            self.out.grants[from].id.clone(),
            self.out.grants[from].token,
        );
        let new_id = self.next_id("c");
        let extend = self.rng.chance(40).then(|| self.rng.range(lo, hi));
        let extend_s = extend.map(|e| e.to_string());
        self.out.counts.claim_cycles += 1;
        let mine = claim_args(&lock, &from_id, &new_id, &extend_s);
        let race = mode == 2;
        let dup_id = race.then(|| self.next_id("d"));
        let mut attempts: Vec<(Vec<u8>, (Reply, u64, u64))> = Vec::new();
        if let Some(dup_id) = &dup_id {
            self.out.counts.claim_races += 1;
            let theirs = claim_args(&lock, &from_id, dup_id, &extend_s);
            let start = self.start;
            let (con, dup) = (&mut self.con, &mut self.dup);
            let (m, d) = std::thread::scope(|s| {
                let h = s.spawn(|| timed(&mut **dup, &theirs, start));
                let m = timed(&mut **con, &mine, start);
                (m, h.join())
            });
            attempts.push((new_id.clone(), m));
            match d {
                Ok(d) => attempts.push((dup_id.clone(), d)),
                Err(_) => self.violation("the duplicate claimant panicked".into()),
            }
        } else {
            let m = timed(&mut *self.con, &mine, self.start);
            attempts.push((new_id.clone(), m));
        }
        let mut winner: Option<(usize, Vec<u8>, i64)> = None;
        for (claimed_id, (r, sent, received)) in attempts {
            self.count_reply(&r);
            self.out.counts.claims_sent += 1;
            let outcome = match r {
                Reply::Lease(got, t) => {
                    if got != claimed_id {
                        self.violation(format!(
                            "claim for {claimed_id:?} answered the lease {got:?}"
                        ));
                    }
                    ClaimOutcome::Won(t)
                }
                Reply::Claimed => ClaimOutcome::Claimed,
                Reply::NotHeld => ClaimOutcome::NotHeld,
                Reply::NotOwned => ClaimOutcome::NotOwned,
                other => {
                    self.unexpected("CONFIRM … CLAIM", &other);
                    continue;
                }
            };
            self.out.claims.push(Claim {
                key,
                from_id: from_id.clone(),
                from_token,
                new_id: claimed_id.clone(),
                sent,
                received,
                retry: false,
                outcome,
            });
            match outcome {
                ClaimOutcome::Won(t) => {
                    self.out.counts.claims_won += 1;
                    let mut g = Grant::new(key, &claimed_id, t, (sent, received), 0);
                    g.claimed_from = Some(from_id.clone());
                    g.deadline = self.out.grants[from].deadline;
                    let g = self.record_grant(g);
                    if let Some(e) = extend {
                        self.renewed(g, (sent, received), e);
                    }
                    self.prove(from, sent);
                    self.ended(from, EndKind::Claimed, (sent, received));
                    // Two winners are a violation the check reports; the section takes the first.
                    if winner.is_none() {
                        winner = Some((g, claimed_id, t));
                    }
                }
                ClaimOutcome::Claimed => self.out.counts.claims_refused_claimed += 1,
                ClaimOutcome::NotHeld | ClaimOutcome::NotOwned => {
                    self.out.counts.claims_lapsed += 1
                }
            }
        }
        self.remember(key, from_id.clone(), from, true);
        let Some((grant, id, token)) = winner else {
            self.out.counts.own_lease_lost += 1;
            return None;
        };
        // The same claim again, as after a lost reply: the same lease, the same token.
        if mode == 1 || (race && self.rng.chance(30)) {
            let args = claim_args(&lock, &from_id, &id, &extend_s);
            let (r, sent, received) = self.send(&args);
            self.out.counts.claims_sent += 1;
            let outcome = match r {
                Reply::Lease(ref got, t) => {
                    if *got != id || t != token {
                        self.violation(format!(
                            "a retried claim of {:?} as {:?}/{token} answered {:?}/{t}",
                            String::from_utf8_lossy(&from_id),
                            String::from_utf8_lossy(&id),
                            String::from_utf8_lossy(got)
                        ));
                    }
                    self.out.counts.claims_won += 1;
                    self.out.counts.claim_retries_won += 1;
                    self.prove(grant, sent);
                    if let Some(e) = extend {
                        self.renewed(grant, (sent, received), e);
                    }
                    ClaimOutcome::Won(t)
                }
                Reply::Claimed => ClaimOutcome::Claimed,
                Reply::NotHeld => ClaimOutcome::NotHeld,
                Reply::NotOwned => ClaimOutcome::NotOwned,
                other => {
                    self.unexpected("CONFIRM … CLAIM retry", &other);
                    return None;
                }
            };
            self.out.claims.push(Claim {
                key,
                from_id: from_id.clone(),
                from_token,
                new_id: id.clone(),
                sent,
                received,
                retry: true,
                outcome,
            });
            match outcome {
                ClaimOutcome::Won(_) => {}
                ClaimOutcome::Claimed => {
                    self.out.counts.claims_refused_claimed += 1;
                    self.violation(format!(
                        "a retried claim of {:?} as {:?} answered CLAIMED",
                        String::from_utf8_lossy(&from_id),
                        String::from_utf8_lossy(&id)
                    ));
                    return None;
                }
                ClaimOutcome::NotHeld | ClaimOutcome::NotOwned => {
                    // The claimed lease lapsed in between (a stopped server, a long wait).
                    self.out.counts.claims_lapsed += 1;
                    self.out.counts.own_lease_lost += 1;
                    self.remember(key, id, grant, true);
                    return None;
                }
            }
        }
        Some((grant, id, token, race.then_some(from_token)))
    }

    fn stale_call(&mut self) {
        if self.stale.is_empty() {
            return;
        }
        let i = self.rng.below(self.stale.len() as u64) as usize;
        let (key, id, grant, dead) = {
            let s = &self.stale[i];
            (s.key, s.id.clone(), s.grant, s.dead)
        };
        let [lock, ..] = key_names(key);
        self.out.counts.stale_calls += 1;
        let release = self.rng.chance(50);
        let cmd: &[u8] = if release {
            b"PYLOCK.RELEASE"
        } else {
            b"PYLOCK.CONFIRM"
        };
        let (r, sent, received) = self.send(&[cmd, lock.as_bytes(), &id]);
        let success = match r {
            Reply::One if release => true,
            Reply::Lease(ref got, t) if !release => {
                let g = &self.out.grants[grant];
                if *got != id || t != g.token {
                    let want = g.token;
                    self.violation(format!(
                        "stale CONFIRM of {id:?}/{want} answered {got:?}/{t}"
                    ));
                }
                true
            }
            Reply::NotHeld | Reply::NotOwned => false,
            Reply::Claimed => {
                self.out.counts.stale_claimed += 1;
                let claimed = self.out.grants.iter().any(|g| {
                    g.key == key && g.id == id && g.end.map(|e| e.kind) == Some(EndKind::Claimed)
                });
                if !claimed {
                    self.violation(format!(
                        "{} of lease {:?} on key {key} answered CLAIMED, but no claim of it succeeded",
                        String::from_utf8_lossy(cmd),
                        String::from_utf8_lossy(&id)
                    ));
                }
                false
            }
            other => return self.unexpected("stale CONFIRM/RELEASE", &other),
        };
        if success {
            if dead {
                self.violation(format!(
                    "{} succeeded for lease {:?} on key {key}, which was released, claimed or refused before",
                    String::from_utf8_lossy(cmd),
                    String::from_utf8_lossy(&id)
                ));
            } else {
                // An abandoned lease that had not expired yet: still its owner's.
                self.prove(grant, sent);
                if release {
                    self.out.counts.released += 1;
                    self.ended(grant, EndKind::Released, (sent, received));
                } else {
                    self.out.counts.confirmed += 1;
                }
            }
        }
        self.stale[i].dead = release || !success || dead;
    }

    fn ghost_call(&mut self, key: usize) {
        let [lock, ..] = key_names(key);
        let id = self.next_id("ghost");
        self.out.counts.ghost_calls += 1;
        let release = self.rng.chance(50);
        let cmd: &[u8] = if release {
            b"PYLOCK.RELEASE"
        } else {
            b"PYLOCK.CONFIRM"
        };
        let (r, _, _) = self.send(&[cmd, lock.as_bytes(), &id]);
        match r {
            Reply::NotHeld | Reply::NotOwned => {}
            other => self.violation(format!(
                "{} with a never-granted lease answered {other:?}",
                String::from_utf8_lossy(cmd)
            )),
        }
    }

    fn look(&mut self, key: usize) {
        let [lock, ..] = key_names(key);
        self.out.counts.infos += 1;
        self.out.counts.commands += 1;
        match query_retrying(
            &mut *self.con,
            redis::cmd("PYLOCK.INFO").arg(&lock),
            &mut None,
        ) {
            Ok(Value::Nil) => {}
            Ok(Value::Array(items)) => match items.as_slice() {
                [_, Value::BulkString(id), _, Value::Int(token), _, Value::Int(_), _, Value::Int(_)]
                    if self.cfg.limit == 1 =>
                {
                    if self.out.seen_holders.len() < 100_000 {
                        self.out.seen_holders.push((key, id.clone(), *token));
                    }
                }
                [Value::BulkString(l), Value::Int(n), _, Value::Int(holders), _, Value::Int(_), _, Value::Array(leases)]
                    if l == b"limit" && self.cfg.limit > 1 =>
                {
                    if *n as u64 != self.cfg.limit
                        || *holders as u64 > self.cfg.limit
                        || leases.len() as i64 != *holders
                    {
                        self.violation(format!("PYLOCK.INFO replied {items:?}"));
                    }
                    for lease in leases {
                        match lease {
                            Value::Array(l) => match l.as_slice() {
                                [Value::BulkString(id), Value::Int(token), Value::Int(_)] => {
                                    if self.out.seen_holders.len() < 100_000 {
                                        self.out.seen_holders.push((key, id.clone(), *token));
                                    }
                                }
                                _ => self.violation(format!("PYLOCK.INFO replied {items:?}")),
                            },
                            _ => self.violation(format!("PYLOCK.INFO replied {items:?}")),
                        }
                    }
                }
                _ => self.violation(format!("PYLOCK.INFO replied {items:?}")),
            },
            other => self.violation(format!("PYLOCK.INFO replied {other:?}")),
        }
    }
}

/// The queue observer: until the workers are done, lists the server's clients about every
/// millisecond and records each one blocked in `PYLOCK.ACQUIRE` (a waiter in a key's queue, or
/// one granted by a hand-off whose reply is still on its way), for the FIFO check.
fn observe_queues(
    mut con: Box<dyn ConnectionLike + Send>,
    log: &Faults,
    start: Instant,
) -> Vec<SeenQueued> {
    let since = |at: Instant| at.saturating_duration_since(start).as_micros() as u64;
    let mut seen = Vec::new();
    while !log.done() && seen.len() < 2_000_000 {
        let mut sent = Some(Instant::now());
        let list = query_retrying(
            &mut *con,
            redis::cmd("CLIENT").arg("LIST").arg("TYPE").arg("normal"),
            &mut sent,
        );
        let received = since(Instant::now());
        let sent = sent.map_or(0, since);
        let text = match list {
            Ok(Value::BulkString(b)) => String::from_utf8_lossy(&b).into_owned(),
            Ok(Value::VerbatimString { text, .. }) => text,
            _ => String::new(),
        };
        for line in text.lines() {
            let field = |name: &str| line.split_whitespace().find_map(|f| f.strip_prefix(name));
            if field("cmd=") == Some("pylock.acquire")
                && field("flags=").is_some_and(|f| f.contains('b'))
            {
                if let Some(client) = field("id=").and_then(|v| v.parse().ok()) {
                    seen.push(SeenQueued {
                        client,
                        sent,
                        received,
                    });
                }
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    seen
}

/// Where the workload runs: one server, or a cluster (each lock's keys share a hash tag, so
/// its fence, counter and log live on the lock's node).
pub trait Target: Sync {
    /// A new connection; for a cluster, one that routes by key.
    fn connect(&self) -> Box<dyn ConnectionLike + Send>;
    /// The `INFO pylock` text of every node.
    fn pylock_info(&self) -> Vec<String>;
    /// Whether a worker can see its watcher blocked with `CLIENT LIST ID` (one server).
    fn sees_clients(&self) -> bool {
        true
    }
}

impl Target for Server {
    fn connect(&self) -> Box<dyn ConnectionLike + Send> {
        Box::new(self.conn())
    }
    fn pylock_info(&self) -> Vec<String> {
        vec![redis::cmd("INFO")
            .arg("pylock")
            .query(&mut self.conn())
            .expect("INFO pylock")]
    }
}

impl Target for Cluster {
    fn connect(&self) -> Box<dyn ConnectionLike + Send> {
        let client = redis::cluster::ClusterClient::new(self.urls()).expect("cluster client");
        Box::new(client.get_connection().expect("cluster connection"))
    }
    fn pylock_info(&self) -> Vec<String> {
        self.nodes().iter().flat_map(Target::pylock_info).collect()
    }
    fn sees_clients(&self) -> bool {
        false
    }
}

/// Runs the workload against `server` until `cfg.duration` has passed, and returns what the
/// clients saw. `faults` runs meanwhile on its own thread, records each fault it injects with
/// [`Faults::inject`], and must return once [`Faults::done`] turns true (when the workers are
/// done).
pub fn run(server: &impl Target, cfg: &Config, faults: impl FnOnce(&Faults) + Send) -> History {
    let mut con = server.connect();
    for i in 0..cfg.keys {
        let names = key_names(i);
        redis::cmd("DEL")
            .arg(&names[..])
            .query::<i64>(&mut *con)
            .expect("clear the run's keys");
    }
    let start = Instant::now();
    let wall_start_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    let until = start + cfg.duration;
    let fault_log = Faults::new(start);
    let mut out = History {
        writes_per_key: vec![0; cfg.keys],
        ..History::default()
    };
    std::thread::scope(|scope| {
        let fault_thread = scope.spawn(|| faults(&fault_log));
        let observer = server.sees_clients().then(|| {
            let con = server.connect();
            let log = &fault_log;
            scope.spawn(move || observe_queues(con, log, start))
        });
        let handles: Vec<_> = (0..cfg.workers)
            .map(|n| {
                let mut con = server.connect();
                let client_id = server.sees_clients().then(|| {
                    redis::cmd("CLIENT")
                        .arg("ID")
                        .query::<i64>(&mut *con)
                        .expect("CLIENT ID")
                });
                let dup = server.connect();
                let watcher = (cfg.watch_percent > 0).then(|| {
                    let mut wcon = server.connect();
                    let client_id = server.sees_clients().then(|| {
                        redis::cmd("CLIENT")
                            .arg("ID")
                            .query::<i64>(&mut *wcon)
                            .expect("CLIENT ID")
                    });
                    let (jobs, job_rx) = mpsc::channel();
                    let (done_tx, done) = mpsc::channel();
                    let thread =
                        std::thread::spawn(move || watch_loop(wcon, job_rx, done_tx, start));
                    Watcher {
                        jobs: Some(jobs),
                        done,
                        thread: Some(thread),
                        client_id,
                        busy: None,
                    }
                });
                scope.spawn(move || {
                    let mut w = Worker {
                        n,
                        cfg,
                        con,
                        client_id,
                        dup,
                        watcher,
                        rng: Rng::new(
                            cfg.seed ^ (n as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d),
                        ),
                        start,
                        wall_start_us,
                        serial: 0,
                        stale: Vec::new(),
                        out: History {
                            writes_per_key: vec![0; cfg.keys],
                            ..History::default()
                        },
                    };
                    w.run(until);
                    w.out
                })
            })
            .collect();
        for h in handles {
            match h.join() {
                Ok(h) => out.merge(h),
                Err(_) => out.violations.push("a worker panicked".into()),
            }
        }
        fault_log.done.store(true, Ordering::SeqCst);
        if fault_thread.join().is_err() {
            out.violations.push("the fault injector panicked".into());
        }
        if let Some(observer) = observer {
            match observer.join() {
                Ok(seen) => out.seen_queued = seen,
                Err(_) => out.violations.push("the queue observer panicked".into()),
            }
        }
    });
    out.faults = fault_log.log.into_inner().unwrap_or_default();
    out.elapsed = start.elapsed();
    out
}

impl History {
    /// Adds a worker's history to the run's.
    fn merge(&mut self, h: History) {
        self.grants.extend(h.grants);
        self.sections.extend(h.sections);
        self.seen_holders.extend(h.seen_holders);
        self.claims.extend(h.claims);
        self.fence_probes.extend(h.fence_probes);
        self.waits.extend(h.waits);
        self.seen_queued.extend(h.seen_queued);
        self.violations.extend(h.violations);
        self.counts.add(&h.counts);
        for (total, n) in self.writes_per_key.iter_mut().zip(h.writes_per_key) {
            *total += n;
        }
    }
}

/// Checks a run's history against what the server holds now. The server must be the one the
/// run used, with its `INFO pylock` counters counting that run only (a fresh server).
pub fn check(server: &impl Target, cfg: &Config, history: &History) -> Report {
    let mut report = check_history(cfg, history);
    let mut con = server.connect();
    for key in 0..cfg.keys {
        let [_, _, counter, log] = key_names(key);
        let entries: Vec<String> = redis::cmd("LRANGE")
            .arg(&log)
            .arg(0)
            .arg(-1)
            .query(&mut *con)
            .expect("read the log");
        let value: Option<u64> = redis::cmd("GET").arg(&counter).query(&mut *con).ok();
        let sections: Vec<&Section> = history.sections.iter().filter(|s| s.key == key).collect();
        report.log_entries += entries.len() as u64;
        report.confirmed_sections += check_resource(
            key,
            &entries,
            value.unwrap_or(0),
            &sections,
            history.writes_per_key[key],
            cfg.limit,
            &mut report.violations,
        );
    }

    // The server counted exactly what the clients received.
    let c = &history.counts;
    // Summed over the nodes of a cluster (the high water: the largest).
    let texts = server.pylock_info();
    let field = |name: &str| {
        let values = texts.iter().map(|text| {
            testkit::info_field(text, &format!("pylock_{name}"))
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(u64::MAX)
        });
        if name == "token_high_water" {
            values.max().unwrap_or(u64::MAX)
        } else {
            values.fold(0u64, u64::saturating_add)
        }
    };
    let v = &mut report.violations;
    for (name, want) in [
        ("acquired", c.acquire_leases),
        ("contended", c.contended),
        ("released", c.released),
        ("confirmed", c.confirmed),
        ("extended", c.extended),
        ("notheld", c.notheld),
        ("notowned", c.notowned),
        ("claimed", c.claims_won),
        ("waiting", 0),
        ("watching", 0),
    ] {
        let got = field(name);
        if got != want {
            v.push(format!("INFO pylock_{name} is {got}, clients saw {want}"));
        }
    }
    let high_water = field("token_high_water");
    if let Some(max) = history.grants.iter().map(|g| g.token).max() {
        if high_water < max as u64 {
            v.push(format!(
                "token high water {high_water} < granted token {max}"
            ));
        }
    }
    report
}

/// Every check that needs only the clients' records: token order, proven intervals, unique
/// tokens, one claimant per lease, the losers' fenced writes, the watchers, and the holders
/// `PYLOCK.INFO` showed. [`check`] adds what needs the server (logs, counters, `INFO`).
pub fn check_history(cfg: &Config, history: &History) -> Report {
    let mut report = Report {
        counts: history.counts.clone(),
        violations: history.violations.clone(),
        elapsed: history.elapsed,
        ..Report::default()
    };
    let v = &mut report.violations;
    for key in 0..cfg.keys {
        let grants: Vec<&Grant> = history.grants.iter().filter(|g| g.key == key).collect();
        report.ordered_pairs += check_token_order(key, &grants, v);
        let (proven, peak) = check_intervals(key, &grants, cfg.limit, v);
        report.proven_intervals += proven;
        report.peak_proven_concurrency = report.peak_proven_concurrency.max(peak);
    }
    let (waiters, pairs) = check_fifo(history, v);
    report.waiters_seen_queued = waiters;
    report.fifo_pairs = pairs;
    // Per key, as the contract has it: on one server tokens are unique server-wide, but each
    // node of a cluster runs its own sequence, so two keys on two nodes may share a token.
    let mut tokens = HashSet::new();
    for g in &history.grants {
        if !tokens.insert((g.key, g.token)) {
            v.push(format!("key {}: token {} granted twice", g.key, g.token));
        }
    }
    let (claimed, raced) = check_claims(&history.claims, v);
    report.claimed_leases = claimed;
    report.raced_leases = raced;
    for p in &history.fence_probes {
        if p.accepted || p.token >= p.above {
            v.push(format!(
                "key {}: the fence accepted={} a write with token {} after token {} claimed its lease and entered",
                p.key, p.accepted, p.token, p.above
            ));
        }
    }
    check_watches(cfg, history, &mut report);

    // Every holder PYLOCK.INFO showed was granted to a client.
    let granted: HashSet<(usize, &[u8], i64)> = history
        .grants
        .iter()
        .map(|g| (g.key, g.id.as_slice(), g.token))
        .collect();
    for (key, id, token) in &history.seen_holders {
        if !granted.contains(&(*key, id.as_slice(), *token)) {
            report.violations.push(format!(
                "PYLOCK.INFO showed lease {:?}/{token} on key {key}, granted to no client",
                String::from_utf8_lossy(id)
            ));
        }
    }
    report
}

/// Check 5: per claimed lease (key, id and token), at most one new id ever won; every win of
/// it has one token, above the claimed lease's; `CLAIMED` only where some claim won. Returns
/// how many leases were claimed (with a winner) and how many of them were raced.
fn check_claims(claims: &[Claim], v: &mut Vec<String>) -> (u64, u64) {
    let mut by_lease: HashMap<(usize, &[u8], i64), Vec<&Claim>> = HashMap::new();
    for c in claims {
        by_lease
            .entry((c.key, c.from_id.as_slice(), c.from_token))
            .or_default()
            .push(c);
    }
    let (mut claimed, mut raced) = (0, 0);
    let mut leases: Vec<_> = by_lease.into_iter().collect();
    leases.sort_by_key(|((key, _, token), _)| (*key, *token));
    for ((key, from, from_token), attempts) in leases {
        let from = String::from_utf8_lossy(from);
        let mut winners: HashMap<&[u8], HashSet<i64>> = HashMap::new();
        for c in &attempts {
            if let ClaimOutcome::Won(t) = c.outcome {
                winners.entry(c.new_id.as_slice()).or_default().insert(t);
                if t <= from_token {
                    v.push(format!(
                        "key {key}: the claim of {from:?}/{from_token} as {:?} got token {t}, not above it",
                        String::from_utf8_lossy(&c.new_id)
                    ));
                }
            }
        }
        if winners.len() > 1 {
            let mut ids: Vec<String> = winners
                .keys()
                .map(|id| String::from_utf8_lossy(id).into_owned())
                .collect();
            ids.sort();
            v.push(format!(
                "key {key}: lease {from:?}/{from_token} was claimed by {} claimants: {ids:?}",
                ids.len()
            ));
        }
        for (id, tokens) in &winners {
            if tokens.len() > 1 {
                v.push(format!(
                    "key {key}: the claim of {from:?} as {:?} won with different tokens {tokens:?}",
                    String::from_utf8_lossy(id)
                ));
            }
        }
        if winners.is_empty() {
            if attempts.iter().any(|c| c.outcome == ClaimOutcome::Claimed) {
                v.push(format!(
                    "key {key}: a claim of {from:?}/{from_token} was answered CLAIMED, but no claimant's claim of it succeeded"
                ));
            }
            continue;
        }
        claimed += 1;
        let claimants: HashSet<&[u8]> = attempts.iter().map(|c| c.new_id.as_slice()).collect();
        raced += u64::from(claimants.len() > 1);
    }
    (claimed, raced)
}

/// Check 7: each answered watch got the reason of its lease's end, not before the end could
/// have happened, and no more than `cfg.watch_limit` after the latest moment it could have
/// happened (moved to the end of a fault that held the server up then). The delays reported
/// are measured from the earliest moment instead (an upper bound), for ends known to within
/// [`TIGHT_US`].
fn check_watches(cfg: &Config, history: &History, report: &mut Report) {
    let limit = cfg.watch_limit.as_micros() as u64;
    let mut faults = history.faults.clone();
    faults.sort_by_key(|f| f.from);
    // A moment the server should have answered by, moved past every fault that began before
    // the answer was due (the server was stopped, or loading, and answered nothing).
    let held_up = |mut t: u64| {
        let mut moved = false;
        for f in &faults {
            if f.from <= t + limit && f.to > t {
                t = f.to;
                moved = true;
            }
        }
        (t, moved)
    };
    for g in &history.grants {
        let Some(w) = &g.watch else { continue };
        let lease = format!(
            "key {}: the watcher of {:?}/{}",
            g.key,
            String::from_utf8_lossy(&g.id),
            g.token
        );
        let Some((answer, at)) = &w.answer else {
            report
                .violations
                .push(format!("{lease} was never answered"));
            continue;
        };
        let at = *at;
        report.watches_checked += 1;
        // The end's window: the call that ended it, or the deadline. The server's clock is
        // read in whole milliseconds, so a deadline may fall up to 1 ms either side.
        let (reason, mut lo, mut hi) = match g.end {
            Some(e) => (e.kind.reason(), e.sent, e.received),
            None => (
                "expired",
                g.deadline.0.saturating_sub(1000),
                g.deadline.1 + 1000,
            ),
        };
        let mut allowed = vec![reason];
        if !w.confirmed {
            // The watch may have reached the server after the end: answered at once then. (A
            // claimed lease's watch gets `claimed` while the claimant holds the lock, and
            // `notheld` or `notowned` once the claimant's lease has ended too.)
            allowed.extend(["notheld", "notowned"]);
            lo = lo.max(w.sent);
            hi = hi.max(w.sent);
        }
        // A reload while the watch was in place ends it with `flushed`, at the reload.
        let reload = faults
            .iter()
            .rfind(|f| f.kind == FaultKind::Reload && f.from < at && f.to > w.sent);
        if reload.is_some() {
            allowed.push("flushed");
        }
        match answer {
            WatchAnswer::Reason(r) if allowed.contains(&r.as_str()) => {
                let (earliest, latest) = match reload {
                    Some(f) if r == "flushed" => (f.from.max(w.sent), f.to),
                    _ => (lo, hi),
                };
                if w.confirmed && at < earliest {
                    report.violations.push(format!(
                        "{lease} was answered {r:?} at {at} µs, before its end could have happened (from {earliest} µs)"
                    ));
                }
                let (due, _) = held_up(latest);
                if at.saturating_sub(due) > limit {
                    report.watch_late += 1;
                    // The faults around it, so that a late answer can be told from a fault
                    // that began just too late to excuse it.
                    let near: Vec<String> = faults
                        .iter()
                        .filter(|f| f.to + 1_000_000 > due && f.from < at + 1_000_000)
                        .map(|f| format!("{:?} {}-{} µs", f.kind, f.from, f.to))
                        .collect();
                    report.violations.push(format!(
                        "{lease} was answered {r:?} at {at} µs, {:.1} ms after the latest moment its end could have happened ({due} µs; the end between {earliest} and {latest} µs), over the {} ms limit; faults within 1 s: [{}]",
                        at.saturating_sub(due) as f64 / 1000.0,
                        limit / 1000,
                        near.join(", ")
                    ));
                }
                if w.confirmed && latest - earliest <= TIGHT_US {
                    let (from, after_fault) = held_up(earliest);
                    let list = if after_fault || r == "flushed" {
                        &mut report.watch_delays_after_faults
                    } else {
                        &mut report.watch_delays
                    };
                    list.push((r.clone(), at.saturating_sub(from)));
                } else {
                    report.watch_ends_unbounded += 1;
                }
            }
            WatchAnswer::Nil if held_up(hi).0 + limit >= w.sent + w.timeout_ms * 1000 => {}
            other => report.violations.push(format!(
                "{lease} was answered {other:?} at {at} µs, want one of {allowed:?} (the lease ended between {lo} and {hi} µs; watch sent at {} µs, seen blocked: {})",
                w.sent, w.confirmed
            )),
        }
    }
}

/// Checks 3 and 4 for one key: the resource's log (sections under valid leases never
/// interleave, the fence never refused them, each is present) and its counter (equal to the
/// writes the clients saw accepted, and to those in the log). Returns how many sections ran
/// under a valid lease.
pub fn check_resource(
    key: usize,
    entries: &[String],
    counter: u64,
    sections: &[&Section],
    writes_seen: u64,
    limit: u64,
    v: &mut Vec<String>,
) -> u64 {
    let confirmed = check_log(key, entries, sections, limit, v);
    let accepted = entries
        .iter()
        .filter(|e| e.starts_with('x') && e.ends_with(":1"))
        .count() as u64;
    if counter != writes_seen || accepted != writes_seen {
        v.push(format!(
            "key {key}: counter is {counter}, the log has {accepted} accepted writes, clients saw {writes_seen}: an update was lost"
        ));
    }
    for s in sections.iter().filter(|s| s.confirmed && s.wrote) {
        let want = format!("x:{}:1", s.token);
        if !entries.contains(&want) {
            v.push(format!(
                "key {key}: the accepted write of token {} is missing from the log",
                s.token
            ));
        }
    }
    confirmed
}

/// Check 1: a grant that certainly came later has a larger token. Returns the number of
/// ordered pairs covered (each grant against the latest-token grant that certainly preceded it).
fn check_token_order(key: usize, grants: &[&Grant], v: &mut Vec<String>) -> u64 {
    let mut by_sent: Vec<&Grant> = grants.to_vec();
    by_sent.sort_by_key(|g| g.sent);
    let mut by_received: Vec<&Grant> = grants.to_vec();
    by_received.sort_by_key(|g| g.received);
    let mut before: Option<&Grant> = None; // the largest token among grants received so far
    let mut i = 0;
    let mut pairs = 0;
    for g in by_sent {
        while i < by_received.len() && by_received[i].received < g.sent {
            let r = by_received[i];
            if before.is_none_or(|b| r.token > b.token) {
                before = Some(r);
            }
            i += 1;
        }
        pairs += i as u64;
        if let Some(b) = before {
            if b.token >= g.token {
                v.push(format!(
                    "key {key}: grant {:?}/{} (sent at {} µs) has a token not above {:?}/{} (received at {} µs)",
                    String::from_utf8_lossy(&g.id), g.token, g.sent,
                    String::from_utf8_lossy(&b.id), b.token, b.received
                ));
            }
        }
    }
    pairs
}

/// Check 2: at no moment are more than `limit` proven validity intervals of one key open, and
/// no grant falls wholly inside `limit` others' intervals (it took a place while all were
/// surely taken). Returns how many leases had a proven interval, and the most open at once.
fn check_intervals(key: usize, grants: &[&Grant], limit: u64, v: &mut Vec<String>) -> (u64, u64) {
    let limit = limit.max(1) as usize;
    let name = |g: &Grant| format!("{:?}/{}", String::from_utf8_lossy(&g.id), g.token);
    let mut intervals: Vec<(u64, u64, &Grant)> = grants
        .iter()
        .filter_map(|g| {
            let end = g.last_proof?;
            (end > g.received).then_some((g.received, end, *g))
        })
        .collect();
    intervals.sort_by_key(|i| (i.0, i.1));
    // The sweep: intervals are open (start, end), so one that ends when another starts does
    // not overlap it.
    let mut open: Vec<(u64, &Grant)> = Vec::new();
    let mut peak = 0;
    let mut reported = 0;
    for &(start, end, g) in &intervals {
        open.retain(|&(until, _)| until > start);
        if open.len() >= limit && reported < 20 {
            reported += 1;
            let mut names: Vec<String> = open.iter().map(|(_, o)| name(o)).collect();
            names.push(name(g));
            let until = open.iter().map(|o| o.0).min().unwrap_or(end).min(end);
            v.push(format!(
                "key {key}: leases {} were all valid between {start} and {until} µs, more than the limit {limit}",
                names.join(", ")
            ));
        }
        open.push((end, g));
        peak = peak.max(open.len());
    }
    // A grant wholly inside `limit` other leases' proven intervals.
    let mut by_sent: Vec<&Grant> = grants.to_vec();
    by_sent.sort_by_key(|g| g.sent);
    let mut j = 0;
    // Intervals begun before the grant's request, by end.
    let mut ends: std::collections::BTreeMap<(u64, usize), &Grant> = Default::default();
    for g in by_sent {
        while j < intervals.len() && intervals[j].0 < g.sent {
            ends.insert((intervals[j].1, j), intervals[j].2);
            j += 1;
        }
        // Ends at or before this request can cover no later one either.
        ends = ends.split_off(&(g.sent + 1, 0));
        let covering: Vec<&Grant> = ends
            .range((g.received + 1, 0)..)
            .map(|(_, o)| *o)
            .filter(|o| o.token != g.token)
            .take(limit)
            .collect();
        if covering.len() >= limit && reported < 40 {
            reported += 1;
            let names: Vec<String> = covering.iter().map(|o| name(o)).collect();
            v.push(format!(
                "key {key}: lease {} was granted between {} and {} µs, while {} held all {limit} places (each valid throughout)",
                name(g),
                g.sent,
                g.received,
                names.join(", ")
            ));
        }
    }
    (intervals.len() as u64, peak as u64)
}

/// Check 9 (FIFO): a waiter the observer saw queued (blocked in `ACQUIRE … BLOCK`) before
/// another caller's `ACQUIRE` of the key was sent must not be passed over by it: if that later
/// request was granted, the waiter was granted first (a smaller token), or it had timed out
/// before (its reply nil, and the later grant's reply not before the waiter's timeout could
/// have fired). Claims take no new place and are not later requests. A waiter whose wait
/// spans a reload is left out (the server empties and reloads the keys, serving the queue
/// from the flush). Returns the waiters checked and the pairs checked.
fn check_fifo(history: &History, v: &mut Vec<String>) -> (u64, u64) {
    // How early a timeout may fire against the client's clock: the server reads whole ms.
    const SLACK_US: u64 = 5000;
    let mut seen: HashMap<i64, Vec<&SeenQueued>> = HashMap::new();
    for s in &history.seen_queued {
        seen.entry(s.client).or_default().push(s);
    }
    for list in seen.values_mut() {
        list.sort_by_key(|s| s.sent);
    }
    // Per key: the new-place grants by request time, with the suffix minima of token and of
    // reply time (the earliest-token grant and earliest-answered grant requested after a time).
    struct Later<'a> {
        sent: Vec<u64>,
        min_token: Vec<&'a Grant>,
        min_received: Vec<&'a Grant>,
    }
    let mut later: HashMap<usize, Later> = HashMap::new();
    let mut keys: HashMap<usize, Vec<&Grant>> = HashMap::new();
    for g in history.grants.iter().filter(|g| g.claimed_from.is_none()) {
        keys.entry(g.key).or_default().push(g);
    }
    for (key, mut gs) in keys {
        gs.sort_by_key(|g| g.sent);
        let mut min_token = gs.clone();
        let mut min_received = gs.clone();
        for i in (0..gs.len().saturating_sub(1)).rev() {
            if min_token[i + 1].token < min_token[i].token {
                min_token[i] = min_token[i + 1];
            }
            if min_received[i + 1].received < min_received[i].received {
                min_received[i] = min_received[i + 1];
            }
        }
        let sent = gs.iter().map(|g| g.sent).collect();
        later.insert(
            key,
            Later {
                sent,
                min_token,
                min_received,
            },
        );
    }
    let (mut waiters, mut pairs) = (0, 0);
    let mut reported = 0;
    for w in &history.waits {
        if history
            .faults
            .iter()
            .any(|f| f.kind == FaultKind::Reload && f.from < w.received && f.to > w.sent)
        {
            continue;
        }
        // The earliest sighting wholly inside the wait's window: the client had this request
        // queued by the sighting's reply.
        let Some(queued) = seen.get(&w.client).and_then(|list| {
            let i = list.partition_point(|s| s.sent < w.sent);
            list[i..]
                .iter()
                .take_while(|s| s.sent <= w.received)
                .find(|s| s.received <= w.received)
                .map(|s| s.received)
        }) else {
            continue;
        };
        let Some(l) = later.get(&w.key) else { continue };
        let i = l.sent.partition_point(|&t| t <= queued);
        if i == l.sent.len() {
            waiters += 1;
            continue;
        }
        waiters += 1;
        pairs += (l.sent.len() - i) as u64;
        let skipped = match w.token {
            Some(t) => (l.min_token[i].token < t).then_some(l.min_token[i]),
            None => {
                let b = l.min_received[i];
                (b.received + SLACK_US < w.sent + w.block_ms * 1000).then_some(b)
            }
        };
        if let Some(b) = skipped {
            if reported < 20 {
                reported += 1;
                v.push(format!(
                    "key {}: a waiter (client {}, sent at {} µs, BLOCK {} ms, seen queued by {queued} µs, answered {} at {} µs) was passed over by lease {:?}/{} requested at {} µs and granted by {} µs",
                    w.key,
                    w.client,
                    w.sent,
                    w.block_ms,
                    w.token.map_or("nil".to_string(), |t| format!("token {t}")),
                    w.received,
                    String::from_utf8_lossy(&b.id),
                    b.token,
                    b.sent,
                    b.received
                ));
            }
        }
    }
    (waiters, pairs)
}

/// Check 3: in the server's log order, no more than `limit` sections that ran under a valid
/// lease are ever open at once (for a lock: they never interleave), and, for a lock, the fence
/// never refused them (with n > 1 a valid lease's token may be below another's, and the fence
/// refuses it by design). Returns how many such sections there were.
fn check_log(
    key: usize,
    entries: &[String],
    sections: &[&Section],
    limit: u64,
    v: &mut Vec<String>,
) -> u64 {
    let confirmed: HashMap<i64, &Section> = sections
        .iter()
        .filter(|s| s.confirmed)
        .map(|s| (s.token, *s))
        .collect();
    // Span of each confirmed section in the log: first and last entry of its token.
    let mut spans: HashMap<i64, (usize, usize)> = HashMap::new();
    for (pos, e) in entries.iter().enumerate() {
        let mut parts = e.split(':');
        let (Some(kind), Some(token), Some(ok)) = (parts.next(), parts.next(), parts.next()) else {
            v.push(format!("key {key}: malformed log entry {e:?}"));
            continue;
        };
        let Ok(token) = token.parse::<i64>() else {
            v.push(format!("key {key}: malformed log entry {e:?}"));
            continue;
        };
        if !confirmed.contains_key(&token) {
            continue;
        }
        if ok != "1" && limit <= 1 {
            v.push(format!(
                "key {key}: the fence refused {kind} of token {token}, whose lease was valid throughout"
            ));
        }
        spans
            .entry(token)
            .and_modify(|s| s.1 = pos)
            .or_insert((pos, pos));
    }
    for (token, s) in &confirmed {
        if !spans.contains_key(token) {
            v.push(format!(
                "key {key}: section of token {token} is missing from the log (entered: {})",
                s.entered
            ));
        }
    }
    let mut spans: Vec<(usize, usize, i64)> =
        spans.into_iter().map(|(t, (a, b))| (a, b, t)).collect();
    spans.sort_unstable();
    let limit = limit.max(1) as usize;
    let mut open: Vec<(usize, i64)> = Vec::new();
    let mut reported = 0;
    for &(start, end, token) in &spans {
        open.retain(|&(until, _)| until >= start);
        if open.len() >= limit && reported < 20 {
            reported += 1;
            let mut tokens: Vec<String> = open.iter().map(|(_, t)| t.to_string()).collect();
            tokens.push(token.to_string());
            v.push(format!(
                "key {key}: sections of tokens {} interleaved at log entry {start}, all under valid leases, more than the limit {limit}",
                tokens.join(", ")
            ));
        }
        open.push((end, token));
    }
    confirmed.len() as u64
}

#[cfg(test)]
mod tests {
    //! Histories made by hand: a sound one passes, and each way of breaking one of the claim,
    //! fence and watcher checks is caught.
    use super::*;

    const MS: u64 = 1000;

    fn cfg() -> Config {
        Config {
            keys: 1,
            ..Config::small(1)
        }
    }

    /// Lease "a" (token 10) granted at 0–1 ms with a 100 ms TTL, watched from 2 ms (seen
    /// blocked), claimed as "c" (token 11) at 20–21 ms; the claim's watcher answered 22 ms.
    /// "c" is released at 40–41 ms; a race's loser wrote with token 10 and was refused.
    fn sound() -> History {
        let mut a = Grant::new(0, b"a", 10, (0, MS), 100);
        a.last_proof = Some(20 * MS);
        a.end = Some(End {
            kind: EndKind::Claimed,
            sent: 20 * MS,
            received: 21 * MS,
        });
        a.watch = Some(Watch {
            sent: 2 * MS,
            confirmed: true,
            timeout_ms: 3000,
            answer: Some((WatchAnswer::Reason("claimed".into()), 22 * MS)),
        });
        let mut c = Grant::new(0, b"c", 11, (20 * MS, 21 * MS), 0);
        c.claimed_from = Some(b"a".to_vec());
        c.deadline = a.deadline;
        c.last_proof = Some(40 * MS);
        c.end = Some(End {
            kind: EndKind::Released,
            sent: 40 * MS,
            received: 41 * MS,
        });
        let claim = |new: &[u8], outcome, at: u64| Claim {
            key: 0,
            from_id: b"a".to_vec(),
            from_token: 10,
            new_id: new.to_vec(),
            sent: at,
            received: at + MS,
            retry: false,
            outcome,
        };
        History {
            grants: vec![a, c],
            claims: vec![
                claim(b"c", ClaimOutcome::Won(11), 20 * MS),
                claim(b"d", ClaimOutcome::Claimed, 20 * MS),
                Claim {
                    retry: true,
                    ..claim(b"c", ClaimOutcome::Won(11), 25 * MS)
                },
            ],
            fence_probes: vec![FenceProbe {
                key: 0,
                token: 10,
                above: 11,
                accepted: false,
            }],
            writes_per_key: vec![1],
            ..History::default()
        }
    }

    fn violations(h: &History) -> Vec<String> {
        check_history(&cfg(), h).violations
    }

    fn fails_with(h: &History, text: &str) {
        let v = violations(h);
        assert!(v.iter().any(|v| v.contains(text)), "want {text:?} in {v:?}");
    }

    #[test]
    fn a_sound_history_passes() {
        let r = check_history(&cfg(), &sound());
        assert!(r.passed(), "{:?}", r.violations);
        assert_eq!((r.claimed_leases, r.raced_leases), (1, 1));
        assert_eq!(r.watches_checked, 1);
        assert_eq!(r.watch_delays, vec![("claimed".to_string(), 2 * MS)]);
    }

    #[test]
    fn two_successful_claimants_of_one_lease_fail() {
        let mut h = sound();
        h.claims[1].outcome = ClaimOutcome::Won(12);
        fails_with(&h, "was claimed by 2 claimants");
    }

    #[test]
    fn a_retried_claim_with_another_token_fails() {
        let mut h = sound();
        h.claims[2].outcome = ClaimOutcome::Won(13);
        fails_with(&h, "won with different tokens");
    }

    #[test]
    fn claimed_with_no_winner_fails() {
        let mut h = sound();
        h.claims.retain(|c| c.outcome == ClaimOutcome::Claimed);
        fails_with(&h, "no claimant's claim of it succeeded");
    }

    #[test]
    fn a_claim_token_not_above_earlier_grants_fails() {
        let mut h = sound();
        // The claim's token equals the claimed lease's: below-or-equal to an earlier grant.
        h.grants[1].token = 9;
        h.claims[0].outcome = ClaimOutcome::Won(9);
        h.claims[2].outcome = ClaimOutcome::Won(9);
        fails_with(&h, "has a token not above");
        fails_with(&h, "not above it");
    }

    #[test]
    fn overlapping_leases_around_a_claim_fail() {
        let mut h = sound();
        // The old lease proven valid after the claim's reply: two valid leases at once.
        h.grants[0].last_proof = Some(30 * MS);
        fails_with(&h, "were all valid");
    }

    #[test]
    fn an_accepted_older_token_fails() {
        let mut h = sound();
        h.fence_probes[0].accepted = true;
        fails_with(&h, "the fence accepted=true a write with token 10");
    }

    #[test]
    fn a_lost_fenced_write_fails() {
        let sections = [Section {
            key: 0,
            token: 11,
            confirmed: true,
            entered: true,
            wrote: true,
        }];
        let refs: Vec<&Section> = sections.iter().collect();
        let log = |e: &[&str]| e.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut v = Vec::new();
        // Sound: the winner's section, and the loser refused.
        let good = log(&["e:11:1", "x:10:0", "x:11:1"]);
        assert_eq!(check_resource(0, &good, 1, &refs, 1, 1, &mut v), 1);
        assert!(v.is_empty(), "{v:?}");
        // The loser's write accepted over the winner's read: two accepted writes, counter 1.
        let lost = log(&["e:11:1", "x:10:1", "x:11:1"]);
        check_resource(0, &lost, 1, &refs, 2, 1, &mut v);
        assert!(v.iter().any(|v| v.contains("an update was lost")), "{v:?}");
        // The winner's accepted write missing from the log.
        let mut v = Vec::new();
        check_resource(0, &log(&["e:11:1"]), 1, &refs, 1, 1, &mut v);
        assert!(
            v.iter().any(|v| v.contains("missing from the log")),
            "{v:?}"
        );
    }

    #[test]
    fn a_watcher_told_the_wrong_reason_fails() {
        let mut h = sound();
        h.grants[0].watch.as_mut().unwrap().answer =
            Some((WatchAnswer::Reason("released".into()), 22 * MS));
        fails_with(&h, "was answered Reason(\"released\")");
    }

    #[test]
    fn a_late_watcher_fails_unless_a_fault_held_the_server() {
        let mut h = sound();
        h.grants[0].watch.as_mut().unwrap().answer =
            Some((WatchAnswer::Reason("claimed".into()), 75 * MS));
        fails_with(&h, "over the 50 ms limit");
        // The server was stopped from 30 to 70 ms: the answer is due from 70 ms.
        h.faults.push(Fault {
            kind: FaultKind::Stop,
            from: 30 * MS,
            to: 70 * MS,
        });
        let r = check_history(&cfg(), &h);
        assert!(r.passed(), "{:?}", r.violations);
        assert_eq!(
            r.watch_delays_after_faults,
            vec![("claimed".to_string(), 5 * MS)]
        );
        // A stop that began only after the answer was due excuses nothing.
        h.faults[0] = Fault {
            kind: FaultKind::Stop,
            from: 72 * MS,
            to: 74 * MS,
        };
        fails_with(&h, "over the 50 ms limit");
        // The report names it, to tell the two cases apart afterwards.
        fails_with(&h, "faults within 1 s: [Stop 72000-74000 µs]");
    }

    #[test]
    fn an_expiry_watcher_is_checked_against_the_deadline() {
        let mut h = sound();
        // "c" left to expire: its deadline is the claimed lease's, 100–101 ms.
        h.grants[1].end = None;
        let watch = |answer: &str, at: u64| Watch {
            sent: 30 * MS,
            confirmed: true,
            timeout_ms: 3000,
            answer: Some((WatchAnswer::Reason(answer.into()), at)),
        };
        h.grants[1].watch = Some(watch("expired", 104 * MS));
        assert!(violations(&h).is_empty(), "{:?}", violations(&h));
        h.grants[1].watch = Some(watch("expired", 90 * MS));
        fails_with(&h, "before its end could have happened");
        h.grants[1].watch = Some(watch("expired", 160 * MS));
        fails_with(&h, "over the 50 ms limit");
        h.grants[1].watch = Some(watch("flushed", 104 * MS));
        fails_with(&h, "want one of [\"expired\"]");
        // A reload during the watch may end it with `flushed`.
        h.faults.push(Fault {
            kind: FaultKind::Reload,
            from: 50 * MS,
            to: 60 * MS,
        });
        h.grants[1].watch = Some(watch("flushed", 61 * MS));
        assert!(violations(&h).is_empty(), "{:?}", violations(&h));
    }

    #[test]
    fn a_watcher_never_told_fails() {
        let mut h = sound();
        h.grants[0].watch.as_mut().unwrap().answer = None;
        fails_with(&h, "was never answered");
        h.grants[0].watch.as_mut().unwrap().answer = Some((WatchAnswer::Nil, 3002 * MS));
        fails_with(&h, "was answered Nil");
    }

    #[test]
    fn an_unconfirmed_watch_may_be_answered_at_call() {
        let mut h = sound();
        // Sent after "c" was released: answered at once, `notheld`.
        h.grants[1].watch = Some(Watch {
            sent: 45 * MS,
            confirmed: false,
            timeout_ms: 3000,
            answer: Some((WatchAnswer::Reason("notheld".into()), 46 * MS)),
        });
        assert!(violations(&h).is_empty(), "{:?}", violations(&h));
        // A confirmed watch may not.
        h.grants[1].watch.as_mut().unwrap().confirmed = true;
        fails_with(&h, "was answered Reason(\"notheld\")");
    }

    fn with_limit(limit: u64) -> Config {
        Config { limit, ..cfg() }
    }

    /// A grant of `id`/`token` in `window` (ms), proven valid until `proof` ms.
    fn proven(id: &str, token: i64, window: (u64, u64), proof: Option<u64>) -> Grant {
        let mut g = Grant::new(0, id.as_bytes(), token, (window.0 * MS, window.1 * MS), 100);
        g.last_proof = proof.map(|p| p * MS);
        g
    }

    #[test]
    fn a_semaphore_admits_n_proven_leases_at_once_and_no_more() {
        let h = History {
            grants: vec![
                proven("a", 1, (0, 1), Some(50)),
                proven("b", 2, (1, 2), Some(50)),
                proven("c", 3, (2, 3), Some(50)),
            ],
            ..History::default()
        };
        for limit in [1, 2] {
            let v = check_history(&with_limit(limit), &h).violations;
            assert!(
                v.iter().any(|v| v.contains("were all valid")
                    && v.contains(&format!("more than the limit {limit}"))),
                "limit {limit}: {v:?}"
            );
        }
        let r = check_history(&with_limit(3), &h);
        assert!(r.passed(), "{:?}", r.violations);
        assert_eq!((r.proven_intervals, r.peak_proven_concurrency), (3, 3));
        // One that ends as another begins does not overlap it.
        let h = History {
            grants: vec![
                proven("a", 1, (0, 1), Some(10)),
                proven("b", 2, (9, 10), Some(50)),
            ],
            ..History::default()
        };
        let r = check_history(&with_limit(1), &h);
        assert!(r.passed(), "{:?}", r.violations);
        assert_eq!(r.peak_proven_concurrency, 1);
    }

    #[test]
    fn a_grant_while_every_place_is_surely_taken_fails() {
        // "c" granted at 10-11 ms, while "a" and "b" were valid from before 10 ms to 50 ms.
        let h = History {
            grants: vec![
                proven("a", 1, (0, 1), Some(50)),
                proven("b", 2, (1, 2), Some(50)),
                proven("c", 3, (10, 11), None),
            ],
            ..History::default()
        };
        let v = check_history(&with_limit(2), &h).violations;
        assert!(v.iter().any(|v| v.contains("held all 2 places")), "{v:?}");
        let r = check_history(&with_limit(3), &h);
        assert!(r.passed(), "{:?}", r.violations);
        // Requested before "b" was surely valid: nothing proven.
        let mut h = h;
        h.grants[2] = proven("c", 3, (1, 11), None);
        let r = check_history(&with_limit(2), &h);
        assert!(r.passed(), "{:?}", r.violations);
    }

    #[test]
    fn sections_of_a_semaphore_interleave_up_to_n() {
        let section = |token, wrote| Section {
            key: 0,
            token,
            confirmed: true,
            entered: true,
            wrote,
        };
        let sections = [section(1, false), section(2, true), section(3, true)];
        let refs: Vec<&Section> = sections.iter().collect();
        let log = |e: &[&str]| e.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // Two open at once, then the third after both left; token 1's write is refused by the
        // fence (token 2 entered after it), which a semaphore allows.
        let two = log(&["e:1:1", "e:2:1", "x:1:0", "x:2:1", "e:3:1", "x:3:1"]);
        let mut v = Vec::new();
        assert_eq!(check_resource(0, &two, 2, &refs[..], 2, 2, &mut v), 3);
        assert!(v.is_empty(), "{v:?}");
        // A lock may not interleave, and its fence may not refuse a valid lease.
        check_resource(0, &two, 2, &refs[..], 2, 1, &mut v);
        assert!(
            v.iter().any(|v| v.contains("interleaved at log entry 1")),
            "{v:?}"
        );
        assert!(
            v.iter()
                .any(|v| v.contains("the fence refused x of token 1")),
            "{v:?}"
        );
        // Three open at once exceeds n = 2.
        let three = log(&["e:1:1", "e:2:1", "e:3:1", "x:1:0", "x:2:0", "x:3:1"]);
        let sections = [section(1, false), section(2, false), section(3, true)];
        let refs: Vec<&Section> = sections.iter().collect();
        let mut v = Vec::new();
        check_resource(0, &three, 1, &refs[..], 1, 2, &mut v);
        assert!(
            v.iter()
                .any(|v| v.contains("tokens 1, 2, 3 interleaved") && v.contains("limit 2")),
            "{v:?}"
        );
        let mut v = Vec::new();
        check_resource(0, &three, 1, &refs[..], 1, 3, &mut v);
        assert!(v.is_empty(), "{v:?}");
    }

    /// A waiter (client 7) sent at 0 ms with BLOCK 100, seen queued at 1-2 ms, granted token
    /// 12 at 30 ms; lease "b" requested at 5 ms and granted at 6 ms with `b_token`.
    fn fifo(w_token: Option<i64>, b_token: i64) -> History {
        let received = if w_token.is_some() { 30 } else { 101 };
        let mut grants = vec![proven("b", b_token, (5, 6), None)];
        if let Some(t) = w_token {
            grants.push(proven("w", t, (0, received), None));
        }
        History {
            grants,
            waits: vec![Wait {
                key: 0,
                client: 7,
                sent: 0,
                received: received * MS,
                block_ms: 100,
                token: w_token,
            }],
            seen_queued: vec![
                SeenQueued {
                    client: 8,
                    sent: MS,
                    received: 2 * MS,
                },
                SeenQueued {
                    client: 7,
                    sent: MS,
                    received: 2 * MS,
                },
            ],
            ..History::default()
        }
    }

    #[test]
    fn a_waiter_passed_over_by_a_later_caller_fails() {
        // Granted after "b", which came later: skipped.
        fails_with(&fifo(Some(12), 11), "was passed over by lease \"b\"/11");
        // Granted before it: sound.
        let r = check_history(&cfg(), &fifo(Some(10), 11));
        assert!(r.passed(), "{:?}", r.violations);
        assert_eq!((r.waiters_seen_queued, r.fifo_pairs), (1, 1));
        // Timed out while still queued (its timeout 100 ms, "b" granted by 6 ms): skipped.
        fails_with(&fifo(None, 11), "answered nil");
        // Timed out before "b" was requested: sound.
        let mut h = fifo(None, 11);
        h.waits[0].block_ms = 3;
        h.waits[0].received = 4 * MS;
        h.seen_queued[1].received = 3 * MS;
        assert!(violations(&h).is_empty(), "{:?}", violations(&h));
        // "b" requested before the waiter was surely queued: nothing is proven.
        let mut h = fifo(Some(12), 11);
        h.grants[0].sent = 1500;
        assert!(violations(&h).is_empty(), "{:?}", violations(&h));
        // A sighting of another client, or one not wholly inside the wait, proves nothing.
        let mut h = fifo(Some(12), 11);
        h.seen_queued.remove(1);
        assert!(violations(&h).is_empty(), "{:?}", violations(&h));
        let mut h = fifo(Some(12), 11);
        h.seen_queued[1].received = 31 * MS;
        assert!(violations(&h).is_empty(), "{:?}", violations(&h));
        // A claim takes no new place.
        let mut h = fifo(Some(12), 11);
        h.grants[0].claimed_from = Some(b"x".to_vec());
        assert!(violations(&h).is_empty(), "{:?}", violations(&h));
        // A reload during the wait: left out.
        let mut h = fifo(Some(12), 11);
        h.faults.push(Fault {
            kind: FaultKind::Reload,
            from: 3 * MS,
            to: 4 * MS,
        });
        let r = check_history(&cfg(), &h);
        assert!(r.passed(), "{:?}", r.violations);
        assert_eq!(r.waiters_seen_queued, 0);
    }
}
