//! The contention checker: many clients hammer a few locks, and a checker proves from the
//! server's own answers that no lock was ever held by two leases at once.
//!
//! Used by `crates/pylock-module/tests/contention.rs` (small runs, both servers, with and
//! without faults) and `tests/cluster.rs`, and by `scripts/check-contention` (this crate's
//! `check-contention` binary, large runs).
//!
//! # The workload
//!
//! Each worker thread has its own connection and loops until the run's deadline, on a key
//! picked at random among a few:
//!
//! - **a lease cycle**: `ACQUIRE` (with or without `LEASE`, sometimes with `BLOCK`), sometimes an
//!   immediate retry with the same `LEASE` (a renewal), then a *guarded section* on the lock's
//!   resource, work that sometimes outlives the TTL, a `CONFIRM` (plain or `EXTEND`) and usually
//!   a `RELEASE`;
//! - **a stale call**: `CONFIRM` or `RELEASE` with one of its own earlier lease ids, one that it
//!   released or saw refused (it must never succeed) or one it left to expire;
//! - **a ghost call**: `CONFIRM` or `RELEASE` with a lease id nobody was ever granted;
//! - **a look**: `PYLOCK.INFO`, whose holder must be a lease some client was granted.
//!
//! # What a client can soundly conclude, and what is checked
//!
//! Every worker's lease ids are unique, and a lease that lapsed never comes back (the only
//! same-`LEASE` retry happens right after the grant, and a retry that is granted afresh is
//! recorded as a new grant). Times are one monotonic clock shared by all workers.
//!
//! 1. **Token order.** If grant A's reply arrived before grant B's request was sent, the server
//!    granted A first, so A's token must be smaller. Tokens are never repeated.
//! 2. **One valid lease at a time (timing).** A grant happened somewhere in its request/reply
//!    window; a success (`CONFIRM`, renewal, `RELEASE`) proves the lease valid somewhere in its
//!    own window. So the lease was certainly valid from the grant's *reply* to the last
//!    success's *request*. Two such intervals of one key must not overlap, and no other grant
//!    of the key may fall wholly inside one.
//! 3. **One valid lease at a time (server order).** The guarded section writes `e:<token>` on
//!    entering and `x:<token>` on leaving to a per-key log list, in the server's own order. A
//!    section followed by a success of its lease ran wholly under a valid lease, so two such
//!    sections must not interleave in the log, and the fence must never refuse them.
//! 4. **Fencing keeps every update.** The section reads the key's counter and later writes
//!    counter + 1, both through a Lua fence that refuses a token lower than the largest seen.
//!    The final counter must equal the number of writes the fence accepted.
//! 5. **Only owners succeed.** A ghost id, or an id already released or refused, never gets a
//!    success from `CONFIRM` or `RELEASE`. A `CONFIRM` reports the token of the grant.
//! 6. **Every grant is accounted for.** The server's `INFO pylock` counters equal what the
//!    clients received, so no grant went to nobody; `PYLOCK.INFO` only ever shows granted
//!    leases; no client is left waiting.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// Seed of the workers' generators.
    pub seed: u64,
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
            seed,
        }
    }
}

/// One grant (or a renewal retry that was granted afresh), as a client saw it.
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
    /// When the last success of this lease (CONFIRM, renewal, RELEASE) was requested.
    pub last_proof: Option<u64>,
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
            fence_writes
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
            "checked: {} time-ordered grant pairs, {} proven validity intervals, {} server log entries",
            self.ordered_pairs, self.proven_intervals, self.log_entries
        );
        crate::write_verdict(&mut s, &self.violations);
        s
    }
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

/// A reply, classified.
#[derive(Debug)]
enum Reply {
    Lease(Vec<u8>, i64),
    Nil,
    One,
    NotHeld,
    NotOwned,
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
    /// Released, or refused: any later success is a violation.
    dead: bool,
}

struct Worker<'a> {
    n: usize,
    cfg: &'a Config,
    con: Box<dyn ConnectionLike + Send>,
    rng: Rng,
    start: Instant,
    serial: u64,
    stale: Vec<Stale>,
    out: History,
}

impl Worker<'_> {
    fn now(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    fn send(&mut self, args: &[&[u8]]) -> (Reply, u64, u64) {
        self.out.counts.commands += 1;
        let mut at = Some(Instant::now());
        let r = call(&mut *self.con, args, &mut at);
        let received = self.now();
        let sent = at.map_or(0, |at| at.duration_since(self.start).as_micros() as u64);
        match &r {
            Reply::NotHeld => self.out.counts.notheld += 1,
            Reply::NotOwned => self.out.counts.notowned += 1,
            _ => {}
        }
        (r, sent, received)
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

    fn record_grant(
        &mut self,
        key: usize,
        id: Vec<u8>,
        token: i64,
        times: (u64, u64),
        blocking: bool,
    ) -> usize {
        self.out.counts.grants += 1;
        if blocking {
            self.out.counts.blocking_grants += 1;
        }
        self.out.grants.push(Grant {
            key,
            id,
            token,
            sent: times.0,
            received: times.1,
            blocking,
            last_proof: None,
        });
        self.out.grants.len() - 1
    }

    fn prove(&mut self, grant: usize, sent: u64) {
        let g = &mut self.out.grants[grant];
        g.last_proof = Some(g.last_proof.map_or(sent, |p| p.max(sent)));
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
            let key = self.rng.below(self.cfg.keys as u64) as usize;
            match self.rng.below(100) {
                0..=71 => self.lease_cycle(key),
                72..=83 => self.stale_call(),
                84..=91 => self.ghost_call(key),
                _ => self.look(key),
            }
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
        self.out.counts.acquires += 1;
        if block.is_some() {
            self.out.counts.blocking_acquires += 1;
        }
        let (r, sent, received) = self.send(&args);
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
        let mut grant =
            self.record_grant(key, id.clone(), token, (sent, received), block.is_some());
        let mut token = token;

        // A retry with the same LEASE, as after a lost reply: a renewal while the lease holds.
        if custom.is_some() && self.rng.chance(15) {
            self.out.counts.acquires += 1;
            let retry: [&[u8]; 5] = [
                b"PYLOCK.ACQUIRE",
                lock.as_bytes(),
                ttl_s.as_bytes(),
                b"LEASE",
                &id,
            ];
            let (r, sent, received) = self.send(&retry);
            match r {
                Reply::Lease(_, t) if t == token => {
                    self.out.counts.acquire_leases += 1;
                    self.out.counts.renewals += 1;
                    self.prove(grant, sent);
                }
                Reply::Lease(_, t) => {
                    // The first lease lapsed and the lock was free: a new grant, same id.
                    self.out.counts.acquire_leases += 1;
                    self.out.counts.regrants += 1;
                    self.remember(key, id.clone(), grant, true);
                    grant = self.record_grant(key, id.clone(), t, (sent, received), false);
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
            let extend = self
                .rng
                .chance(50)
                .then(|| self.rng.range(lo, hi).to_string());
            let mut args: Vec<&[u8]> = vec![b"PYLOCK.CONFIRM", lock.as_bytes(), &id];
            if let Some(e) = &extend {
                args.extend([b"EXTEND".as_slice(), e.as_bytes()]);
            }
            let (r, sent, _) = self.send(&args);
            match r {
                Reply::Lease(got, t) => {
                    if got != id || t != token {
                        self.violation(format!("CONFIRM of {id:?}/{token} answered {got:?}/{t}"));
                    }
                    if extend.is_some() {
                        self.out.counts.extended += 1;
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
            let (r, sent, _) = self.send(&[b"PYLOCK.RELEASE", lock.as_bytes(), &id]);
            match r {
                Reply::One => {
                    self.out.counts.released += 1;
                    self.prove(grant, sent);
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
        let (r, sent, _) = self.send(&[cmd, lock.as_bytes(), &id]);
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
            other => return self.unexpected("stale CONFIRM/RELEASE", &other),
        };
        if success {
            if dead {
                self.violation(format!(
                    "{} succeeded for lease {:?} on key {key}, which was released or refused before",
                    String::from_utf8_lossy(cmd),
                    String::from_utf8_lossy(&id)
                ));
            } else {
                // An abandoned lease that had not expired yet: still its owner's.
                self.prove(grant, sent);
                if release {
                    self.out.counts.released += 1;
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
                [_, Value::BulkString(id), _, Value::Int(token), _, Value::Int(_), _, Value::Int(_)] => {
                    if self.out.seen_holders.len() < 100_000 {
                        self.out.seen_holders.push((key, id.clone(), *token));
                    }
                }
                _ => self.violation(format!("PYLOCK.INFO replied {items:?}")),
            },
            other => self.violation(format!("PYLOCK.INFO replied {other:?}")),
        }
    }
}

/// Where the workload runs: one server, or a cluster (each lock's keys share a hash tag, so
/// its fence, counter and log live on the lock's node).
pub trait Target: Sync {
    /// A new connection; for a cluster, one that routes by key.
    fn connect(&self) -> Box<dyn ConnectionLike + Send>;
    /// The `INFO pylock` text of every node.
    fn pylock_info(&self) -> Vec<String>;
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
}

/// Runs the workload against `server` until `cfg.duration` has passed, and returns what the
/// clients saw. `faults` runs meanwhile on its own thread and must return once the flag it gets
/// turns true (set when the workers are done).
pub fn run(server: &impl Target, cfg: &Config, faults: impl FnOnce(&AtomicBool) + Send) -> History {
    let mut con = server.connect();
    for i in 0..cfg.keys {
        let names = key_names(i);
        redis::cmd("DEL")
            .arg(&names[..])
            .query::<i64>(&mut *con)
            .expect("clear the run's keys");
    }
    let start = Instant::now();
    let until = start + cfg.duration;
    let done = AtomicBool::new(false);
    let mut out = History {
        writes_per_key: vec![0; cfg.keys],
        ..History::default()
    };
    std::thread::scope(|scope| {
        let fault_thread = scope.spawn(|| faults(&done));
        let handles: Vec<_> = (0..cfg.workers)
            .map(|n| {
                let con = server.connect();
                scope.spawn(move || {
                    let mut w = Worker {
                        n,
                        cfg,
                        con,
                        rng: Rng::new(
                            cfg.seed ^ (n as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d),
                        ),
                        start,
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
                Ok(h) => {
                    out.grants.extend(h.grants);
                    out.sections.extend(h.sections);
                    out.seen_holders.extend(h.seen_holders);
                    out.violations.extend(h.violations);
                    out.counts.add(&h.counts);
                    for (total, n) in out.writes_per_key.iter_mut().zip(h.writes_per_key) {
                        *total += n;
                    }
                }
                Err(_) => out.violations.push("a worker panicked".into()),
            }
        }
        done.store(true, Ordering::SeqCst);
        if fault_thread.join().is_err() {
            out.violations.push("the fault injector panicked".into());
        }
    });
    out.elapsed = start.elapsed();
    out
}

/// Checks a run's history against what the server holds now. The server must be the one the
/// run used, with its `INFO pylock` counters counting that run only (a fresh server).
pub fn check(server: &impl Target, cfg: &Config, history: &History) -> Report {
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
        report.proven_intervals += check_intervals(key, &grants, v);
    }
    // Per key, as the contract has it: on one server tokens are unique server-wide, but each
    // node of a cluster runs its own sequence, so two keys on two nodes may share a token.
    let mut tokens = HashSet::new();
    for g in &history.grants {
        if !tokens.insert((g.key, g.token)) {
            v.push(format!("key {}: token {} granted twice", g.key, g.token));
        }
    }

    let mut con = server.connect();
    for key in 0..cfg.keys {
        let [_, _, counter, log] = key_names(key);
        let entries: Vec<String> = redis::cmd("LRANGE")
            .arg(&log)
            .arg(0)
            .arg(-1)
            .query(&mut *con)
            .expect("read the log");
        report.log_entries += entries.len() as u64;
        let sections: Vec<&Section> = history.sections.iter().filter(|s| s.key == key).collect();
        report.confirmed_sections += check_log(key, &entries, &sections, v);
        let value: Option<u64> = redis::cmd("GET").arg(&counter).query(&mut *con).ok();
        let value = value.unwrap_or(0);
        let accepted = entries
            .iter()
            .filter(|e| e.starts_with('x') && e.ends_with(":1"));
        let accepted = accepted.count() as u64;
        let want = history.writes_per_key[key];
        if value != want || accepted != want {
            v.push(format!(
                "key {key}: counter is {value}, the log has {accepted} accepted writes, clients saw {want}: an update was lost"
            ));
        }
    }

    // Every holder PYLOCK.INFO showed was granted to a client.
    let granted: HashSet<(usize, &[u8], i64)> = history
        .grants
        .iter()
        .map(|g| (g.key, g.id.as_slice(), g.token))
        .collect();
    for (key, id, token) in &history.seen_holders {
        if !granted.contains(&(*key, id.as_slice(), *token)) {
            v.push(format!(
                "PYLOCK.INFO showed lease {:?}/{token} on key {key}, granted to no client",
                String::from_utf8_lossy(id)
            ));
        }
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
    for (name, want) in [
        ("acquired", c.acquire_leases),
        ("contended", c.contended),
        ("released", c.released),
        ("confirmed", c.confirmed),
        ("extended", c.extended),
        ("notheld", c.notheld),
        ("notowned", c.notowned),
        ("waiting", 0),
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

/// Check 2: proven validity intervals of one key never overlap, and no grant falls inside one.
/// Returns how many leases had a proven interval.
fn check_intervals(key: usize, grants: &[&Grant], v: &mut Vec<String>) -> u64 {
    let mut intervals: Vec<(u64, u64, &Grant)> = grants
        .iter()
        .filter_map(|g| {
            let end = g.last_proof?;
            (end > g.received).then_some((g.received, end, *g))
        })
        .collect();
    intervals.sort_by_key(|i| i.0);
    let mut reach: Option<(u64, &Grant)> = None;
    for &(start, end, g) in &intervals {
        if let Some((until, other)) = reach {
            if start < until {
                v.push(format!(
                    "key {key}: leases {:?}/{} and {:?}/{} were both valid between {start} and {} µs",
                    String::from_utf8_lossy(&other.id), other.token,
                    String::from_utf8_lossy(&g.id), g.token, until.min(end)
                ));
            }
        }
        if reach.is_none_or(|(until, _)| end > until) {
            reach = Some((end, g));
        }
    }
    // A grant wholly inside another lease's proven interval.
    let mut by_sent: Vec<&Grant> = grants.to_vec();
    by_sent.sort_by_key(|g| g.sent);
    let mut j = 0;
    let mut reach: Option<(u64, &Grant)> = None;
    for g in by_sent {
        while j < intervals.len() && intervals[j].0 < g.sent {
            let (_, end, other) = intervals[j];
            if reach.is_none_or(|(until, _)| end > until) {
                reach = Some((end, other));
            }
            j += 1;
        }
        if let Some((until, other)) = reach {
            if g.received < until && other.token != g.token {
                v.push(format!(
                    "key {key}: lease {:?}/{} was granted between {} and {} µs, while {:?}/{} was valid until at least {until} µs",
                    String::from_utf8_lossy(&g.id), g.token, g.sent, g.received,
                    String::from_utf8_lossy(&other.id), other.token
                ));
            }
        }
    }
    intervals.len() as u64
}

/// Check 3: in the server's log order, sections that ran under a valid lease never interleave,
/// and the fence never refused them. Returns how many such sections there were.
fn check_log(key: usize, entries: &[String], sections: &[&Section], v: &mut Vec<String>) -> u64 {
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
        if ok != "1" {
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
    let mut reach: Option<(usize, i64)> = None;
    for &(start, end, token) in &spans {
        if let Some((until, other)) = reach {
            if start <= until {
                v.push(format!(
                    "key {key}: sections of tokens {other} and {token} interleaved at log entry {start}, both under valid leases"
                ));
            }
        }
        if reach.is_none_or(|(until, _)| end > until) {
            reach = Some((end, token));
        }
    }
    confirmed.len() as u64
}
