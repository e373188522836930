//! What a lock read back from an RDB file, an AOF preamble or a `DUMP` payload may hold.
//!
//! The module reads the values (its `rdb_load` callback, through Redis's I/O); the decision to
//! keep or refuse them is made here, without Redis. A refused lock makes the load fail: Redis
//! answers `RESTORE` with `ERR Bad data format` and creates no key, and stops loading a file.
//!
//! Two encodings are read:
//!
//! - **version 0** (the module before CLAIM): the fencing token as a signed integer, then the
//!   lease id as a string buffer. The lease's deadline was the key's expiry alone.
//! - **version 1** (the module before semaphores): the token, the lease's own deadline as a
//!   signed integer (Unix ms; [`NO_DEADLINE`] for none), the lease id, then the id it was
//!   claimed from as a string buffer (empty when it was not claimed).
//! - **version 2**, written now: one lease as in version 1 (the earliest deadline's), then n
//!   (`LIMIT`, 1 for a lock) and the number of further leases as unsigned integers, then each
//!   further lease as in version 1. A lock is the version 1 body followed by `1` and `0`.
//!   Every lease of a semaphore (n > 1) has a deadline, the ids are distinct, and there are
//!   at most n leases.
//!
//! A lock the module stores always has a token `> 0`, an id of `1..=MAX_LEASE_ID_LEN` bytes, a
//! deadline `>= 0` or none, and a claimed-from id that is empty or a valid id other than its
//! own, so anything else did not come from a grant.

use std::fmt;

use crate::token::plausible_limit;
use crate::{MAX_LEASE_ID_LEN, MAX_LIMIT};

/// The RDB encoding version this module writes. It reads this one and every earlier one; a
/// newer module that changes the encoding bumps it, and this one then refuses that data instead
/// of misreading it.
pub const ENCODING_VERSION: i32 = 2;

/// The encoding of the module before CLAIM: token and id only.
pub const LEGACY_VERSION: i32 = 0;

/// How version 1 writes "this lease has no deadline of its own".
pub const NO_DEADLINE: i64 = -1;

/// Why a loaded lock was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The data was written with an encoding this module does not know (a newer module).
    UnknownVersion(i32),
    /// The token is not positive; no grant makes such a token.
    BadToken(i64),
    /// The token is beyond the plausible range (`token::plausible_limit`); no grant made it.
    ImplausibleToken {
        /// The token read.
        token: i64,
        /// The largest plausible token at the time it was read.
        limit: i64,
    },
    /// The lease id is empty or longer than [`MAX_LEASE_ID_LEN`] bytes (its length is given).
    BadIdLength(usize),
    /// A deadline below 0 other than [`NO_DEADLINE`].
    BadDeadline(i64),
    /// The claimed-from id is longer than [`MAX_LEASE_ID_LEN`] bytes, or is the lease's own id.
    BadClaimedFrom(usize),
    /// Version 2: n is outside `1..=MAX_LIMIT`.
    BadLimit(i64),
    /// Version 2: more leases than n, or further leases for a lock.
    BadLeaseCount {
        /// n as stored.
        limit: i64,
        /// The number of leases after the first, as stored.
        more: i64,
    },
    /// Version 2: two leases of one semaphore with the same id.
    DuplicateId,
    /// Version 2: a lease of a semaphore without a deadline.
    MissingDeadline,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::UnknownVersion(v) => write!(
                f,
                "lock encoding version {v} is unknown to this module (it reads {LEGACY_VERSION} \
                 to {ENCODING_VERSION}); the data was written by a newer module"
            ),
            Refusal::BadToken(t) => write!(f, "fencing token {t} is not positive"),
            Refusal::ImplausibleToken { token, limit } => write!(
                f,
                "fencing token {token} is beyond the plausible range (at most {limit} now: \
                 the clock floor plus 100 years)"
            ),
            Refusal::BadIdLength(n) => {
                write!(f, "lease id of {n} bytes is outside 1..={MAX_LEASE_ID_LEN}")
            }
            Refusal::BadDeadline(d) => write!(f, "lease deadline {d} is negative"),
            Refusal::BadClaimedFrom(n) => write!(
                f,
                "claimed-from id of {n} bytes is too long or the lease's own id"
            ),
            Refusal::BadLimit(n) => write!(f, "limit {n} is outside 1..={MAX_LIMIT}"),
            Refusal::BadLeaseCount { limit, more } => write!(
                f,
                "{} leases stored for a key that admits {limit}",
                more.saturating_add(1)
            ),
            Refusal::DuplicateId => f.write_str("two leases of one key have the same id"),
            Refusal::MissingDeadline => f.write_str("a lease of a semaphore has no deadline"),
        }
    }
}

/// Whether data of encoding `encver` can be read at all. Checked before anything is read, since
/// the layout of an unknown version is unknown.
///
/// # Errors
///
/// [`Refusal::UnknownVersion`] for any version but [`LEGACY_VERSION`] to [`ENCODING_VERSION`].
pub fn check_version(encver: i32) -> Result<(), Refusal> {
    if (LEGACY_VERSION..=ENCODING_VERSION).contains(&encver) {
        Ok(())
    } else {
        Err(Refusal::UnknownVersion(encver))
    }
}

/// Whether a token read at wall-clock time `now_ms` (a lock's, the high-water mark, or one a
/// replication stream or AOF restores) is one the module could have granted.
///
/// # Errors
///
/// [`Refusal::BadToken`] when not positive, [`Refusal::ImplausibleToken`] when beyond
/// [`plausible_limit`].
pub fn check_token(token: i64, now_ms: i64) -> Result<(), Refusal> {
    if token <= 0 {
        return Err(Refusal::BadToken(token));
    }
    let limit = plausible_limit(now_ms);
    if token > limit {
        return Err(Refusal::ImplausibleToken { token, limit });
    }
    Ok(())
}

/// Whether a lock read as `token` and `id` with encoding `encver`, at wall-clock time `now_ms`,
/// is one the module could have stored.
///
/// # Errors
///
/// The first [`Refusal`] that applies: version, then token, then id length.
pub fn check(encver: i32, token: i64, id: &[u8], now_ms: i64) -> Result<(), Refusal> {
    check_version(encver)?;
    check_token(token, now_ms)?;
    if id.is_empty() || id.len() > MAX_LEASE_ID_LEN {
        return Err(Refusal::BadIdLength(id.len()));
    }
    Ok(())
}

/// A version 1 deadline as stored: `None` for [`NO_DEADLINE`].
///
/// # Errors
///
/// [`Refusal::BadDeadline`] for any other negative value.
pub fn check_deadline(raw: i64) -> Result<Option<i64>, Refusal> {
    match raw {
        NO_DEADLINE => Ok(None),
        d if d < 0 => Err(Refusal::BadDeadline(d)),
        d => Ok(Some(d)),
    }
}

/// A version 1 claimed-from id as stored for a lease `id`: `None` when empty.
///
/// # Errors
///
/// [`Refusal::BadClaimedFrom`] when longer than [`MAX_LEASE_ID_LEN`] or equal to `id`.
pub fn check_claimed_from<'a>(from: &'a [u8], id: &[u8]) -> Result<Option<&'a [u8]>, Refusal> {
    if from.is_empty() {
        return Ok(None);
    }
    if from.len() > MAX_LEASE_ID_LEN || from == id {
        return Err(Refusal::BadClaimedFrom(from.len()));
    }
    Ok(Some(from))
}

/// Version 2: n and the number of leases after the first, as stored. Returns n.
///
/// # Errors
///
/// [`Refusal::BadLimit`] for n outside `1..=MAX_LIMIT`; [`Refusal::BadLeaseCount`] when
/// `more` is negative or more than n - 1 further leases are stored.
pub fn check_limit(limit: i64, more: i64) -> Result<u32, Refusal> {
    let n = u32::try_from(limit)
        .ok()
        .filter(|n| (1..=MAX_LIMIT).contains(n))
        .ok_or(Refusal::BadLimit(limit))?;
    if more < 0 || more >= limit {
        return Err(Refusal::BadLeaseCount { limit, more });
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `(encoding version, token, id, decision)`, judged at [`NOW`].
    type Case<'a> = (i32, i64, &'a [u8], Result<(), Refusal>);

    /// 2026-12-02, in Unix ms.
    const NOW: i64 = 1_796_190_000_000;

    #[test]
    fn table() {
        let id36 = [b'a'; 36];
        let cases: &[Case] = &[
            (0, 1, b"x", Ok(())),
            (0, 1_800_000_000_000_000, &id36, Ok(())),
            (0, plausible_limit(NOW), &[b'x'; 128], Ok(())),
            (
                0,
                plausible_limit(NOW) + 1,
                b"x",
                Err(Refusal::ImplausibleToken {
                    token: plausible_limit(NOW) + 1,
                    limit: plausible_limit(NOW),
                }),
            ),
            (
                0,
                i64::MAX,
                b"x",
                Err(Refusal::ImplausibleToken {
                    token: i64::MAX,
                    limit: plausible_limit(NOW),
                }),
            ),
            (0, 0, b"x", Err(Refusal::BadToken(0))),
            (0, -1, b"x", Err(Refusal::BadToken(-1))),
            (0, i64::MIN, b"x", Err(Refusal::BadToken(i64::MIN))),
            (0, 5, b"", Err(Refusal::BadIdLength(0))),
            (0, 5, &[b'x'; 129], Err(Refusal::BadIdLength(129))),
            (1, 5, b"x", Ok(())),
            (2, 5, b"x", Ok(())),
            (3, 5, b"x", Err(Refusal::UnknownVersion(3))),
            (-1, 5, b"x", Err(Refusal::UnknownVersion(-1))),
            // The version is decided first, then the token, then the id.
            (7, 0, b"", Err(Refusal::UnknownVersion(7))),
            (0, 0, b"", Err(Refusal::BadToken(0))),
        ];
        for (i, (encver, token, id, want)) in cases.iter().enumerate() {
            assert_eq!(check(*encver, *token, id, NOW), *want, "case {i}");
        }
    }

    #[test]
    fn refusals_read_clearly() {
        assert_eq!(
            Refusal::UnknownVersion(3).to_string(),
            "lock encoding version 3 is unknown to this module (it reads 0 to 2); \
             the data was written by a newer module"
        );
        assert!(Refusal::ImplausibleToken { token: 9, limit: 8 }
            .to_string()
            .starts_with("fencing token 9 is beyond the plausible range"));
        assert_eq!(
            Refusal::BadIdLength(0).to_string(),
            "lease id of 0 bytes is outside 1..=128"
        );
    }

    proptest! {
        /// Accepted exactly when the version is known, the token positive and the id 1..=128
        /// bytes; and a refusal names the first rule broken.
        #[test]
        fn accepts_exactly_what_a_grant_could_store(
            encver in prop_oneof![Just(0), Just(1), Just(2), any::<i32>()],
            token in prop_oneof![any::<i64>(), -2i64..3, Just(i64::MAX), Just(i64::MIN)],
            id in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let got = check(encver, token, &id, NOW);
            let known = (LEGACY_VERSION..=ENCODING_VERSION).contains(&encver);
            let ok = known
                && token > 0
                && token <= plausible_limit(NOW)
                && (1..=128).contains(&id.len());
            prop_assert_eq!(got.is_ok(), ok);
            match got {
                Err(Refusal::UnknownVersion(v)) => prop_assert_eq!(v, encver),
                Err(Refusal::BadToken(t)) => {
                    prop_assert!(known);
                    prop_assert_eq!(t, token);
                }
                Err(Refusal::ImplausibleToken { token: t, limit }) => {
                    prop_assert!(known);
                    prop_assert_eq!(t, token);
                    prop_assert!(t > limit);
                }
                Err(Refusal::BadIdLength(n)) => {
                    prop_assert!(known && token > 0 && token <= plausible_limit(NOW));
                    prop_assert_eq!(n, id.len());
                }
                Ok(()) => {}
                Err(other) => prop_assert!(false, "unexpected {:?}", other),
            }
            prop_assert_eq!(check_version(encver).is_ok(), known);
        }
    }
}

#[cfg(test)]
mod version_1_tests {
    use super::*;

    #[test]
    fn deadlines_and_claimed_from() {
        assert_eq!(check_deadline(NO_DEADLINE), Ok(None));
        assert_eq!(check_deadline(0), Ok(Some(0)));
        assert_eq!(
            check_deadline(1_796_190_000_000),
            Ok(Some(1_796_190_000_000))
        );
        assert_eq!(check_deadline(-2), Err(Refusal::BadDeadline(-2)));
        assert_eq!(
            check_deadline(i64::MIN),
            Err(Refusal::BadDeadline(i64::MIN))
        );
        assert_eq!(check_claimed_from(b"", b"a"), Ok(None));
        assert_eq!(check_claimed_from(b"b", b"a"), Ok(Some(b"b".as_slice())));
        assert_eq!(
            check_claimed_from(b"a", b"a"),
            Err(Refusal::BadClaimedFrom(1))
        );
        assert_eq!(
            check_claimed_from(&[b'x'; 129], b"a"),
            Err(Refusal::BadClaimedFrom(129))
        );
        assert_eq!(
            check_claimed_from(&[b'x'; 128], b"a").map(|f| f.map(<[u8]>::len)),
            Ok(Some(128))
        );
    }
}

#[cfg(test)]
mod limit_tests {
    use crate::token::{plausible_limit, TokenClock, PLAUSIBLE_LEAD_MS, TOKENS_PER_MS};

    #[test]
    fn the_limit_leaves_the_clock_floor_a_century_and_the_token_space_room() {
        let now = 1_796_190_000_000;
        assert_eq!(
            plausible_limit(now),
            (now + PLAUSIBLE_LEAD_MS) * TOKENS_PER_MS
        );
        // A sequence observing the largest plausible token can still grant for ages.
        let mut clock = TokenClock::new();
        clock.observe(plausible_limit(now));
        assert_eq!(clock.next(now), Some(plausible_limit(now) + 1));
        assert!(i64::MAX / 2 > plausible_limit(now));
        // The clock floor itself is always plausible, and negative clocks saturate sanely.
        assert!(now * TOKENS_PER_MS < plausible_limit(now));
        assert!(plausible_limit(-5) > 0);
    }
}

#[cfg(test)]
mod version_2_tests {
    use super::*;

    #[test]
    fn limits_and_counts() {
        assert_eq!(check_limit(1, 0), Ok(1));
        assert_eq!(check_limit(3, 2), Ok(3));
        assert_eq!(check_limit(100_000, 99_999), Ok(100_000));
        assert_eq!(check_limit(0, 0), Err(Refusal::BadLimit(0)));
        assert_eq!(check_limit(-1, 0), Err(Refusal::BadLimit(-1)));
        assert_eq!(check_limit(100_001, 0), Err(Refusal::BadLimit(100_001)));
        assert_eq!(
            check_limit(1, 1),
            Err(Refusal::BadLeaseCount { limit: 1, more: 1 })
        );
        assert_eq!(
            check_limit(3, 3),
            Err(Refusal::BadLeaseCount { limit: 3, more: 3 })
        );
        assert_eq!(
            check_limit(3, -1),
            Err(Refusal::BadLeaseCount { limit: 3, more: -1 })
        );
        assert_eq!(
            Refusal::BadLeaseCount { limit: 3, more: 3 }.to_string(),
            "4 leases stored for a key that admits 3"
        );
    }
}
