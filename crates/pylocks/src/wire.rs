//! Where the client meets the wire: each command's request and the reading of its reply.
//!
//! The arguments after the key come from `pylock_core`'s command types, and replies are read
//! with its reply parsers, so the client and the module share one definition of the format.
//! Transport is the only thing that differs between the sync and async APIs: [`run`] and
//! [`run_async`] send a command, everything else here is shared.
//!
//! Every command sends the lock's key as argv\[1] and touches no other key, so cluster
//! connections route it to the key's node.

use std::time::Duration;

use pylock_core::reply::{Frame, LeaseReply};
use pylock_core::{Acquire, Confirm, Release};
use redis::{Cmd, RedisError, Value};

use crate::Error;

/// Sends `cmd` on a sync connection; a server error reply becomes `Err`.
pub(crate) fn run<C: redis::ConnectionLike + ?Sized>(
    con: &mut C,
    cmd: &Cmd,
) -> Result<Value, RedisError> {
    con.req_command(cmd)?.extract_error()
}

/// Sends `cmd` on an async connection; a server error reply becomes `Err`.
#[cfg(feature = "aio")]
pub(crate) async fn run_async<C: redis::aio::ConnectionLike + ?Sized>(
    con: &mut C,
    cmd: &Cmd,
) -> Result<Value, RedisError> {
    con.req_packed_command(cmd).await?.extract_error()
}

/// A lease as the server reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Lease {
    pub(crate) id: String,
    pub(crate) token: i64,
    pub(crate) ttl_left: Duration,
}

/// Converts a TTL to the protocol's milliseconds.
pub(crate) fn ttl_ms(ttl: Duration) -> Result<i64, Error> {
    match i64::try_from(ttl.as_millis()) {
        Ok(ms) if ms >= 1 => Ok(ms),
        _ => Err(Error::InvalidTtl { ttl }),
    }
}

fn cmd_with(name: &str, key: &str, args: Vec<Vec<u8>>) -> Cmd {
    let mut cmd = redis::cmd(name);
    cmd.arg(key);
    for a in args {
        cmd.arg(a);
    }
    cmd
}

/// `PYLOCK.ACQUIRE key ttl-ms [BLOCK timeout-ms]`.
///
/// With `block_ms`, the server queues the request while the lock is held (a connection's read
/// or response timeout must then exceed the wait).
pub(crate) fn acquire_cmd(key: &str, ttl_ms: i64, block_ms: Option<i64>) -> Cmd {
    let args = Acquire {
        ttl_ms,
        lease: None,
        block_ms,
    }
    .to_args();
    cmd_with("PYLOCK.ACQUIRE", key, args)
}

/// Reads an ACQUIRE reply: a lease, or [`Error::AlreadyHeld`] for nil.
pub(crate) fn acquire_reply(key: &str, reply: Result<Value, RedisError>) -> Result<Lease, Error> {
    match reply.map_err(|e| Error::from_redis(key, e))? {
        Value::Nil => Err(Error::AlreadyHeld {
            key: key.to_string(),
        }),
        value => lease(Acquire::NAME, &value),
    }
}

/// `PYLOCK.CONFIRM key lease-id [EXTEND ttl-ms]`.
pub(crate) fn confirm_cmd(key: &str, lease_id: &str, extend_ms: Option<i64>) -> Cmd {
    let args = Confirm {
        lease: lease_id.as_bytes(),
        extend_ms,
    }
    .to_args();
    cmd_with("PYLOCK.CONFIRM", key, args)
}

/// Reads a CONFIRM reply: the lease, or [`Error::NotHeld`] / [`Error::NotOwned`].
pub(crate) fn confirm_reply(key: &str, reply: Result<Value, RedisError>) -> Result<Lease, Error> {
    let value = reply.map_err(|e| Error::from_redis(key, e))?;
    lease(Confirm::NAME, &value)
}

/// `PYLOCK.RELEASE key lease-id`.
pub(crate) fn release_cmd(key: &str, lease_id: &str) -> Cmd {
    let args = Release {
        lease: lease_id.as_bytes(),
    }
    .to_args();
    cmd_with("PYLOCK.RELEASE", key, args)
}

/// Reads a RELEASE reply: `1`, or [`Error::NotHeld`] / [`Error::NotOwned`].
pub(crate) fn release_reply(key: &str, reply: Result<Value, RedisError>) -> Result<(), Error> {
    match reply.map_err(|e| Error::from_redis(key, e))? {
        Value::Int(1) => Ok(()),
        other => Err(Error::UnexpectedReply {
            command: Release::NAME,
            detail: format!("expected integer 1, got {other:?}"),
        }),
    }
}

/// `WAIT numreplicas timeout-ms`. It names no key: on a cluster connection the driver sends it
/// to every primary and keeps the smallest count, which is stricter than needed, never looser.
pub(crate) fn wait_cmd(replicas: u32, timeout: Duration) -> Cmd {
    let mut cmd = redis::cmd("WAIT");
    // WAIT's 0 means "forever"; a sub-millisecond timeout is rounded up so it never becomes one.
    let ms = u64::try_from(timeout.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    cmd.arg(replicas).arg(ms);
    cmd
}

/// Reads a WAIT reply: the number of replicas that acknowledged.
pub(crate) fn wait_reply(key: &str, reply: Result<Value, RedisError>) -> Result<u32, Error> {
    match reply.map_err(|e| Error::from_redis(key, e))? {
        Value::Int(n) => Ok(u32::try_from(n).unwrap_or(if n < 0 { 0 } else { u32::MAX })),
        other => Err(Error::UnexpectedReply {
            command: "wait",
            detail: format!("expected an integer, got {other:?}"),
        }),
    }
}

fn lease(command: &'static str, value: &Value) -> Result<Lease, Error> {
    let shape = |detail: String| Error::UnexpectedReply { command, detail };
    let frame = frame(value).ok_or_else(|| shape(format!("{value:?}")))?;
    let reply = LeaseReply::from_frame(&frame).map_err(|e| shape(e.to_string()))?;
    let id = std::str::from_utf8(reply.id)
        .map_err(|_| shape("the lease id is not UTF-8".to_string()))?;
    Ok(Lease {
        id: id.to_string(),
        token: reply.token,
        // -1 ("no deadline") cannot happen for a lease; treat anything negative as nothing left.
        ttl_left: Duration::from_millis(u64::try_from(reply.ttl_ms).unwrap_or(0)),
    })
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

    fn packed(cmd: &Cmd) -> Vec<Vec<u8>> {
        cmd.args_iter()
            .map(|a| match a {
                redis::Arg::Simple(b) => b.to_vec(),
                other => panic!("unexpected argument kind: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn commands_put_the_key_first() {
        let cases = [
            (
                acquire_cmd("k", 1500, None),
                vec!["PYLOCK.ACQUIRE", "k", "1500"],
            ),
            (
                acquire_cmd("k", 10, Some(0)),
                vec!["PYLOCK.ACQUIRE", "k", "10", "BLOCK", "0"],
            ),
            (
                confirm_cmd("k", "l", None),
                vec!["PYLOCK.CONFIRM", "k", "l"],
            ),
            (
                confirm_cmd("k", "l", Some(7)),
                vec!["PYLOCK.CONFIRM", "k", "l", "EXTEND", "7"],
            ),
            (release_cmd("k", "l"), vec!["PYLOCK.RELEASE", "k", "l"]),
            (
                wait_cmd(1, Duration::from_micros(10)),
                vec!["WAIT", "1", "1"],
            ),
        ];
        for (i, (cmd, want)) in cases.iter().enumerate() {
            let want: Vec<Vec<u8>> = want.iter().map(|s| s.as_bytes().to_vec()).collect();
            assert_eq!(packed(cmd), want, "case {i}");
        }
    }

    #[test]
    fn ttl_bounds() {
        assert!(matches!(
            ttl_ms(Duration::from_micros(999)),
            Err(Error::InvalidTtl { .. })
        ));
        assert_eq!(ttl_ms(Duration::from_millis(1)).ok(), Some(1));
        assert_eq!(ttl_ms(Duration::from_secs(60)).ok(), Some(60_000));
        assert!(ttl_ms(Duration::MAX).is_err());
    }
}
