//! The PYLOCK commands as [`redis::Cmd`]s, and the types their replies parse into.
//!
//! [`LockFactory`](crate::LockFactory) and [`LockHandle`](crate::LockHandle) send one command
//! at a time and wait for its reply. These builders are for everything else: a
//! [`redis::pipe()`] that confirms a lease and does the work's reads in one round trip, a
//! `MULTI` block, or a connection type of your own. Each builder turns into a `redis::Cmd`
//! with `to_cmd`; the factory and the handle send exactly these commands, so there is one
//! definition of the wire format (its arguments are written by `pylock_core`'s command types,
//! which the module parses with).
//!
//! Replies parse with [`redis::FromRedisValue`]:
//!
//! | command | reply | read it as |
//! | --- | --- | --- |
//! | [`acquire`] | a lease, or nil when another lease holds the lock | `Option<Lease>` |
//! | [`confirm`] | a lease; `NOTHELD` / `NOTOWNED` / `CLAIMED` errors | [`Lease`] |
//! | [`confirm`] with [`claim`](Confirm::claim) | the new lease; the same errors | [`Lease`] |
//! | [`release`] | integer 1; `NOTHELD` / `NOTOWNED` / `CLAIMED` errors | `i64` or `()` |
//! | [`info`] | nil when the lock is free, else the holder | `Option<LockInfo>` |
//! | [`watch`] | why the lease ended, or nil on timeout | `Option<LeaseEnd>` |
//!
//! In a pipeline, an error reply (`NOTHELD`, `NOTOWNED`, `CLAIMED`, `WRONGTYPE`) fails the whole `query`,
//! although every command in it ran; the error lists the failed commands by index
//! ([`redis::RedisError::into_server_errors`]). With
//! [`ignore_errors`](redis::Pipeline::ignore_errors), read each reply as
//! `redis::RedisResult<T>` instead, and turn an error into this crate's with
//! [`Error::from_redis`](crate::Error::from_redis), which maps `NOTHELD`, `NOTOWNED` and
//! `CLAIMED`.
//!
//! ```no_run
//! use std::time::Duration;
//! use pylocks::cmd::{self, Lease};
//!
//! # fn demo(con: &mut redis::Connection, lease_id: &str) -> Result<(), Box<dyn std::error::Error>> {
//! // Confirm the lease, extending it, and read the task's input in the same round trip.
//! let (lease, input): (Lease, Option<String>) = redis::pipe()
//!     .add_command(cmd::confirm("person:42", lease_id).extend(Duration::from_secs(30)).to_cmd()?)
//!     .get("person:42:input")
//!     .query(con)?;
//! assert_eq!(lease.id, lease_id);
//! # let _ = input; Ok(()) }
//! ```
//!
//! Every command names one key, the lock's, as its first argument, so cluster pipelines route
//! it; neither BLOCK nor WATCH waits inside `MULTI` (there, ACQUIRE … BLOCK does not queue and
//! WATCH answers nil while the lease holds).

use std::time::Duration;

use pylock_core::reply::{Frame, InfoReply, LeaseReply};
use pylock_core::watch::Reason;
use redis::{Cmd, FromRedisValue, ParsingError, Value};

use crate::{wire, Error};

/// `PYLOCK.ACQUIRE key ttl-ms LEASE lease-id [BLOCK timeout-ms]`: takes the lock at `key`
/// for a lease of `ttl`.
///
/// The lease id is made here, a random UUID (version 4, lowercase, hyphenated) as the server
/// would make it, and always sent with `LEASE`; [`Acquire::lease`] names one of your own
/// instead. Because the client, not the server, names the lease, the same builder sent again
/// after a lost reply (a timeout, a broken connection) asks for the same lease: if the first
/// attempt was granted, the second is granted again with the same fencing token and its TTL
/// reset, instead of finding the lock held by a lease nobody knows.
///
/// ```
/// use std::time::Duration;
/// let take = pylocks::cmd::acquire("job:7", Duration::from_secs(30))
///     .lease("worker-3:job-7")
///     .block(Some(Duration::from_secs(5)));
/// let cmd = take.to_cmd()?;
/// assert_eq!(
///     cmd.args_iter().count(),
///     7, // name, key, ttl, LEASE id, BLOCK ms
/// );
/// # Ok::<(), pylocks::Error>(())
/// ```
pub fn acquire(key: impl Into<String>, ttl: Duration) -> Acquire {
    Acquire {
        key: key.into(),
        ttl,
        lease_id: uuid::Uuid::new_v4().to_string(),
        block_ms: None,
        limit: None,
    }
}

/// `PYLOCK.CONFIRM key lease-id [EXTEND ttl-ms] [CLAIM new-lease-id]`: checks that `lease_id`
/// still holds the lock at `key`; with [`Confirm::claim`], takes the lease over under a new id.
pub fn confirm(key: impl Into<String>, lease_id: impl Into<String>) -> Confirm {
    Confirm {
        key: key.into(),
        lease_id: lease_id.into(),
        extend: None,
        claim: None,
    }
}

/// `PYLOCK.RELEASE key lease-id`: releases the lock at `key` if, and only if, `lease_id`
/// holds it.
pub fn release(key: impl Into<String>, lease_id: impl Into<String>) -> Release {
    Release {
        key: key.into(),
        lease_id: lease_id.into(),
    }
}

/// `PYLOCK.INFO key`: who holds the lock at `key`, and how many wait for it.
pub fn info(key: impl Into<String>) -> Info {
    Info { key: key.into() }
}

/// `PYLOCK.WATCH key lease-id [TIMEOUT timeout-ms]`: waits until `lease_id` stops holding the
/// lock at `key`, and answers why ([`LeaseEnd`]); without [`Watch::timeout`] it waits
/// without limit.
///
/// The command blocks the connection it is sent on: give it a connection of its own, whose
/// read (sync) or response (async) timeout is longer than the wait. See
/// [`LockHandle::watch`](crate::LockHandle::watch).
///
/// ```
/// use std::time::Duration;
/// let cmd = pylocks::cmd::watch("job:7", "lease-1").timeout(Duration::from_secs(5)).to_cmd();
/// assert_eq!(cmd.args_iter().count(), 5); // name, key, lease, TIMEOUT ms
/// ```
pub fn watch(key: impl Into<String>, lease_id: impl Into<String>) -> Watch {
    Watch {
        key: key.into(),
        lease_id: lease_id.into(),
        timeout_ms: None,
    }
}

/// A `PYLOCK.ACQUIRE` to send; made by [`acquire`].
///
/// The builder can be turned into a command any number of times, and always names the same
/// lease: sending it again after a lost reply is safe (see [`acquire`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a builder sends nothing; turn it into a command with `to_cmd`"]
pub struct Acquire {
    key: String,
    ttl: Duration,
    lease_id: String,
    block_ms: Option<i64>,
    limit: Option<u32>,
}

impl Acquire {
    /// Names the lease `lease_id` instead of a fresh UUID (1 to 128 bytes; the server refuses
    /// others with `ERR invalid lease id`). If this lease already holds the lock, the server
    /// grants it again with the same fencing token and a TTL reset to this command's.
    ///
    /// A task that may run twice (a queue's redelivery) can name its lease after the task, so
    /// that both runs ask for the same lease.
    pub fn lease(mut self, lease_id: impl Into<String>) -> Self {
        self.lease_id = lease_id.into();
        self
    }

    /// Waits, when the lock is held, up to `timeout` for it (`None`: without limit), first
    /// come first served (`BLOCK`). The timeout is sent in whole milliseconds, at least 1, so
    /// that a zero timeout never becomes the protocol's "forever".
    ///
    /// The connection must not give up before the server does: see
    /// [`LockFactory::acquire_blocking`](crate::LockFactory::acquire_blocking).
    pub fn block(mut self, timeout: Option<Duration>) -> Self {
        self.block_ms = Some(block_ms(timeout));
        self
    }

    /// Makes the key a semaphore of up to `n` leases at once (`LIMIT n`, 1 to 100,000): the
    /// lease is granted while fewer than `n` hold the key, each with its own id, token and
    /// deadline. Every client of the key must send the same `n` while a lease holds it, or
    /// the server answers `LIMITMISMATCH` ([`Error::LimitMismatch`]). Without it, the key is
    /// a lock (n = 1).
    pub fn limit(mut self, n: u32) -> Self {
        self.limit = Some(n);
        self
    }

    /// The lock's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The TTL the lease is asked for.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The lease id the command names: known before it is sent.
    pub fn lease_id(&self) -> &str {
        &self.lease_id
    }

    /// The command.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTtl`] when the TTL is under 1 ms or over `i64::MAX` ms;
    /// [`Error::InvalidLimit`] for a limit outside `1..=100000`.
    pub fn to_cmd(&self) -> Result<Cmd, Error> {
        if let Some(limit) = self.limit {
            check_limit(limit)?;
        }
        let args = pylock_core::Acquire {
            ttl_ms: wire::ttl_ms(self.ttl)?,
            lease: Some(self.lease_id.as_bytes()),
            block_ms: self.block_ms,
            limit: self.limit,
        }
        .to_args();
        Ok(command(pylock_core::Acquire::NAME, &self.key, args))
    }
}

/// A `PYLOCK.CONFIRM` to send; made by [`confirm`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a builder sends nothing; turn it into a command with `to_cmd`"]
pub struct Confirm {
    key: String,
    lease_id: String,
    extend: Option<Duration>,
    claim: Option<String>,
}

impl Confirm {
    /// Also sets the lease's time left to `ttl` from now (`EXTEND`).
    pub fn extend(mut self, ttl: Duration) -> Self {
        self.extend = Some(ttl);
        self
    }

    /// Takes the lease over under `new_lease_id` (`CLAIM`): the lock passes to the new id with
    /// a new, greater fencing token, and is never free in between. The reply is the new lease.
    ///
    /// Sending the same claim again is safe: while `new_lease_id` holds the lock it claimed
    /// from `lease_id`, the server answers with the same lease and token. A claim of the same
    /// lease under any other id is refused with `CLAIMED`
    /// ([`Error::Claimed`]), and so is every later use of the old id,
    /// which is how a duplicate run of a task learns that another run has the lease.
    ///
    /// `new_lease_id` takes 1 to 128 bytes and must differ from the lease id; the server
    /// refuses others with `ERR invalid lease id`.
    /// [`LockHandle::claim`](crate::LockHandle::claim) makes a fresh UUID for it.
    pub fn claim(mut self, new_lease_id: impl Into<String>) -> Self {
        self.claim = Some(new_lease_id.into());
        self
    }

    /// The lock's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The lease that claims to hold the lock.
    pub fn lease_id(&self) -> &str {
        &self.lease_id
    }

    /// The id the lease is claimed under, with [`claim`](Self::claim).
    pub fn claim_id(&self) -> Option<&str> {
        self.claim.as_deref()
    }

    /// The command.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTtl`] when the `extend` TTL is under 1 ms or over `i64::MAX` ms.
    pub fn to_cmd(&self) -> Result<Cmd, Error> {
        let args = pylock_core::Confirm {
            lease: self.lease_id.as_bytes(),
            extend_ms: self.extend.map(wire::ttl_ms).transpose()?,
            claim: self.claim.as_deref().map(str::as_bytes),
        }
        .to_args();
        Ok(command(pylock_core::Confirm::NAME, &self.key, args))
    }
}

/// A `PYLOCK.RELEASE` to send; made by [`release`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a builder sends nothing; turn it into a command with `to_cmd`"]
pub struct Release {
    key: String,
    lease_id: String,
}

impl Release {
    /// The lock's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The lease that claims to hold the lock.
    pub fn lease_id(&self) -> &str {
        &self.lease_id
    }

    /// The command.
    pub fn to_cmd(&self) -> Cmd {
        let args = pylock_core::Release {
            lease: self.lease_id.as_bytes(),
        }
        .to_args();
        command(pylock_core::Release::NAME, &self.key, args)
    }
}

/// A `PYLOCK.INFO` to send; made by [`info`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a builder sends nothing; turn it into a command with `to_cmd`"]
pub struct Info {
    key: String,
}

impl Info {
    /// The lock's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The command. INFO takes nothing after the key.
    pub fn to_cmd(&self) -> Cmd {
        command(pylock_core::Info::NAME, &self.key, Vec::new())
    }
}

/// A `PYLOCK.WATCH` to send; made by [`watch`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a builder sends nothing; turn it into a command with `to_cmd`"]
pub struct Watch {
    key: String,
    lease_id: String,
    timeout_ms: Option<i64>,
}

impl Watch {
    /// Answers nil if the lease still holds after `timeout` (`TIMEOUT`). Sent in whole
    /// milliseconds, at least 1, so that a zero timeout never becomes the protocol's "forever".
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout_ms = Some(block_ms(Some(timeout)));
        self
    }

    /// The lock's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The lease watched.
    pub fn lease_id(&self) -> &str {
        &self.lease_id
    }

    /// The command.
    pub fn to_cmd(&self) -> Cmd {
        let args = pylock_core::Watch {
            lease: self.lease_id.as_bytes(),
            timeout_ms: self.timeout_ms,
        }
        .to_args();
        command(pylock_core::Watch::NAME, &self.key, args)
    }
}

/// Why a lease is not, or no longer, held: the reply of `PYLOCK.WATCH` (read it as
/// `Option<LeaseEnd>`, nil meaning the timeout passed with the lease still held).
///
/// The first three are answered at once, when the lease was already gone as WATCH was
/// called; the others end a wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LeaseEnd {
    /// Nobody held the lock when WATCH was called (`notheld`).
    NotHeld,
    /// Another lease held the lock when WATCH was called (`notowned`).
    NotOwned,
    /// The lease was claimed under another id (`claimed`), before or during the wait.
    Claimed,
    /// The lease released the lock (`released`).
    Released,
    /// Its deadline passed (`expired`).
    Expired,
    /// Another command removed or replaced the key: DEL, UNLINK, RENAME, MOVE, RESTORE, SET,
    /// an EXPIRE earlier than the deadline, eviction (`deleted`).
    Deleted,
    /// FLUSHDB, FLUSHALL or SWAPDB (`flushed`).
    Flushed,
    /// Redis Cluster moved the key's slot to another node (`moved`).
    Moved,
    /// The server became a replica (`demoted`, or the server's own `UNBLOCKED` error, which
    /// Redis and Valkey send every blocked client on a role change).
    Demoted,
}

impl LeaseEnd {
    /// The reply's text (`released`, `expired`, …).
    pub fn as_str(self) -> &'static str {
        self.reason().as_str()
    }

    fn reason(self) -> Reason {
        match self {
            LeaseEnd::NotHeld => Reason::NotHeld,
            LeaseEnd::NotOwned => Reason::NotOwned,
            LeaseEnd::Claimed => Reason::Claimed,
            LeaseEnd::Released => Reason::Released,
            LeaseEnd::Expired => Reason::Expired,
            LeaseEnd::Deleted => Reason::Deleted,
            LeaseEnd::Flushed => Reason::Flushed,
            LeaseEnd::Moved => Reason::Moved,
            LeaseEnd::Demoted => Reason::Demoted,
        }
    }

    /// Reads a reply's text; `None` for a text the protocol does not define.
    fn parse(text: &[u8]) -> Option<Self> {
        Some(match Reason::parse(text)? {
            Reason::NotHeld => LeaseEnd::NotHeld,
            Reason::NotOwned => LeaseEnd::NotOwned,
            Reason::Claimed => LeaseEnd::Claimed,
            Reason::Released => LeaseEnd::Released,
            Reason::Expired => LeaseEnd::Expired,
            Reason::Deleted => LeaseEnd::Deleted,
            Reason::Flushed => LeaseEnd::Flushed,
            Reason::Moved => LeaseEnd::Moved,
            Reason::Demoted => LeaseEnd::Demoted,
            // A reason of a newer core: not one this client can name.
            _ => return None,
        })
    }

    /// Reads a WATCH reply: nil, or a reason.
    pub(crate) fn from_value(value: &Value) -> Result<Option<Self>, String> {
        let text = match value {
            Value::Nil => return Ok(None),
            Value::BulkString(b) => b.as_slice(),
            Value::SimpleString(s) => s.as_bytes(),
            other => return Err(format!("not a watch reply: {other:?}")),
        };
        Self::parse(text)
            .map(Some)
            .ok_or_else(|| format!("unknown reason {:?}", String::from_utf8_lossy(text)))
    }
}

impl std::fmt::Display for LeaseEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromRedisValue for LeaseEnd {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        Self::from_value(&v)?.ok_or_else(|| {
            ParsingError::from("the lease still holds (nil): read the reply as Option<LeaseEnd>")
        })
    }
}

/// A lease as the server reported it: the reply to ACQUIRE (read `Option<Lease>`, nil meaning
/// the lock is held by another lease) and to CONFIRM.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Lease {
    /// The lease id.
    pub id: String,
    /// The fencing token: greater than every token granted before for the key.
    pub token: i64,
    /// Time left on the lease when the server answered.
    pub ttl: Duration,
}

/// What `PYLOCK.INFO` reports for a held lock or semaphore; read `Option<LockInfo>`, nil
/// meaning no lease holds the key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockInfo {
    /// The holder; on a semaphore, the lease with the earliest deadline.
    pub lease: Lease,
    /// Clients waiting for the lock (`BLOCK`).
    pub waiters: u64,
    /// How many leases the key admits at once: 1 for a lock.
    pub limit: u32,
    /// Every holder, earliest deadline first (one for a lock).
    pub holders: Vec<Lease>,
}

/// Checks a semaphore limit against the protocol's `1..=100000`.
pub(crate) fn check_limit(limit: u32) -> Result<u32, Error> {
    if (1..=pylock_core::MAX_LIMIT).contains(&limit) {
        Ok(limit)
    } else {
        Err(Error::InvalidLimit { limit })
    }
}

/// Reads a semaphore's INFO reply: `limit <n> holders <count> waiters <int> leases [...]`.
fn sem_info(frame: &Frame) -> Result<Option<LockInfo>, String> {
    let Frame::Array(items) = frame else {
        return Ok(None);
    };
    let field = |i: usize, name: &str| match items.get(i) {
        Some(Frame::Bulk(b)) if b.as_slice() == name.as_bytes() => Ok(()),
        other => Err(format!("INFO field {i} is {other:?}, not {name}")),
    };
    if !matches!(items.first(), Some(Frame::Bulk(b)) if b.as_slice() == b"limit") {
        return Ok(None);
    }
    let int = |i: usize| match items.get(i) {
        Some(Frame::Int(n)) => Ok(*n),
        other => Err(format!("INFO value {i} is {other:?}, not an integer")),
    };
    field(0, "limit")?;
    field(2, "holders")?;
    field(4, "waiters")?;
    field(6, "leases")?;
    let limit = u32::try_from(int(1)?).map_err(|_| "limit out of range".to_string())?;
    let waiters = u64::try_from(int(5)?).map_err(|_| "negative waiter count".to_string())?;
    let Some(Frame::Array(leases)) = items.get(7) else {
        return Err("INFO leases is not an array".into());
    };
    let holders = leases
        .iter()
        .map(|l| {
            let reply = LeaseReply::from_frame(l).map_err(|e| e.to_string())?;
            Lease::from_reply(&reply)
        })
        .collect::<Result<Vec<_>, String>>()?;
    if usize::try_from(int(3)?).ok() != Some(holders.len()) {
        return Err("INFO holders count differs from its leases".into());
    }
    let Some(first) = holders.first().cloned() else {
        return Err("INFO on a semaphore with no holder (it answers nil then)".into());
    };
    Ok(Some(LockInfo {
        lease: first,
        waiters,
        limit,
        holders,
    }))
}

impl FromRedisValue for Lease {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        Self::from_value(&v).map_err(ParsingError::from)
    }
}

impl FromRedisValue for LockInfo {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let frame = frame(&v).ok_or_else(|| format!("not an info reply: {v:?}"))?;
        if let Some(info) = sem_info(&frame)? {
            return Ok(info);
        }
        let reply = InfoReply::from_frame(&frame).map_err(|e| e.to_string())?;
        let reply = reply.ok_or("the lock is free (nil): read the reply as Option<LockInfo>")?;
        let lease = Lease::from_reply(&reply.lease)?;
        Ok(LockInfo {
            holders: vec![lease.clone()],
            lease,
            waiters: u64::try_from(reply.waiters)
                .map_err(|_| format!("negative waiter count {}", reply.waiters))?,
            limit: 1,
        })
    }
}

impl Lease {
    /// Reads a lease reply; the error says what was wrong with it.
    pub(crate) fn from_value(value: &Value) -> Result<Self, String> {
        let frame = frame(value).ok_or_else(|| format!("not a lease reply: {value:?}"))?;
        let reply = LeaseReply::from_frame(&frame).map_err(|e| e.to_string())?;
        Self::from_reply(&reply)
    }

    fn from_reply(reply: &LeaseReply<'_>) -> Result<Self, String> {
        let id = std::str::from_utf8(reply.id).map_err(|_| "the lease id is not UTF-8")?;
        Ok(Lease {
            id: id.to_string(),
            token: reply.token,
            // -1 ("no deadline") cannot happen for a lease; treat anything negative as nothing
            // left.
            ttl: Duration::from_millis(u64::try_from(reply.ttl_ms).unwrap_or(0)),
        })
    }
}

/// `name key args…`.
fn command(name: &str, key: &str, args: Vec<Vec<u8>>) -> Cmd {
    let mut cmd = redis::cmd(name);
    cmd.arg(key);
    for a in args {
        cmd.arg(a);
    }
    cmd
}

/// The BLOCK argument for a wait of `timeout`: 0 waits without limit, so a zero (or sub-ms)
/// timeout becomes 1 ms rather than forever.
fn block_ms(timeout: Option<Duration>) -> i64 {
    match timeout {
        None => 0,
        Some(t) => i64::try_from(t.as_millis()).unwrap_or(i64::MAX).max(1),
    }
}

/// Converts a driver value into the core's [`Frame`]; `None` for types PYLOCK never sends.
fn frame(value: &Value) -> Option<Frame> {
    Some(match value {
        Value::Nil => Frame::Nil,
        Value::Int(i) => Frame::Int(*i),
        Value::BulkString(b) => Frame::Bulk(b.clone()),
        Value::SimpleString(s) => Frame::Bulk(s.clone().into_bytes()),
        Value::Okay => Frame::Bulk(b"OK".to_vec()),
        Value::Array(items) => Frame::Array(items.iter().map(frame).collect::<Option<_>>()?),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packed(cmd: &Cmd) -> Vec<String> {
        cmd.args_iter()
            .map(|a| match a {
                redis::Arg::Simple(b) => String::from_utf8(b.to_vec()).unwrap(),
                other => panic!("unexpected argument kind: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn commands_put_the_key_first() {
        let ms = Duration::from_millis;
        let cases = [
            (
                acquire("k", ms(1500)).lease("l").to_cmd(),
                "pylock.acquire k 1500 LEASE l",
            ),
            (
                acquire("k", ms(10)).block(None).lease("l").to_cmd(),
                "pylock.acquire k 10 LEASE l BLOCK 0",
            ),
            (
                acquire("k", ms(10)).lease("l").block(Some(ms(0))).to_cmd(),
                "pylock.acquire k 10 LEASE l BLOCK 1",
            ),
            (confirm("k", "l").to_cmd(), "pylock.confirm k l"),
            (
                confirm("k", "l").extend(ms(7)).to_cmd(),
                "pylock.confirm k l EXTEND 7",
            ),
            (
                confirm("k", "l").claim("m").to_cmd(),
                "pylock.confirm k l CLAIM m",
            ),
            (
                confirm("k", "l").claim("m").extend(ms(7)).to_cmd(),
                "pylock.confirm k l EXTEND 7 CLAIM m",
            ),
            (Ok(release("k", "l").to_cmd()), "pylock.release k l"),
            (Ok(info("k").to_cmd()), "pylock.info k"),
            (Ok(watch("k", "l").to_cmd()), "pylock.watch k l"),
            (
                Ok(watch("k", "l").timeout(ms(250)).to_cmd()),
                "pylock.watch k l TIMEOUT 250",
            ),
            (
                Ok(watch("k", "l").timeout(Duration::ZERO).to_cmd()),
                "pylock.watch k l TIMEOUT 1",
            ),
        ];
        for (i, (cmd, want)) in cases.iter().enumerate() {
            let cmd = cmd.as_ref().unwrap_or_else(|e| panic!("case {i}: {e}"));
            assert_eq!(packed(cmd).join(" "), *want, "case {i}");
        }
    }

    #[test]
    fn the_lease_id_is_a_fresh_lowercase_uuid_v4_sent_every_time() {
        let take = acquire("k", Duration::from_secs(1));
        let id = take.lease_id().to_string();
        let parsed = uuid::Uuid::parse_str(&id).unwrap();
        assert_eq!(parsed.get_version(), Some(uuid::Version::Random));
        assert_eq!(id, parsed.hyphenated().to_string(), "lowercase, hyphenated");
        assert_eq!(id.len(), pylock_core::UUID_LEN);
        let want = format!("pylock.acquire k 1000 LEASE {id}");
        assert_eq!(packed(&take.to_cmd().unwrap()).join(" "), want);
        assert_eq!(
            packed(&take.to_cmd().unwrap()).join(" "),
            want,
            "the same lease again"
        );
        assert_ne!(acquire("k", Duration::from_secs(1)).lease_id(), id);
    }

    #[test]
    fn a_ttl_out_of_range_is_refused_before_sending() {
        let bad = [Duration::ZERO, Duration::from_micros(999), Duration::MAX];
        for ttl in bad {
            assert!(matches!(
                acquire("k", ttl).to_cmd(),
                Err(Error::InvalidTtl { .. })
            ));
            assert!(matches!(
                confirm("k", "l").extend(ttl).to_cmd(),
                Err(Error::InvalidTtl { .. })
            ));
        }
    }

    #[test]
    fn block_argument() {
        assert_eq!(block_ms(None), 0);
        assert_eq!(block_ms(Some(Duration::ZERO)), 1);
        assert_eq!(block_ms(Some(Duration::from_micros(300))), 1);
        assert_eq!(block_ms(Some(Duration::from_millis(1500))), 1500);
        assert_eq!(block_ms(Some(Duration::MAX)), i64::MAX);
    }

    #[test]
    fn replies_parse() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let lease = Value::Array(vec![bulk("id"), Value::Int(7), Value::Int(1500)]);
        assert_eq!(
            Lease::from_redis_value(lease.clone()).unwrap(),
            Lease {
                id: "id".into(),
                token: 7,
                ttl: Duration::from_millis(1500)
            }
        );
        assert_eq!(Option::<Lease>::from_redis_value(Value::Nil).unwrap(), None);
        assert!(Lease::from_redis_value(Value::Int(1)).is_err());

        let info = Value::Array(vec![
            bulk("lease"),
            bulk("id"),
            bulk("token"),
            Value::Int(7),
            bulk("ttl"),
            Value::Int(1500),
            bulk("waiters"),
            Value::Int(2),
        ]);
        let got = Option::<LockInfo>::from_redis_value(info).unwrap().unwrap();
        assert_eq!(got.lease.token, 7);
        assert_eq!(got.waiters, 2);
        assert_eq!(
            Option::<LockInfo>::from_redis_value(Value::Nil).unwrap(),
            None
        );
        assert!(LockInfo::from_redis_value(Value::Nil).is_err());
        assert!(LockInfo::from_redis_value(lease).is_err());
    }

    #[test]
    fn every_watch_reason_reads_back() {
        for reason in Reason::ALL {
            let end = LeaseEnd::parse(reason.as_str().as_bytes()).expect("a reason we name");
            assert_eq!(end.reason(), reason);
            let read = Option::<LeaseEnd>::from_redis_value(Value::BulkString(
                reason.as_str().as_bytes().to_vec(),
            ));
            assert_eq!(read.unwrap(), Some(end));
            assert_eq!(end.to_string(), reason.as_str());
        }
        assert_eq!(
            Option::<LeaseEnd>::from_redis_value(Value::Nil).unwrap(),
            None
        );
        assert!(LeaseEnd::from_redis_value(Value::Nil).is_err());
        assert!(LeaseEnd::from_value(&Value::BulkString(b"gone".to_vec())).is_err());
        assert!(LeaseEnd::from_value(&Value::Int(1)).is_err());
    }
}
