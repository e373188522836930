//! Bad input at scale: a generator of PYLOCK commands with malformed (and, by accident,
//! sometimes valid) arguments, and a model of the wire contract that says which replies each
//! one may get.
//!
//! The model is written from the contract (`PROTOCOL.md` and the README's error table), not
//! from `pylock-core`, so comparing the two finds disagreements in either. Where the contract
//! leaves a choice open (which of several bad values is reported first), the model allows every
//! error that applies.
//!
//! Used by `crates/pylock-module/tests/malformed.rs` (a bounded run per server, and a property
//! test of the core's parser against this model) and by `scripts/fuzz-commands` (this crate's
//! `fuzz-commands` binary, larger runs).

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::checker::Rng;
use testkit::redis::{self, Value};
use testkit::Server;

/// The largest lease id the contract allows.
pub const MAX_LEASE_ID: usize = 128;

/// What a key held when the command was judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyState {
    /// No key.
    Free,
    /// A lock held by this lease id.
    Held(Vec<u8>),
    /// A value of another type.
    OtherType,
}

/// A reply the contract allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed {
    /// An error with exactly this text.
    Error(String),
    /// An error with this code (first word); used for NOTHELD/NOTOWNED, whose message is free.
    ErrorCode(&'static str),
    /// nil.
    Nil,
    /// A lease reply. `id` is the expected lease id (`None`: a server-made UUID v4).
    Lease {
        /// Expected id.
        id: Option<Vec<u8>>,
        /// Whether this reply changed the key (a grant or a new deadline).
        changes: bool,
    },
    /// Integer 1 (a release: the key changed).
    One,
    /// A PYLOCK.INFO array for a held lock.
    Info,
    /// A bulk string: PYLOCK.WATCH's reason for a lease not held when it is called.
    Reason(&'static str),
}

/// What the model says a command may get, and whether it waits (BLOCK on a held lock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectation {
    /// Any of these replies is right.
    pub allowed: Vec<Allowed>,
    /// For ACQUIRE … BLOCK on a lock held by another lease, or WATCH … TIMEOUT of the lease
    /// that holds the lock: the BLOCK or TIMEOUT value's argument index.
    pub waits_at: Option<usize>,
    /// WATCH of the lease that holds the lock, with no TIMEOUT: it would wait for as long as
    /// the lease lives, so a run adds a short TIMEOUT (and asks the model again).
    pub waits_forever: bool,
}

const NOT_INT: &str = "ERR value is not an integer or out of range";
const SYNTAX: &str = "ERR syntax error";
const BAD_LEASE: &str = "ERR invalid lease id";
const NEG_TIMEOUT: &str = "ERR timeout is negative";
const BAD_LIMIT: &str = "ERR invalid limit";
/// What ACQUIRE … LIMIT n (n > 1) gets on a key that holds a lock (n = 1).
const LOCK_IS_N1: &str = "LIMITMISMATCH the key admits 1 lease at once";
const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";
const RESTORE_REFUSED: &str =
    "ERR pylock.restore is internal: only replication and AOF loading may call it";

fn arity(cmd: &str) -> String {
    format!("ERR wrong number of arguments for '{cmd}' command")
}

fn bad_expire(cmd: &str) -> String {
    format!("ERR invalid expire time in '{cmd}' command")
}

/// A Redis integer argument, by the contract's rule (Redis's own `string2ll`): an optional
/// `-`, then `0` or a non-zero digit and digits, within i64. No `+`, spaces, or leading zeros.
pub fn redis_int(b: &[u8]) -> Option<i64> {
    let digits = b.strip_prefix(b"-").unwrap_or(b);
    let canonical = match digits {
        [b'0'] => b.len() == 1,
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    if !canonical {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// How close to the overflow edge a TTL makes the answer depend on the server's clock.
const EDGE_SLACK_MS: i64 = 600_000;

/// A TTL's errors: `None` if valid, else the error; `Some(None)`-like ambiguity near the edge is
/// returned as `(error, ambiguous)`.
fn ttl_error(v: &[u8], cmd: &str, now_ms: i64) -> (Option<String>, bool) {
    match redis_int(v) {
        None => (Some(NOT_INT.into()), false),
        Some(t) if t <= 0 => (Some(bad_expire(cmd)), false),
        Some(t) => {
            let room = i64::MAX - now_ms;
            if t > room.saturating_add(EDGE_SLACK_MS) {
                (Some(bad_expire(cmd)), false)
            } else if t >= room.saturating_sub(EDGE_SLACK_MS) {
                (Some(bad_expire(cmd)), true)
            } else {
                (None, false)
            }
        }
    }
}

fn lease_error(v: &[u8]) -> Option<String> {
    (v.is_empty() || v.len() > MAX_LEASE_ID).then(|| BAD_LEASE.to_string())
}

/// The model: what the contract allows as the reply to `args` (argv, name first), given what
/// the key holds and the client's clock.
pub fn expect(args: &[Vec<u8>], key: &KeyState, now_ms: i64) -> Expectation {
    let name = args
        .first()
        .map(|n| String::from_utf8_lossy(n).to_ascii_lowercase())
        .unwrap_or_default();
    let mut out = Expectation {
        allowed: Vec::new(),
        waits_at: None,
        waits_forever: false,
    };
    let errors = |list: Vec<String>| list.into_iter().map(Allowed::Error).collect::<Vec<_>>();
    let n = args.len();
    // (argument index, error, ambiguous) for every value error, in argument order.
    let mut value_errors: Vec<(usize, String, bool)> = Vec::new();
    match name.as_str() {
        "pylock.restore" => {
            // Its arity (at least 4) is declared to the server, which checks it before the
            // module can refuse the call.
            out.allowed = if n < 4 {
                errors(vec![arity(&name)])
            } else {
                errors(vec![RESTORE_REFUSED.into()])
            };
            return out;
        }
        "pylock.acquire" => {
            if n < 3 {
                out.allowed = errors(vec![arity(&name)]);
                return out;
            }
            let mut lease = None;
            let mut block = None;
            let mut limit = None;
            let mut i = 3;
            while i < n {
                let opt = args[i].to_ascii_uppercase();
                let slot = match opt.as_slice() {
                    b"LEASE" => &mut lease,
                    b"BLOCK" => &mut block,
                    b"LIMIT" => &mut limit,
                    _ => {
                        out.allowed = errors(vec![SYNTAX.into()]);
                        return out;
                    }
                };
                if i + 1 >= n || slot.is_some() {
                    out.allowed = errors(vec![SYNTAX.into()]);
                    return out;
                }
                *slot = Some(i + 1);
                i += 2;
            }
            let (e, amb) = ttl_error(&args[2], &name, now_ms);
            if let Some(e) = e {
                value_errors.push((2, e, amb));
            }
            if let Some(l) = lease {
                if let Some(e) = lease_error(&args[l]) {
                    value_errors.push((l, e, false));
                }
            }
            let mut block_ms = None;
            if let Some(b) = block {
                match redis_int(&args[b]) {
                    None => value_errors.push((b, NOT_INT.into(), false)),
                    Some(ms) if ms < 0 => value_errors.push((b, NEG_TIMEOUT.into(), false)),
                    Some(ms) => block_ms = Some((b, ms)),
                }
            }
            let mut limit_n = 1;
            if let Some(l) = limit {
                match redis_int(&args[l]) {
                    None => value_errors.push((l, NOT_INT.into(), false)),
                    Some(k) if !(1..=100_000).contains(&k) => {
                        value_errors.push((l, BAD_LIMIT.into(), false))
                    }
                    Some(k) => limit_n = k,
                }
            }
            if finish_errors(&mut out, &mut value_errors) {
                return out;
            }
            let want_lease = lease.map(|l| args[l].clone());
            match key {
                KeyState::OtherType => out.allowed.push(Allowed::Error(WRONGTYPE.into())),
                // The held key is a lock: another n is refused whoever asks.
                KeyState::Held(_) if limit_n != 1 => {
                    out.allowed.push(Allowed::Error(LOCK_IS_N1.into()))
                }
                KeyState::Free => out.allowed.push(Allowed::Lease {
                    id: want_lease,
                    changes: true,
                }),
                KeyState::Held(holder) if want_lease.as_ref() == Some(holder) => {
                    out.allowed.push(Allowed::Lease {
                        id: want_lease,
                        changes: true,
                    })
                }
                KeyState::Held(_) => {
                    out.allowed.push(Allowed::Nil);
                    out.waits_at = block_ms.map(|(i, _)| i);
                }
            }
        }
        "pylock.confirm" => {
            if n < 3 {
                out.allowed = errors(vec![arity(&name)]);
                return out;
            }
            let Some([extend, claim]) = options(args, 3, [b"EXTEND", b"CLAIM"]) else {
                out.allowed = errors(vec![SYNTAX.into()]);
                return out;
            };
            if let Some(e) = lease_error(&args[2]) {
                value_errors.push((2, e, false));
            }
            if let Some(x) = extend {
                let (e, amb) = ttl_error(&args[x], &name, now_ms);
                if let Some(e) = e {
                    value_errors.push((x, e, amb));
                }
            }
            if let Some(c) = claim {
                // The new id follows the lease id's rule, and may not be the lease itself.
                if lease_error(&args[c]).is_some() || args[c] == args[2] {
                    value_errors.push((c, BAD_LEASE.into(), false));
                }
            }
            if finish_errors(&mut out, &mut value_errors) {
                return out;
            }
            let success = match claim {
                // The seeded lock was never claimed, so a claim of its holder succeeds
                // (a change), and CLAIMED never applies.
                Some(c) => Allowed::Lease {
                    id: Some(args[c].clone()),
                    changes: true,
                },
                None => Allowed::Lease {
                    id: Some(args[2].clone()),
                    changes: extend.is_some(),
                },
            };
            owner_outcome(&mut out, key, &args[2], success);
        }
        "pylock.watch" => {
            if n < 3 {
                out.allowed = errors(vec![arity(&name)]);
                return out;
            }
            let Some([timeout]) = options(args, 3, [b"TIMEOUT"]) else {
                out.allowed = errors(vec![SYNTAX.into()]);
                return out;
            };
            if let Some(e) = lease_error(&args[2]) {
                out.allowed = errors(vec![e]);
                return out;
            }
            let mut timeout_ms = None;
            if let Some(t) = timeout {
                match redis_int(&args[t]) {
                    None => value_errors.push((t, NOT_INT.into(), false)),
                    Some(ms) if ms < 0 => value_errors.push((t, NEG_TIMEOUT.into(), false)),
                    Some(ms) => timeout_ms = Some(ms),
                }
            }
            if finish_errors(&mut out, &mut value_errors) {
                return out;
            }
            match key {
                KeyState::OtherType => out.allowed.push(Allowed::Error(WRONGTYPE.into())),
                KeyState::Free => out.allowed.push(Allowed::Reason("notheld")),
                KeyState::Held(holder) if *holder == args[2] => {
                    // Held by the lease watched: nil once TIMEOUT passes (0 or none: never).
                    out.allowed.push(Allowed::Nil);
                    match (timeout, timeout_ms) {
                        (Some(t), Some(_)) => out.waits_at = Some(t),
                        _ => out.waits_forever = true,
                    }
                }
                KeyState::Held(_) => out.allowed.push(Allowed::Reason("notowned")),
            }
        }
        "pylock.release" => {
            if n != 3 {
                out.allowed = errors(vec![arity(&name)]);
                return out;
            }
            if let Some(e) = lease_error(&args[2]) {
                out.allowed = errors(vec![e]);
                return out;
            }
            owner_outcome(&mut out, key, &args[2], Allowed::One);
        }
        "pylock.info" => {
            if n != 2 {
                out.allowed = errors(vec![arity(&name)]);
                return out;
            }
            out.allowed.push(match key {
                KeyState::Free => Allowed::Nil,
                KeyState::Held(_) => Allowed::Info,
                KeyState::OtherType => Allowed::Error(WRONGTYPE.into()),
            });
        }
        _ => out.allowed = errors(vec![format!("unknown command {name}")]),
    }
    out
}

/// Reads `NAME value` options from `args[from..]`, each of `names` at most once
/// (case-insensitive), into the index of each one's value. `None`: an unknown or repeated name,
/// or a name without its value (`ERR syntax error`).
fn options<const N: usize>(
    args: &[Vec<u8>],
    from: usize,
    names: [&[u8]; N],
) -> Option<[Option<usize>; N]> {
    let mut found = [None; N];
    let mut i = from;
    while i < args.len() {
        let slot = names.iter().position(|n| args[i].eq_ignore_ascii_case(n))?;
        if i + 1 >= args.len() || found[slot].is_some() {
            return None;
        }
        found[slot] = Some(i + 1);
        i += 2;
    }
    Some(found)
}

/// Turns the value errors into the allowed set: the README fixes the order (count, option
/// names, then values left to right), so the leftmost bad value's error is the answer. Only an
/// overflow that depends on the server's clock is in doubt; the next error, or the valid
/// outcomes, are then allowed too. Returns true when an error must be the answer.
fn finish_errors(out: &mut Expectation, errors: &mut [(usize, String, bool)]) -> bool {
    errors.sort_by_key(|e| e.0);
    for (_, e, ambiguous) in errors.iter() {
        if !out.allowed.contains(&Allowed::Error(e.clone())) {
            out.allowed.push(Allowed::Error(e.clone()));
        }
        if !ambiguous {
            return true;
        }
    }
    false
}

fn owner_outcome(out: &mut Expectation, key: &KeyState, lease: &[u8], success: Allowed) {
    match key {
        KeyState::OtherType => out.allowed.push(Allowed::Error(WRONGTYPE.into())),
        KeyState::Free => out.allowed.push(Allowed::ErrorCode("NOTHELD")),
        KeyState::Held(holder) if holder == lease => out.allowed.push(success),
        KeyState::Held(_) => out.allowed.push(Allowed::ErrorCode("NOTOWNED")),
    }
}

fn is_uuid_v4(b: &[u8]) -> bool {
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            14 => *c == b'4',
            19 => matches!(c, b'8' | b'9' | b'a' | b'b'),
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(c),
        })
}

/// Which allowed reply `reply` is, if any.
pub fn judge<'a>(
    allowed: &'a [Allowed],
    reply: &Result<Value, redis::RedisError>,
) -> Option<&'a Allowed> {
    allowed.iter().find(|a| match (a, reply) {
        (Allowed::Error(text), Err(e)) => testkit::error_text(e) == *text,
        (Allowed::ErrorCode(code), Err(e)) => e.code() == Some(code),
        (Allowed::Nil, Ok(Value::Nil)) => true,
        (Allowed::One, Ok(Value::Int(1))) => true,
        (Allowed::Lease { id, .. }, Ok(Value::Array(items))) => match items.as_slice() {
            [Value::BulkString(got), Value::Int(token), Value::Int(ttl)] => {
                *token > 0
                    && *ttl >= 0
                    && match id {
                        Some(id) => got == id,
                        None => is_uuid_v4(got),
                    }
            }
            _ => false,
        },
        (Allowed::Reason(r), Ok(Value::BulkString(got))) => got == r.as_bytes(),
        (Allowed::Info, Ok(Value::Array(items))) => {
            items.len() == 8
                && items.first() == Some(&Value::BulkString(b"lease".to_vec()))
                && items.get(2) == Some(&Value::BulkString(b"token".to_vec()))
        }
        _ => false,
    })
}

// ---- the generator ---------------------------------------------------------------------------

/// A seeded key and what it holds.
#[derive(Debug, Clone)]
pub struct SeedKey {
    /// Key name.
    pub name: Vec<u8>,
    /// What it holds.
    pub state: KeyState,
}

/// The fixed lease id of the seeded held lock.
pub const HELD_LEASE: &[u8] = b"held-lease";

/// Keys the run creates before sending anything: a held lock and one key of every other type.
pub fn seed(con: &mut redis::Connection) -> Vec<SeedKey> {
    let mut keys = Vec::new();
    let v: Value = redis::cmd("PYLOCK.ACQUIRE")
        .arg("lock:held")
        .arg(3_600_000)
        .arg("LEASE")
        .arg(HELD_LEASE)
        .query(con)
        .expect("seed the held lock");
    assert_ne!(v, Value::Nil, "seed lock was held already");
    keys.push(SeedKey {
        name: b"lock:held".to_vec(),
        state: KeyState::Held(HELD_LEASE.to_vec()),
    });
    let others: [(&[u8], &[&str]); 7] = [
        (b"string", &["SET", "v"]),
        (b"hash", &["HSET", "lease", "x", "token", "1"]),
        (b"list", &["RPUSH", "a", "b"]),
        (b"set", &["SADD", "a"]),
        (b"zset", &["ZADD", "1", "a"]),
        (b"stream", &["XADD", "*", "f", "v"]),
        (b"bin\x00\xff\r\nkey", &["SET", "binary"]),
    ];
    for (name, cmd) in others {
        let mut c = redis::cmd(cmd[0]);
        c.arg(name).arg(&cmd[1..]);
        c.query::<Value>(con).expect("seed a key");
        keys.push(SeedKey {
            name: name.to_vec(),
            state: KeyState::OtherType,
        });
    }
    redis::cmd("PEXPIRE")
        .arg("string")
        .arg(3_600_000)
        .query::<i64>(con)
        .expect("PEXPIRE");
    keys
}

/// Key names that must stay free.
pub fn free_keys() -> Vec<Vec<u8>> {
    vec![
        b"lock:free".to_vec(),
        Vec::new(),
        b"\x00".to_vec(),
        b"LEASE".to_vec(),
        b"BLOCK".to_vec(),
        vec![b'k'; 70_000],
    ]
}

fn edge_numbers(now_ms: i64) -> Vec<Vec<u8>> {
    let room = i64::MAX - now_ms;
    let mut v: Vec<Vec<u8>> = [
        "0",
        "1",
        "-1",
        "2",
        "100",
        "60000",
        "9223372036854775807",
        "-9223372036854775808",
        "9223372036854775806",
        "9223372036854775808",
        "-9223372036854775809",
        "99999999999999999999999",
        "01",
        "-0",
        "+1",
        " 1",
        "1 ",
        "1.5",
        "1e3",
        "0x10",
        "",
        "-",
        "nan",
        "١",
        "4611686018427387904",
        "1125899906842624",
        "1125899906842625",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    for d in [-1_000_000_000i64, 0, 1, 1_000_000_000] {
        v.push(room.saturating_add(d).to_string().into_bytes());
    }
    v
}

fn option_word(rng: &mut Rng) -> Vec<u8> {
    let w = *rng.pick(&[
        "LEASE",
        "BLOCK",
        "EXTEND",
        "CLAIM",
        "TIMEOUT",
        "NX",
        "PX",
        "PXAT",
        "KEEPTTL",
        "lease\0",
        "LEASE ",
        "LEASES",
        "CLAIMS",
        "TIMEOUT\0",
        "LIMIT",
    ]);
    // Random case: option names are case-insensitive.
    w.bytes()
        .map(|c| {
            if rng.chance(50) {
                c.to_ascii_lowercase()
            } else {
                c
            }
        })
        .collect()
}

fn random_bytes(rng: &mut Rng, max: u64) -> Vec<u8> {
    let len = rng.below(max + 1) as usize;
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

fn lease_value(rng: &mut Rng) -> Vec<u8> {
    match rng.below(10) {
        0 | 1 => HELD_LEASE.to_vec(),
        2 => Vec::new(),
        3 => vec![b'x'; MAX_LEASE_ID],
        4 => vec![b'y'; MAX_LEASE_ID + 1],
        5 => random_bytes(rng, 40),
        6 if rng.chance(20) => vec![b'z'; 100_000],
        _ => format!("lease-{}", rng.below(1000)).into_bytes(),
    }
}

fn any_value(rng: &mut Rng, numbers: &[Vec<u8>]) -> Vec<u8> {
    match rng.below(12) {
        0..=3 => rng.pick(numbers).clone(),
        4 | 5 => option_word(rng),
        6 | 7 => lease_value(rng),
        8 => random_bytes(rng, 300),
        9 if rng.chance(10) => vec![b'\xff'; 64 * 1024 + rng.below(1 << 20) as usize],
        _ => rng.below(100_000).to_string().into_bytes(),
    }
}

/// One command: a valid template of a random PYLOCK command, then a few random mutations
/// (drop, duplicate, swap, replace a value with an edge case, move an option, add junk).
pub fn generate(rng: &mut Rng, keys: &[Vec<u8>], now_ms: i64) -> Vec<Vec<u8>> {
    let numbers = edge_numbers(now_ms);
    let key = rng.pick(keys).clone();
    let ttl = || -> Vec<u8> { b"1000".to_vec() };
    let name = *rng.pick(&[
        "PYLOCK.ACQUIRE",
        "PYLOCK.ACQUIRE",
        "PYLOCK.ACQUIRE",
        "PYLOCK.CONFIRM",
        "PYLOCK.CONFIRM",
        "PYLOCK.RELEASE",
        "PYLOCK.INFO",
        "pylock.acquire",
        "PyLock.Confirm",
        "PYLOCK.RELEASE",
        "PYLOCK.INFO",
        "PyLoCk.AcQuIrE",
        "PYLOCK.CONFIRM",
        "PYLOCK.RESTORE",
        "PYLOCK.WATCH",
        "PYLOCK.WATCH",
        "pylock.Watch",
    ]);
    let mut args: Vec<Vec<u8>> = vec![name.as_bytes().to_vec(), key];
    match name.to_ascii_lowercase().as_str() {
        "pylock.acquire" => {
            args.push(ttl());
            if rng.chance(50) {
                args.extend([b"LEASE".to_vec(), lease_value(rng)]);
            }
            if rng.chance(40) {
                args.extend([b"BLOCK".to_vec(), b"5".to_vec()]);
            }
            if rng.chance(20) {
                // n = 1 (a lock, as without LIMIT) or refused values: the model's keys stay locks.
                let n = *rng.pick(&["1", "0", "-1", "100001", "x", "1.5", "01"]);
                args.extend([b"LIMIT".to_vec(), n.as_bytes().to_vec()]);
            }
        }
        "pylock.confirm" => {
            let lease = lease_value(rng);
            args.push(lease.clone());
            if rng.chance(50) {
                args.extend([b"EXTEND".to_vec(), ttl()]);
            }
            if rng.chance(40) {
                // The new id: sometimes the lease itself (refused), else any lease value.
                let to = if rng.chance(20) {
                    lease
                } else {
                    lease_value(rng)
                };
                args.extend([b"CLAIM".to_vec(), to]);
            }
        }
        "pylock.watch" => {
            args.push(lease_value(rng));
            if rng.chance(60) {
                let t = if rng.chance(50) {
                    rng.pick(&numbers).clone()
                } else {
                    b"5".to_vec()
                };
                args.extend([b"TIMEOUT".to_vec(), t]);
            }
        }
        "pylock.release" => args.push(lease_value(rng)),
        "pylock.restore" => {
            args.extend([lease_value(rng), b"1".to_vec(), b"PXAT".to_vec()]);
            args.push(numbers[rng.below(numbers.len() as u64) as usize].clone());
        }
        _ => {}
    }
    let mutations = rng.below(4);
    for _ in 0..mutations {
        let len = args.len() as u64;
        match rng.below(8) {
            // Drop an argument after the name.
            0 if len > 1 => {
                let i = 1 + rng.below(len - 1) as usize;
                args.remove(i);
            }
            // Replace a value with an edge case.
            1 | 2 if len > 2 => {
                let i = 2 + rng.below(len - 2) as usize;
                args[i] = any_value(rng, &numbers);
            }
            // Duplicate an argument pair (a repeated option).
            3 if len > 3 => {
                let i = 2 + rng.below(len - 3) as usize;
                let pair = [args[i].clone(), args[i + 1].clone()];
                args.extend(pair);
            }
            // Swap two arguments (an option in the wrong place).
            4 if len > 2 => {
                let i = 1 + rng.below(len - 1) as usize;
                let j = 1 + rng.below(len - 1) as usize;
                args.swap(i, j);
            }
            // Insert an option word or junk anywhere.
            5 | 6 => {
                let i = 1 + rng.below(len) as usize;
                let v = if rng.chance(60) {
                    option_word(rng)
                } else {
                    any_value(rng, &numbers)
                };
                args.insert(i.min(args.len()), v);
            }
            // Too many arguments.
            _ => {
                for _ in 0..rng.below(6) {
                    args.push(any_value(rng, &numbers));
                }
            }
        }
    }
    args
}

/// What a black-box run sent and saw.
#[derive(Debug, Clone, Default)]
pub struct FuzzReport {
    /// Commands sent.
    pub sent: u64,
    /// Replies by kind (error text, or nil/lease/one/info).
    pub by_reply: HashMap<String, u64>,
    /// Commands that were valid by accident and changed a key, then were undone.
    pub undone: u64,
    /// Commands that waited (BLOCK on a held lock), with their BLOCK value made short.
    pub waited: u64,
    /// Largest argument sent, in bytes.
    pub largest_arg: usize,
    /// Everything that broke the contract: a wrong reply, a changed key, a dead server.
    pub violations: Vec<String>,
}

impl FuzzReport {
    /// A human-readable summary and verdict.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "sent {} malformed-or-random commands (largest argument {} bytes); {} valid by accident were undone; {} waited briefly",
            self.sent, self.largest_arg, self.undone, self.waited
        );
        let mut kinds: Vec<_> = self.by_reply.iter().collect();
        kinds.sort_by(|a, b| b.1.cmp(a.1));
        for (k, n) in kinds {
            let _ = writeln!(s, "  {n:>6}  {k}");
        }
        crate::write_verdict(&mut s, &self.violations);
        s
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn show(args: &[Vec<u8>]) -> String {
    args.iter()
        .map(|a| {
            if a.len() > 60 {
                format!("<{} bytes>", a.len())
            } else {
                format!("{:?}", String::from_utf8_lossy(a))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Snapshot of every seeded key (DUMP and PEXPIRETIME) and DBSIZE, in one round trip.
fn snapshot(con: &mut redis::Connection, keys: &[SeedKey]) -> redis::RedisResult<Vec<Value>> {
    let mut p = redis::pipe();
    p.cmd("DBSIZE");
    for k in keys {
        p.cmd("DUMP").arg(&k.name).cmd("PEXPIRETIME").arg(&k.name);
    }
    p.query(con)
}

/// Sends `count` generated commands to `server` and checks every reply against the model, and
/// after every command that no key was created or changed.
pub fn run(server: &Server, count: u64, seed: u64) -> FuzzReport {
    let mut report = FuzzReport::default();
    let mut con = server.conn();
    let seeded = seed_keys(&mut con);
    let saved = save(&mut con, &seeded);
    let baseline = snapshot(&mut con, &seeded).expect("snapshot");
    let mut pool: Vec<Vec<u8>> = seeded.iter().map(|k| k.name.clone()).collect();
    pool.extend(free_keys());
    let state_of = |key: &[u8]| {
        seeded
            .iter()
            .find(|k| k.name == key)
            .map_or(KeyState::Free, |k| k.state.clone())
    };
    let mut rng = Rng::new(seed);
    for i in 0..count {
        let now = now_ms();
        let mut args = generate(&mut rng, &pool, now);
        let key_state = args.get(1).map_or(KeyState::Free, |k| state_of(k));
        let mut exp = expect(&args, &key_state, now);
        if exp.waits_forever {
            // WATCH of the held lease would wait as long as the lease lives: bound it.
            args.extend([b"TIMEOUT".to_vec(), b"20".to_vec()]);
            exp = expect(&args, &key_state, now);
        }
        if let Some(at) = exp.waits_at {
            // BLOCK on a held lock, or WATCH of its lease, waits that long: keep it short (0
            // would wait forever).
            args[at] = (1 + rng.below(20)).to_string().into_bytes();
            exp = expect(&args, &key_state, now);
            report.waited += 1;
        }
        report.sent += 1;
        report.largest_arg = report
            .largest_arg
            .max(args.iter().map(Vec::len).max().unwrap_or(0));
        let mut cmd = redis::cmd(std::str::from_utf8(&args[0]).unwrap_or("PING"));
        for a in &args[1..] {
            cmd.arg(a.as_slice());
        }
        let reply = cmd.query::<Value>(&mut con);
        let kind = match &reply {
            Err(e) if e.code() == Some("NOTHELD") || e.code() == Some("NOTOWNED") => {
                e.code().unwrap_or_default().to_string()
            }
            Err(e) if e.is_io_error() || e.is_connection_dropped() => {
                report
                    .violations
                    .push(format!("#{i} {}: connection failed: {e}", show(&args)));
                return report;
            }
            Err(e) => testkit::error_text(e),
            Ok(Value::Nil) => "nil".into(),
            Ok(Value::Int(1)) => "1 (released)".into(),
            Ok(Value::Array(a)) if a.len() == 3 => "lease reply".into(),
            Ok(Value::Array(a)) if a.len() == 8 => "PYLOCK.INFO reply".into(),
            Ok(Value::BulkString(b)) => format!("WATCH reason {}", String::from_utf8_lossy(b)),
            Ok(other) => format!("{other:?}"),
        };
        *report.by_reply.entry(kind.clone()).or_default() += 1;
        let Some(matched) = judge(&exp.allowed, &reply) else {
            report.violations.push(format!(
                "#{i} {}: got {kind:?}, allowed {:?}",
                show(&args),
                exp.allowed
            ));
            continue;
        };
        let changed = matches!(matched, Allowed::One | Allowed::Lease { changes: true, .. });
        if changed {
            report.undone += 1;
            undo(&mut con, &args[1], &saved);
        }
        match snapshot(&mut con, &seeded) {
            Ok(now) if now == baseline => {}
            Ok(_) => {
                report.violations.push(format!(
                    "#{i} {}: a key or DBSIZE changed (reply {kind:?})",
                    show(&args)
                ));
                // Put things back so later commands are judged against the seeded state.
                for k in &pool {
                    if !seeded.iter().any(|s| &s.name == k) {
                        let _ = redis::cmd("DEL").arg(k).query::<i64>(&mut con);
                    }
                }
                undo(&mut con, b"lock:held", &saved);
            }
            Err(e) => {
                report
                    .violations
                    .push(format!("#{i} {}: server gone: {e}", show(&args)));
                return report;
            }
        }
    }
    report
}

fn seed_keys(con: &mut redis::Connection) -> Vec<SeedKey> {
    redis::cmd("FLUSHALL")
        .query::<()>(con)
        .expect("FLUSHALL before seeding");
    seed(con)
}

/// A seeded key's DUMP payload and absolute expiry, to put it back after a command that was
/// valid by accident changed it.
struct Saved {
    name: Vec<u8>,
    payload: Vec<u8>,
    expire_at: i64,
}

fn save(con: &mut redis::Connection, seeded: &[SeedKey]) -> Vec<Saved> {
    seeded
        .iter()
        .map(|k| Saved {
            name: k.name.clone(),
            payload: redis::cmd("DUMP")
                .arg(&k.name)
                .query(con)
                .expect("DUMP a seeded key"),
            expire_at: redis::cmd("PEXPIRETIME")
                .arg(&k.name)
                .query(con)
                .expect("PEXPIRETIME"),
        })
        .collect()
}

/// Puts `key` back as seeded: a seeded key from its DUMP with its absolute expiry, any other
/// key deleted.
fn undo(con: &mut redis::Connection, key: &[u8], saved: &[Saved]) {
    let Some(k) = saved.iter().find(|k| k.name == key) else {
        let _ = redis::cmd("DEL").arg(key).query::<i64>(con);
        return;
    };
    // RESTORE … ABSTTL takes the absolute expiry; 0 means none.
    let _ = redis::cmd("RESTORE")
        .arg(key)
        .arg(k.expire_at.max(0))
        .arg(k.payload.as_slice())
        .arg("REPLACE")
        .arg("ABSTTL")
        .query::<()>(con);
}

// ---- named bad inputs of CLAIM and WATCH -------------------------------------------------------

/// The contract's error table for `CONFIRM … CLAIM` and `PYLOCK.WATCH`, as named cases: argv
/// (on the seeded held lock `lock:held`, whose lease is [`HELD_LEASE`], or a free key) and the
/// exact error each must get.
pub fn claim_and_watch_bad_inputs() -> Vec<(Vec<Vec<u8>>, String)> {
    let long = vec![b'y'; MAX_LEASE_ID + 1];
    let held = HELD_LEASE;
    let cases: Vec<(Vec<&[u8]>, String)> = vec![
        // CLAIM's new id: empty, over 128 bytes, the lease itself.
        (
            vec![b"PYLOCK.CONFIRM", b"lock:held", held, b"CLAIM", b""],
            BAD_LEASE.into(),
        ),
        (
            vec![b"PYLOCK.CONFIRM", b"lock:held", held, b"CLAIM", &long],
            BAD_LEASE.into(),
        ),
        (
            vec![b"PYLOCK.CONFIRM", b"lock:held", held, b"CLAIM", held],
            BAD_LEASE.into(),
        ),
        (
            vec![
                b"PYLOCK.CONFIRM",
                b"lock:held",
                held,
                b"claim",
                held,
                b"EXTEND",
                b"100",
            ],
            BAD_LEASE.into(),
        ),
        (
            vec![b"PYLOCK.CONFIRM", b"lock:free", b"a", b"CLAIM", b"a"],
            BAD_LEASE.into(),
        ),
        (
            vec![b"PYLOCK.CONFIRM", b"lock:held", b"", b"CLAIM", b"new"],
            BAD_LEASE.into(),
        ),
        // Values left to right: EXTEND's before CLAIM's, and the other way round.
        (
            vec![
                b"PYLOCK.CONFIRM",
                b"lock:held",
                held,
                b"EXTEND",
                b"x",
                b"CLAIM",
                b"",
            ],
            NOT_INT.into(),
        ),
        (
            vec![
                b"PYLOCK.CONFIRM",
                b"lock:held",
                held,
                b"CLAIM",
                b"",
                b"EXTEND",
                b"x",
            ],
            BAD_LEASE.into(),
        ),
        (
            vec![
                b"PYLOCK.CONFIRM",
                b"lock:held",
                held,
                b"CLAIM",
                b"new",
                b"EXTEND",
                b"0",
            ],
            bad_expire("pylock.confirm"),
        ),
        // Repeated, unknown, or missing its value.
        (
            vec![b"PYLOCK.CONFIRM", b"lock:held", held, b"CLAIM"],
            SYNTAX.into(),
        ),
        (
            vec![
                b"PYLOCK.CONFIRM",
                b"lock:held",
                held,
                b"CLAIM",
                b"a",
                b"CLAIM",
                b"b",
            ],
            SYNTAX.into(),
        ),
        (
            vec![
                b"PYLOCK.CONFIRM",
                b"lock:held",
                held,
                b"CLAIM",
                b"a",
                b"claim",
                b"a",
            ],
            SYNTAX.into(),
        ),
        (
            vec![b"PYLOCK.CONFIRM", b"lock:held", held, b"CLAIMS", b"a"],
            SYNTAX.into(),
        ),
        (
            vec![
                b"PYLOCK.CONFIRM",
                b"lock:held",
                held,
                b"CLAIM",
                b"a",
                b"EXTEND",
            ],
            SYNTAX.into(),
        ),
        (
            vec![
                b"PYLOCK.CONFIRM",
                b"lock:held",
                held,
                b"CLAIM",
                b"a",
                b"extra",
            ],
            SYNTAX.into(),
        ),
        (
            vec![b"PYLOCK.CONFIRM", b"lock:held", held, b"TIMEOUT", b"5"],
            SYNTAX.into(),
        ),
        (
            vec![b"PYLOCK.CONFIRM", b"lock:held"],
            arity("pylock.confirm"),
        ),
        // WATCH's TIMEOUT: not an integer, negative.
        (
            vec![b"PYLOCK.WATCH", b"lock:held", held, b"TIMEOUT", b"abc"],
            NOT_INT.into(),
        ),
        (
            vec![b"PYLOCK.WATCH", b"lock:held", held, b"TIMEOUT", b"1.5"],
            NOT_INT.into(),
        ),
        (
            vec![b"PYLOCK.WATCH", b"lock:held", held, b"TIMEOUT", b""],
            NOT_INT.into(),
        ),
        (
            vec![b"PYLOCK.WATCH", b"lock:held", held, b"TIMEOUT", b"+5"],
            NOT_INT.into(),
        ),
        (
            vec![
                b"PYLOCK.WATCH",
                b"lock:held",
                held,
                b"TIMEOUT",
                b"9223372036854775808",
            ],
            NOT_INT.into(),
        ),
        (
            vec![b"PYLOCK.WATCH", b"lock:held", held, b"TIMEOUT", b"-1"],
            NEG_TIMEOUT.into(),
        ),
        (
            vec![
                b"PYLOCK.WATCH",
                b"lock:free",
                b"a",
                b"timeout",
                b"-9223372036854775808",
            ],
            NEG_TIMEOUT.into(),
        ),
        // WATCH's lease id.
        (vec![b"PYLOCK.WATCH", b"lock:held", b""], BAD_LEASE.into()),
        (vec![b"PYLOCK.WATCH", b"lock:held", &long], BAD_LEASE.into()),
        (
            vec![b"PYLOCK.WATCH", b"lock:held", b"", b"TIMEOUT", b"-1"],
            BAD_LEASE.into(),
        ),
        // Repeated, unknown, or missing its value.
        (
            vec![b"PYLOCK.WATCH", b"lock:held", held, b"TIMEOUT"],
            SYNTAX.into(),
        ),
        (
            vec![
                b"PYLOCK.WATCH",
                b"lock:held",
                held,
                b"TIMEOUT",
                b"1",
                b"TIMEOUT",
                b"2",
            ],
            SYNTAX.into(),
        ),
        (
            vec![
                b"PYLOCK.WATCH",
                b"lock:held",
                held,
                b"TIMEOUT",
                b"1",
                b"timeout",
                b"-1",
            ],
            SYNTAX.into(),
        ),
        (
            vec![b"PYLOCK.WATCH", b"lock:held", held, b"BLOCK", b"1"],
            SYNTAX.into(),
        ),
        (
            vec![
                b"PYLOCK.WATCH",
                b"lock:held",
                held,
                b"TIMEOUT",
                b"5",
                b"extra",
            ],
            SYNTAX.into(),
        ),
        (
            vec![b"PYLOCK.WATCH", b"lock:held", held, b"extra"],
            SYNTAX.into(),
        ),
        // Wrong arity.
        (vec![b"PYLOCK.WATCH", b"lock:held"], arity("pylock.watch")),
        (vec![b"PYLOCK.WATCH"], arity("pylock.watch")),
        (vec![b"pylock.Watch"], arity("pylock.watch")),
    ];
    cases
        .into_iter()
        .map(|(args, e)| (args.into_iter().map(<[u8]>::to_vec).collect(), e))
        .collect()
}

/// Sends each of `cases` (argv and the exact error it must get) to `server`, after seeding the
/// usual keys. Checks that the model agrees, that the server answers exactly that error, that
/// no key changed (`DBSIZE`, and each seeded key's `DUMP` and `PEXPIRETIME`), that `INFO
/// pylock_watching` is 0, and that the server still answers `PING`. Returns every violation.
pub fn check_named_cases(server: &Server, cases: &[(Vec<Vec<u8>>, String)]) -> Vec<String> {
    let mut violations = Vec::new();
    let mut con = server.conn();
    let seeded = seed_keys(&mut con);
    let baseline = snapshot(&mut con, &seeded).expect("snapshot");
    let state_of = |key: &[u8]| {
        seeded
            .iter()
            .find(|k| k.name == key)
            .map_or(KeyState::Free, |k| k.state.clone())
    };
    for (args, want) in cases {
        let key = args.get(1).map_or(KeyState::Free, |k| state_of(k));
        let exp = expect(args, &key, now_ms());
        if exp.allowed != vec![Allowed::Error(want.clone())] {
            violations.push(format!(
                "{}: the model allows {:?}, the contract says {want:?}",
                show(args),
                exp.allowed
            ));
        }
        let mut cmd = redis::cmd(std::str::from_utf8(&args[0]).unwrap_or("PING"));
        for a in &args[1..] {
            cmd.arg(a.as_slice());
        }
        match cmd.query::<Value>(&mut con) {
            Err(e) if testkit::error_text(&e) == *want => {}
            other => violations.push(format!("{}: got {other:?}, want {want:?}", show(args))),
        }
        match snapshot(&mut con, &seeded) {
            Ok(now) if now == baseline => {}
            Ok(_) => violations.push(format!("{}: a key or DBSIZE changed", show(args))),
            Err(e) => {
                violations.push(format!("{}: server gone: {e}", show(args)));
                return violations;
            }
        }
    }
    let watching = server.info("pylock", "pylock_watching");
    if watching.as_deref() != Some("0") {
        violations.push(format!("pylock_watching is {watching:?} after the cases"));
    }
    match redis::cmd("PING").query::<String>(&mut con) {
        Ok(p) if p == "PONG" => {}
        other => violations.push(format!("PING after the cases: {other:?}")),
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn state(args: &[Vec<u8>]) -> KeyState {
        if args.get(1).map(Vec::as_slice) == Some(b"lock:held".as_slice()) {
            KeyState::Held(HELD_LEASE.to_vec())
        } else {
            KeyState::Free
        }
    }

    #[test]
    fn the_model_gives_each_named_claim_and_watch_error() {
        for (args, want) in claim_and_watch_bad_inputs() {
            let exp = expect(&args, &state(&args), NOW);
            assert_eq!(
                exp.allowed,
                vec![Allowed::Error(want.clone())],
                "{}",
                show(&args)
            );
        }
    }

    #[test]
    fn the_model_knows_claim_and_watch_outcomes() {
        let argv = |a: &[&[u8]]| a.iter().map(|x| x.to_vec()).collect::<Vec<_>>();
        let held = KeyState::Held(HELD_LEASE.to_vec());
        // A claim of the holder: the new id's lease reply, a change.
        let exp = expect(
            &argv(&[b"PYLOCK.CONFIRM", b"k", HELD_LEASE, b"CLAIM", b"n"]),
            &held,
            NOW,
        );
        assert_eq!(
            exp.allowed,
            vec![Allowed::Lease {
                id: Some(b"n".to_vec()),
                changes: true
            }]
        );
        let exp = expect(
            &argv(&[b"PYLOCK.CONFIRM", b"k", b"other", b"CLAIM", b"n"]),
            &held,
            NOW,
        );
        assert_eq!(exp.allowed, vec![Allowed::ErrorCode("NOTOWNED")]);
        let exp = expect(
            &argv(&[b"PYLOCK.CONFIRM", b"k", b"a", b"CLAIM", b"n"]),
            &KeyState::Free,
            NOW,
        );
        assert_eq!(exp.allowed, vec![Allowed::ErrorCode("NOTHELD")]);
        // WATCH: the reason at once, or a wait for the holder's own lease.
        let exp = expect(&argv(&[b"PYLOCK.WATCH", b"k", b"a"]), &KeyState::Free, NOW);
        assert_eq!(exp.allowed, vec![Allowed::Reason("notheld")]);
        let exp = expect(
            &argv(&[b"PYLOCK.WATCH", b"k", b"other", b"TIMEOUT", b"0"]),
            &held,
            NOW,
        );
        assert_eq!(exp.allowed, vec![Allowed::Reason("notowned")]);
        let exp = expect(&argv(&[b"PYLOCK.WATCH", b"k", HELD_LEASE]), &held, NOW);
        assert_eq!((exp.allowed, exp.waits_forever), (vec![Allowed::Nil], true));
        let exp = expect(
            &argv(&[b"PYLOCK.WATCH", b"k", HELD_LEASE, b"TIMEOUT", b"0"]),
            &held,
            NOW,
        );
        assert_eq!((exp.waits_at, exp.waits_forever), (Some(4), false));
        let exp = expect(
            &argv(&[b"PYLOCK.WATCH", b"s", b"a"]),
            &KeyState::OtherType,
            NOW,
        );
        assert_eq!(exp.allowed, vec![Allowed::Error(WRONGTYPE.into())]);
    }
}
