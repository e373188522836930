//! Error replies, each with the code and text the contract fixes.
//!
//! Every error the module can send is built here. The first word is the Redis error code; the
//! client reads it back through `redis::RedisError::code()`.

use std::fmt;

/// An error reply of a PYLOCK command.
///
/// Each variant maps to exactly one wire text (see [`CommandError::write`]). None of them is sent
/// after a key was changed: every command validates its whole input first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommandError {
    /// Too few (or, for fixed-arity commands, too many) arguments.
    WrongArity,
    /// A ttl, `EXTEND` or `BLOCK` value is not a base-10 signed 64-bit integer.
    NotInteger,
    /// A ttl or `EXTEND` value is `<= 0`, or `now + ttl` overflows.
    InvalidExpire,
    /// `BLOCK` is negative.
    NegativeTimeout,
    /// A lease id is empty or longer than [`crate::MAX_LEASE_ID_LEN`].
    InvalidLeaseId,
    /// An unknown option, a repeated option, or an option without its value.
    Syntax,
    /// The key holds a value that is not a lock.
    WrongType,
    /// Nobody holds the lock.
    NotHeld,
    /// Another lease holds the lock.
    NotOwned,
    /// The lock is held by a lease that was claimed from the given one (`CONFIRM … CLAIM`).
    Claimed,
    /// The fencing-token space is used up (a token would pass `i64::MAX`).
    TokensExhausted,
    /// A client called an internal command (`PYLOCK.RESTORE`), which only replication and AOF
    /// loading may run.
    InternalOnly,
    /// `PYLOCK.RESTORE` got a token that is not a positive integer.
    InvalidToken,
    /// This cluster node no longer serves the lock's slot (a waiter whose key moved away).
    TryAgain,
    /// A panic was caught at the module's boundary; the server log has the details.
    Internal,
    /// `LIMIT` is below 1 or above [`crate::MAX_LIMIT`].
    InvalidLimit,
    /// The key admits another number of leases than the `LIMIT` asked for (or 1 without
    /// `LIMIT`): the key's n.
    LimitMismatch(u32),
}

/// The error code (first word) of [`CommandError::NotHeld`].
pub const NOTHELD: &str = "NOTHELD";
/// The error code (first word) of [`CommandError::NotOwned`].
pub const NOTOWNED: &str = "NOTOWNED";
/// The error code (first word) of [`CommandError::Claimed`].
pub const CLAIMED: &str = "CLAIMED";
/// The error code (first word) of [`CommandError::LimitMismatch`].
pub const LIMITMISMATCH: &str = "LIMITMISMATCH";

impl CommandError {
    /// The error code: the first word of the reply.
    pub fn code(self) -> &'static str {
        match self {
            Self::WrongType => "WRONGTYPE",
            Self::NotHeld => NOTHELD,
            Self::NotOwned => NOTOWNED,
            Self::Claimed => CLAIMED,
            Self::TryAgain => "TRYAGAIN",
            Self::LimitMismatch(_) => LIMITMISMATCH,
            _ => "ERR",
        }
    }

    /// Writes the full error text (code included) for a command named `command`
    /// (lowercase, e.g. `pylock.acquire`).
    pub fn write(self, command: &str, out: &mut impl fmt::Write) -> fmt::Result {
        match self {
            Self::WrongArity => {
                write!(out, "ERR wrong number of arguments for '{command}' command")
            }
            Self::NotInteger => out.write_str("ERR value is not an integer or out of range"),
            Self::InvalidExpire => write!(out, "ERR invalid expire time in '{command}' command"),
            Self::NegativeTimeout => out.write_str("ERR timeout is negative"),
            Self::InvalidLeaseId => out.write_str("ERR invalid lease id"),
            Self::Syntax => out.write_str("ERR syntax error"),
            Self::WrongType => {
                out.write_str("WRONGTYPE Operation against a key holding the wrong kind of value")
            }
            Self::NotHeld => out.write_str("NOTHELD the lock is not held by any lease"),
            Self::NotOwned => out.write_str("NOTOWNED the lock is held by another lease"),
            Self::Claimed => out.write_str(
                "CLAIMED the lease was claimed under another id; this run must not go on",
            ),
            Self::TokensExhausted => out.write_str("ERR fencing tokens exhausted"),
            Self::InternalOnly => write!(
                out,
                "ERR {command} is internal: only replication and AOF loading may call it"
            ),
            Self::InvalidToken => out.write_str("ERR invalid fencing token"),
            Self::TryAgain => out.write_str("TRYAGAIN this node no longer serves the lock's slot"),
            Self::Internal => out.write_str("ERR pylock internal error, see the server log"),
            Self::InvalidLimit => out.write_str("ERR invalid limit"),
            Self::LimitMismatch(n) => write!(
                out,
                "LIMITMISMATCH the key admits {n} lease{} at once",
                if n == 1 { "" } else { "s" }
            ),
        }
    }

    /// The full error text for `command`, as an owned string.
    pub fn message(self, command: &str) -> String {
        let mut s = String::new();
        // Writing into a String cannot fail.
        let _ = self.write(command, &mut s);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_match_the_contract() {
        let cases = [
            (
                CommandError::WrongArity,
                "ERR wrong number of arguments for 'pylock.acquire' command",
            ),
            (
                CommandError::NotInteger,
                "ERR value is not an integer or out of range",
            ),
            (
                CommandError::InvalidExpire,
                "ERR invalid expire time in 'pylock.acquire' command",
            ),
            (CommandError::NegativeTimeout, "ERR timeout is negative"),
            (CommandError::InvalidLeaseId, "ERR invalid lease id"),
            (CommandError::Syntax, "ERR syntax error"),
            (
                CommandError::WrongType,
                "WRONGTYPE Operation against a key holding the wrong kind of value",
            ),
        ];
        for (err, text) in cases {
            assert_eq!(err.message("pylock.acquire"), text);
            assert!(text.starts_with(err.code()));
        }
        let module_texts = [
            (
                CommandError::TokensExhausted,
                "ERR fencing tokens exhausted",
            ),
            (
                CommandError::InternalOnly,
                "ERR pylock.restore is internal: only replication and AOF loading may call it",
            ),
            (CommandError::InvalidToken, "ERR invalid fencing token"),
            (
                CommandError::TryAgain,
                "TRYAGAIN this node no longer serves the lock's slot",
            ),
            (
                CommandError::Internal,
                "ERR pylock internal error, see the server log",
            ),
        ];
        for (err, text) in module_texts {
            assert_eq!(err.message("pylock.restore"), text);
            assert!(text.starts_with(err.code()));
        }
        assert!(CommandError::NotHeld.message("x").starts_with("NOTHELD "));
        assert!(CommandError::NotOwned.message("x").starts_with("NOTOWNED "));
        assert!(CommandError::Claimed.message("x").starts_with("CLAIMED "));
        assert_eq!(CommandError::InvalidLimit.message("x"), "ERR invalid limit");
        assert_eq!(
            CommandError::LimitMismatch(3).message("x"),
            "LIMITMISMATCH the key admits 3 leases at once"
        );
        assert_eq!(
            CommandError::LimitMismatch(1).message("x"),
            "LIMITMISMATCH the key admits 1 lease at once"
        );
        assert_eq!(CommandError::LimitMismatch(7).code(), "LIMITMISMATCH");
    }
}
