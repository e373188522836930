//! Where the factory and the handle meet the wire: sending a command, and reading its reply
//! into this crate's [`Error`]s.
//!
//! The commands themselves are the public builders of [`crate::cmd`], whose arguments come
//! from `pylock_core`'s command types and whose replies are read with its reply parsers, so
//! the client and the module share one definition of the format. Transport is the only thing
//! that differs between the sync and async APIs: [`run`] and [`run_async`] send a command,
//! everything else here is shared.
//!
//! Every PYLOCK command sends the lock's key as argv\[1] and touches no other key, so cluster
//! connections route it to the key's node.

use std::time::Duration;

use pylock_core::{Acquire, Confirm, Release, Watch};
use redis::{Cmd, RedisError, Value};

use crate::cmd::{Lease, LeaseEnd};
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

/// Converts a TTL to the protocol's milliseconds.
pub(crate) fn ttl_ms(ttl: Duration) -> Result<i64, Error> {
    match i64::try_from(ttl.as_millis()) {
        Ok(ms) if ms >= 1 => Ok(ms),
        _ => Err(Error::InvalidTtl { ttl }),
    }
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

/// Reads a CONFIRM reply: the lease, or [`Error::NotHeld`] / [`Error::NotOwned`].
pub(crate) fn confirm_reply(key: &str, reply: Result<Value, RedisError>) -> Result<Lease, Error> {
    let value = reply.map_err(|e| Error::from_redis(key, e))?;
    lease(Confirm::NAME, &value)
}

/// The error code Redis and Valkey give a blocked client they end themselves: on a role change
/// (which WATCH's contract reads as `demoted`) and on `CLIENT UNBLOCK … ERROR`.
const UNBLOCKED: &str = "UNBLOCKED";

/// Reads a WATCH reply: nil (the timeout passed, or `CLIENT UNBLOCK`), or why the lease ended.
///
/// The server's own `UNBLOCKED` error on a role change stands for [`LeaseEnd::Demoted`], as
/// the contract says. The same code also answers `CLIENT UNBLOCK … ERROR`, which is not a role
/// change; its text (`… via CLIENT UNBLOCK`) tells it apart, and it reads as the plain
/// `CLIENT UNBLOCK` does: nil.
pub(crate) fn watch_reply(
    key: &str,
    reply: Result<Value, RedisError>,
) -> Result<Option<LeaseEnd>, Error> {
    let value = match reply {
        Ok(value) => value,
        Err(e) if e.code() == Some(UNBLOCKED) => {
            let by_client_unblock = e.detail().is_some_and(|d| d.contains("CLIENT UNBLOCK"));
            return Ok((!by_client_unblock).then_some(LeaseEnd::Demoted));
        }
        Err(e) => return Err(Error::from_redis(key, e)),
    };
    LeaseEnd::from_value(&value).map_err(|detail| Error::UnexpectedReply {
        command: Watch::NAME,
        detail,
    })
}

/// Reads a lease reply to `command`.
fn lease(command: &'static str, value: &Value) -> Result<Lease, Error> {
    Lease::from_value(value).map_err(|detail| Error::UnexpectedReply { command, detail })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_rounds_a_sub_millisecond_timeout_up() {
        let args: Vec<Vec<u8>> = wait_cmd(1, Duration::from_micros(10))
            .args_iter()
            .map(|a| match a {
                redis::Arg::Simple(b) => b.to_vec(),
                other => panic!("unexpected argument kind: {other:?}"),
            })
            .collect();
        assert_eq!(args, [b"WAIT".to_vec(), b"1".to_vec(), b"1".to_vec()]);
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
