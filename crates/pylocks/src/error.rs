//! The one error type of the client.

use std::fmt;
use std::time::Duration;

use pylock_core::error::{CLAIMED, LIMITMISMATCH, NOTHELD, NOTOWNED};

use crate::cmd::LeaseEnd;

/// Everything that can go wrong when taking, checking or giving back a lock.
///
/// Server error codes are mapped in one place ([`Error::from_redis`]): `NOTHELD`, `NOTOWNED`,
/// `CLAIMED` and `LIMITMISMATCH` become [`Error::NotHeld`], [`Error::NotOwned`],
/// [`Error::Claimed`] and [`Error::LimitMismatch`] with the server's text kept; every other
/// server error and every transport failure stays a [`redis::RedisError`] in [`Error::Redis`],
/// whose `code()` remains readable.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Error {
    /// `PYLOCK.ACQUIRE` answered nil: another lease holds the lock.
    AlreadyHeld {
        /// The lock's key.
        key: String,
    },
    /// The server answered `NOTHELD`: nobody holds the lock (our lease expired or was released).
    NotHeld {
        /// The lock's key.
        key: String,
        /// The server's error text, code first (`NOTHELD …`).
        message: String,
    },
    /// The server answered `NOTOWNED`: another lease holds the lock now.
    NotOwned {
        /// The lock's key.
        key: String,
        /// The server's error text, code first (`NOTOWNED …`).
        message: String,
    },
    /// The server answered `CLAIMED`: the lease was claimed under another id
    /// ([`LockHandle::claim`](crate::LockHandle::claim)), so another run has it now. A
    /// duplicate run of a task gets this and must not go on.
    Claimed {
        /// The lock's key.
        key: String,
        /// The server's error text, code first (`CLAIMED …`).
        message: String,
    },
    /// `PYLOCK.WATCH` reported that the lease ended, and why: how the
    /// [`Keeper`](crate::Keeper) reports a loss that its watch saw first.
    LeaseEnded {
        /// The lock's key.
        key: String,
        /// Why the lease ended.
        reason: LeaseEnd,
    },
    /// The number of key parts differs from the factory's arity. Raised before any network call.
    Arity {
        /// The factory's arity.
        expected: usize,
        /// How many parts were given.
        got: usize,
    },
    /// `PYLOCK.ACQUIRE … LIMIT n` named another n than the key was created with
    /// (`LIMITMISMATCH`, whose text names the key's n); nothing changed. Every client of one
    /// key must use the same [`limit`](crate::LockFactoryBuilder::limit) while a lease holds it.
    LimitMismatch {
        /// The key.
        key: String,
        /// The server's error text, code first (`LIMITMISMATCH …`).
        message: String,
    },
    /// A semaphore limit outside `1..=100000`. Raised before any network call.
    InvalidLimit {
        /// The rejected limit.
        limit: u32,
    },
    /// A TTL is below one millisecond or does not fit the protocol's millisecond integers.
    /// Raised before any network call.
    InvalidTtl {
        /// The rejected duration.
        ttl: Duration,
    },
    /// The lease was granted, but fewer replicas than required acknowledged it within the
    /// timeout (`WAIT`). The client then released the lease.
    NotReplicated {
        /// The lock's key.
        key: String,
        /// Replicas required.
        required: u32,
        /// Replicas that acknowledged in time.
        acknowledged: u32,
        /// Whether the release that followed succeeded. When it did not (for example the
        /// connection broke), the lease ends at its TTL.
        released: bool,
    },
    /// The lease could not be confirmed or extended before it was due to expire, so it must be
    /// taken as lost. Raised by the [`Keeper`](crate::Keeper) when the server stays unreachable.
    Unconfirmed {
        /// The lock's key.
        key: String,
        /// The last failure seen while trying, if any (none when the attempts timed out).
        cause: Option<redis::RedisError>,
    },
    /// A reply did not have the shape the protocol gives it (for example a module of another
    /// version, or a proxy in between).
    UnexpectedReply {
        /// The command that was answered.
        command: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// Any other server error, or a transport failure.
    Redis(redis::RedisError),
}

impl Error {
    /// Maps a driver error for a command on `key`: `NOTHELD`, `NOTOWNED` and `CLAIMED` become
    /// their own variants with the server's text; anything else is kept as [`Error::Redis`].
    pub fn from_redis(key: &str, err: redis::RedisError) -> Self {
        let message = || match err.detail() {
            Some(detail) => format!("{} {detail}", err.code().unwrap_or_default()),
            None => err.code().unwrap_or_default().to_string(),
        };
        match err.code() {
            Some(NOTHELD) => Error::NotHeld {
                key: key.to_string(),
                message: message(),
            },
            Some(NOTOWNED) => Error::NotOwned {
                key: key.to_string(),
                message: message(),
            },
            Some(CLAIMED) => Error::Claimed {
                key: key.to_string(),
                message: message(),
            },
            Some(LIMITMISMATCH) => Error::LimitMismatch {
                key: key.to_string(),
                message: message(),
            },
            _ => Error::Redis(err),
        }
    }

    /// Whether this error means the lease is gone: [`Error::NotHeld`], [`Error::NotOwned`],
    /// [`Error::Claimed`], [`Error::LeaseEnded`] or [`Error::Unconfirmed`]. Work done under
    /// such a lease must not be trusted.
    pub fn is_lease_lost(&self) -> bool {
        matches!(
            self,
            Error::NotHeld { .. }
                | Error::NotOwned { .. }
                | Error::Claimed { .. }
                | Error::LeaseEnded { .. }
                | Error::Unconfirmed { .. }
        )
    }

    /// Why the lease ended, when this error says: the reason of [`Error::LeaseEnded`], and
    /// [`LeaseEnd::NotHeld`], [`LeaseEnd::NotOwned`] and [`LeaseEnd::Claimed`] for the server's
    /// error codes. `None` for every other error, [`Error::Unconfirmed`] included (the client
    /// could not learn what happened).
    pub fn lease_end(&self) -> Option<LeaseEnd> {
        match self {
            Error::NotHeld { .. } => Some(LeaseEnd::NotHeld),
            Error::NotOwned { .. } => Some(LeaseEnd::NotOwned),
            Error::Claimed { .. } => Some(LeaseEnd::Claimed),
            Error::LeaseEnded { reason, .. } => Some(*reason),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::AlreadyHeld { key } => write!(f, "lock {key:?} is already held"),
            Error::NotHeld { key, message } => {
                write!(f, "lock {key:?} is not held by this lease: {message}")
            }
            Error::NotOwned { key, message } => {
                write!(f, "lock {key:?} is held by another lease: {message}")
            }
            Error::Claimed { key, message } => {
                write!(f, "lease on lock {key:?} was claimed under another id: {message}")
            }
            Error::LeaseEnded { key, reason } => {
                write!(f, "lease on lock {key:?} ended: {reason}")
            }
            Error::Arity { expected, got } => {
                write!(f, "lock key needs {expected} part(s), got {got}")
            }
            Error::LimitMismatch { key, message } => {
                write!(f, "lock {key:?} was created with another limit: {message}")
            }
            Error::InvalidLimit { limit } => write!(
                f,
                "invalid semaphore limit {limit}: it must be from 1 to {}",
                pylock_core::MAX_LIMIT
            ),
            Error::InvalidTtl { ttl } => write!(
                f,
                "invalid lock ttl {ttl:?}: it must be at least 1 ms and fit in i64 milliseconds"
            ),
            Error::NotReplicated {
                key,
                required,
                acknowledged,
                released,
            } => write!(
                f,
                "lock {key:?} was acknowledged by {acknowledged} of {required} required replica(s); {}",
                if *released {
                    "the lease was released"
                } else {
                    "releasing it failed, so it ends at its ttl"
                }
            ),
            Error::Unconfirmed { key, cause } => {
                write!(
                    f,
                    "lease on lock {key:?} could not be extended before it was due to expire"
                )?;
                match cause {
                    Some(cause) => write!(f, ": {cause}"),
                    None => Ok(()),
                }
            }
            Error::UnexpectedReply { command, detail } => {
                write!(f, "unexpected reply to {command}: {detail}")
            }
            Error::Redis(err) => err.fmt(f),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Redis(err) => Some(err),
            Error::Unconfirmed {
                cause: Some(err), ..
            } => Some(err),
            _ => None,
        }
    }
}

impl From<redis::RedisError> for Error {
    /// Keeps the error as [`Error::Redis`]; use [`Error::from_redis`] to map lease codes.
    fn from(err: redis::RedisError) -> Self {
        Error::Redis(err)
    }
}
