//! The four PYLOCK commands as [`redis::Cmd`]s, and the types their replies parse into.
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
//! | [`confirm`] | a lease; `NOTHELD` / `NOTOWNED` errors | [`Lease`] |
//! | [`release`] | integer 1; `NOTHELD` / `NOTOWNED` errors | `i64` or `()` |
//! | [`info`] | nil when the lock is free, else the holder | `Option<LockInfo>` |
//!
//! In a pipeline, an error reply (`NOTHELD`, `NOTOWNED`, `WRONGTYPE`) fails the whole `query`,
//! although every command in it ran; the error lists the failed commands by index
//! ([`redis::RedisError::into_server_errors`]). With
//! [`ignore_errors`](redis::Pipeline::ignore_errors), read each reply as
//! `redis::RedisResult<T>` instead, and turn an error into this crate's with
//! [`Error::from_redis`](crate::Error::from_redis), which maps `NOTHELD` and `NOTOWNED`.
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
//! it; BLOCK does not wait inside `MULTI` (the server treats it as absent there).

use std::time::Duration;

use pylock_core::reply::{Frame, InfoReply, LeaseReply};
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
    }
}

/// `PYLOCK.CONFIRM key lease-id [EXTEND ttl-ms]`: checks that `lease_id` still holds the lock
/// at `key`.
pub fn confirm(key: impl Into<String>, lease_id: impl Into<String>) -> Confirm {
    Confirm {
        key: key.into(),
        lease_id: lease_id.into(),
        extend: None,
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
    /// [`Error::InvalidTtl`] when the TTL is under 1 ms or over `i64::MAX` ms.
    pub fn to_cmd(&self) -> Result<Cmd, Error> {
        let args = pylock_core::Acquire {
            ttl_ms: wire::ttl_ms(self.ttl)?,
            lease: Some(self.lease_id.as_bytes()),
            block_ms: self.block_ms,
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
}

impl Confirm {
    /// Also sets the lease's time left to `ttl` from now (`EXTEND`).
    pub fn extend(mut self, ttl: Duration) -> Self {
        self.extend = Some(ttl);
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

    /// The command.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTtl`] when the `extend` TTL is under 1 ms or over `i64::MAX` ms.
    pub fn to_cmd(&self) -> Result<Cmd, Error> {
        let args = pylock_core::Confirm {
            lease: self.lease_id.as_bytes(),
            extend_ms: self.extend.map(wire::ttl_ms).transpose()?,
            claim: None,
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

/// What `PYLOCK.INFO` reports for a held lock; read `Option<LockInfo>`, nil meaning the lock
/// is free.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockInfo {
    /// The holder.
    pub lease: Lease,
    /// Clients waiting for the lock (`BLOCK`).
    pub waiters: u64,
}

impl FromRedisValue for Lease {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        Self::from_value(&v).map_err(ParsingError::from)
    }
}

impl FromRedisValue for LockInfo {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let frame = frame(&v).ok_or_else(|| format!("not an info reply: {v:?}"))?;
        let reply = InfoReply::from_frame(&frame).map_err(|e| e.to_string())?;
        let reply = reply.ok_or("the lock is free (nil): read the reply as Option<LockInfo>")?;
        Ok(LockInfo {
            lease: Lease::from_reply(&reply.lease)?,
            waiters: u64::try_from(reply.waiters)
                .map_err(|_| format!("negative waiter count {}", reply.waiters))?,
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
            (Ok(release("k", "l").to_cmd()), "pylock.release k l"),
            (Ok(info("k").to_cmd()), "pylock.info k"),
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
}
