//! The commands' arguments: parsing (module side) and writing (client side).
//!
//! Each `parse` takes the arguments that follow the key and validates all of them before
//! anything else happens, in this order (the contract does not fix one; this is Redis's habit):
//!
//! 1. arity;
//! 2. option names: unknown, repeated or missing a value is `ERR syntax error`;
//! 3. values, left to right as they stand on the command line: the first bad one is reported
//!    (the README promises this order; `crates/pylock-module/tests/malformed.rs` holds us to it).

use crate::error::CommandError;
use crate::int::parse_i64;
use crate::{MAX_LEASE_ID_LEN, MAX_LIMIT};

/// `PYLOCK.ACQUIRE key ttl-ms [LEASE lease-id] [BLOCK timeout-ms] [LIMIT n]`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acquire<'a> {
    /// Lifetime of the lease, in milliseconds (>= 1).
    pub ttl_ms: i64,
    /// The caller's own lease id; the server makes a UUID when absent.
    pub lease: Option<&'a [u8]>,
    /// How long to wait for a held lock, in milliseconds; 0 waits forever.
    pub block_ms: Option<i64>,
    /// How many leases the key admits at once (`1..=MAX_LIMIT`); absent means 1, a lock.
    pub limit: Option<u32>,
}

/// `PYLOCK.CONFIRM key lease-id [EXTEND ttl-ms] [CLAIM new-lease-id]`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Confirm<'a> {
    /// The lease that claims to hold the lock.
    pub lease: &'a [u8],
    /// New lifetime from now, in milliseconds (>= 1).
    pub extend_ms: Option<i64>,
    /// Take the lease over under this new id (1 to 128 bytes, never `lease` itself).
    pub claim: Option<&'a [u8]>,
}

/// `PYLOCK.WATCH key lease-id [TIMEOUT timeout-ms]`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watch<'a> {
    /// The lease to watch.
    pub lease: &'a [u8],
    /// How long to wait for the lease to end, in milliseconds; 0 or absent waits forever.
    pub timeout_ms: Option<i64>,
}

/// `PYLOCK.RELEASE key lease-id`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Release<'a> {
    /// The lease that claims to hold the lock.
    pub lease: &'a [u8],
}

/// `PYLOCK.INFO key`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Info;

impl<'a> Acquire<'a> {
    /// The command name, lowercase, as error texts spell it.
    pub const NAME: &'static str = "pylock.acquire";

    /// Parses the arguments after the key. `now_ms` is needed to reject a ttl whose deadline
    /// would overflow.
    ///
    /// # Errors
    ///
    /// `WrongArity`, `Syntax`, `NotInteger`, `InvalidExpire`, `InvalidLeaseId` or
    /// `NegativeTimeout`, per the contract's table.
    pub fn parse<A: AsRef<[u8]>>(args: &'a [A], now_ms: i64) -> Result<Self, CommandError> {
        let (ttl, options) = args.split_first().ok_or(CommandError::WrongArity)?;
        // (position, value) of each option, so values are checked in command-line order.
        let [lease, block, limit] =
            scan_options(options, [b"LEASE".as_slice(), b"BLOCK", b"LIMIT"])?;
        let ttl_ms = parse_ttl(ttl.as_ref(), now_ms)?;
        let mut req = Self {
            ttl_ms,
            lease: None,
            block_ms: None,
            limit: None,
        };
        let mut given = [(0, lease), (1, block), (2, limit)];
        given.sort_by_key(|(_, found)| found.map_or(usize::MAX, |(at, _)| at));
        for (which, found) in given {
            let Some((_, value)) = found else { continue };
            match which {
                0 => req.lease = Some(check_lease_id(value)?),
                1 => {
                    req.block_ms = Some(match parse_i64(value) {
                        None => return Err(CommandError::NotInteger),
                        Some(ms) if ms < 0 => return Err(CommandError::NegativeTimeout),
                        Some(ms) => ms,
                    })
                }
                _ => req.limit = Some(parse_limit(value)?),
            }
        }
        Ok(req)
    }

    /// How many leases the key admits: `LIMIT`, or 1.
    pub fn limit(&self) -> u32 {
        self.limit.unwrap_or(1)
    }

    /// The arguments after the key, as a client sends them.
    pub fn to_args(&self) -> Vec<Vec<u8>> {
        let mut out = vec![self.ttl_ms.to_string().into_bytes()];
        if let Some(lease) = self.lease {
            out.push(b"LEASE".to_vec());
            out.push(lease.to_vec());
        }
        if let Some(block) = self.block_ms {
            out.push(b"BLOCK".to_vec());
            out.push(block.to_string().into_bytes());
        }
        if let Some(limit) = self.limit {
            out.push(b"LIMIT".to_vec());
            out.push(limit.to_string().into_bytes());
        }
        out
    }
}

impl<'a> Confirm<'a> {
    /// The command name, lowercase, as error texts spell it.
    pub const NAME: &'static str = "pylock.confirm";

    /// Parses the arguments after the key.
    ///
    /// # Errors
    ///
    /// `WrongArity`, `Syntax`, `NotInteger`, `InvalidExpire` or `InvalidLeaseId`.
    pub fn parse<A: AsRef<[u8]>>(args: &'a [A], now_ms: i64) -> Result<Self, CommandError> {
        let (lease, options) = args.split_first().ok_or(CommandError::WrongArity)?;
        let [extend, claim] = scan_options(options, [b"EXTEND".as_slice(), b"CLAIM"])?;
        let lease = check_lease_id(lease.as_ref())?;
        let check_extend = || extend.map(|(_, v)| parse_ttl(v, now_ms)).transpose();
        let check_claim = || {
            claim
                .map(|(_, id)| match check_lease_id(id) {
                    Ok(id) if id == lease => Err(CommandError::InvalidLeaseId),
                    other => other,
                })
                .transpose()
        };
        let (extend_ms, claim) = match (extend, claim) {
            (Some((e, _)), Some((c, _))) if c < e => {
                let claim = check_claim()?;
                (check_extend()?, claim)
            }
            _ => {
                let extend_ms = check_extend()?;
                (extend_ms, check_claim()?)
            }
        };
        Ok(Self {
            lease,
            extend_ms,
            claim,
        })
    }

    /// The arguments after the key, as a client sends them.
    pub fn to_args(&self) -> Vec<Vec<u8>> {
        let mut out = vec![self.lease.to_vec()];
        if let Some(extend) = self.extend_ms {
            out.push(b"EXTEND".to_vec());
            out.push(extend.to_string().into_bytes());
        }
        if let Some(claim) = self.claim {
            out.push(b"CLAIM".to_vec());
            out.push(claim.to_vec());
        }
        out
    }
}

impl<'a> Watch<'a> {
    /// The command name, lowercase, as error texts spell it.
    pub const NAME: &'static str = "pylock.watch";

    /// Parses the arguments after the key.
    ///
    /// # Errors
    ///
    /// `WrongArity`, `Syntax`, `InvalidLeaseId`, `NotInteger` or `NegativeTimeout`.
    pub fn parse<A: AsRef<[u8]>>(args: &'a [A]) -> Result<Self, CommandError> {
        let (lease, options) = args.split_first().ok_or(CommandError::WrongArity)?;
        let [timeout] = scan_options(options, [b"TIMEOUT".as_slice()])?;
        let lease = check_lease_id(lease.as_ref())?;
        let timeout_ms = match timeout {
            None => None,
            Some((_, t)) => match parse_i64(t) {
                None => return Err(CommandError::NotInteger),
                Some(ms) if ms < 0 => return Err(CommandError::NegativeTimeout),
                Some(ms) => Some(ms),
            },
        };
        Ok(Self { lease, timeout_ms })
    }

    /// The arguments after the key, as a client sends them.
    pub fn to_args(&self) -> Vec<Vec<u8>> {
        let mut out = vec![self.lease.to_vec()];
        if let Some(timeout) = self.timeout_ms {
            out.push(b"TIMEOUT".to_vec());
            out.push(timeout.to_string().into_bytes());
        }
        out
    }
}

/// An option's value and its position among the options.
type Found<'a> = Option<(usize, &'a [u8])>;

/// Reads `NAME value` pairs, each of `names` (case-insensitive) at most once, and returns for
/// each name its value with the value's position among `options`, so that values can be
/// checked in command-line order.
///
/// # Errors
///
/// `Syntax` for an unknown or repeated name, or a name without its value.
fn scan_options<'a, A: AsRef<[u8]>, const N: usize>(
    options: &'a [A],
    names: [&[u8]; N],
) -> Result<[Found<'a>; N], CommandError> {
    let mut found = [None; N];
    let mut rest = options;
    while let Some((name, tail)) = rest.split_first() {
        let name = name.as_ref();
        let slot = names
            .iter()
            .position(|n| name.eq_ignore_ascii_case(n))
            .ok_or(CommandError::Syntax)?;
        let (value, tail) = tail.split_first().ok_or(CommandError::Syntax)?;
        let position = options.len() - tail.len();
        if found[slot].replace((position, value.as_ref())).is_some() {
            return Err(CommandError::Syntax);
        }
        rest = tail;
    }
    Ok(found)
}

impl<'a> Release<'a> {
    /// The command name, lowercase, as error texts spell it.
    pub const NAME: &'static str = "pylock.release";

    /// Parses the arguments after the key.
    ///
    /// # Errors
    ///
    /// `WrongArity` or `InvalidLeaseId`.
    pub fn parse<A: AsRef<[u8]>>(args: &'a [A]) -> Result<Self, CommandError> {
        match args {
            [lease] => Ok(Self {
                lease: check_lease_id(lease.as_ref())?,
            }),
            _ => Err(CommandError::WrongArity),
        }
    }

    /// The arguments after the key, as a client sends them.
    pub fn to_args(&self) -> Vec<Vec<u8>> {
        vec![self.lease.to_vec()]
    }
}

impl Info {
    /// The command name, lowercase, as error texts spell it.
    pub const NAME: &'static str = "pylock.info";

    /// Parses the arguments after the key: there must be none.
    ///
    /// # Errors
    ///
    /// `WrongArity`.
    pub fn parse<A: AsRef<[u8]>>(args: &[A]) -> Result<Self, CommandError> {
        if args.is_empty() {
            Ok(Self)
        } else {
            Err(CommandError::WrongArity)
        }
    }
}

/// A ttl must be an integer >= 1 such that `now + ttl` fits an i64 millisecond timestamp.
fn parse_ttl(value: &[u8], now_ms: i64) -> Result<i64, CommandError> {
    let ttl = parse_i64(value).ok_or(CommandError::NotInteger)?;
    if ttl <= 0 || now_ms.checked_add(ttl).is_none() {
        return Err(CommandError::InvalidExpire);
    }
    Ok(ttl)
}

/// A `LIMIT` must be an integer from 1 to [`MAX_LIMIT`].
fn parse_limit(value: &[u8]) -> Result<u32, CommandError> {
    let n = parse_i64(value).ok_or(CommandError::NotInteger)?;
    u32::try_from(n)
        .ok()
        .filter(|n| (1..=MAX_LIMIT).contains(n))
        .ok_or(CommandError::InvalidLimit)
}

fn check_lease_id(id: &[u8]) -> Result<&[u8], CommandError> {
    if id.is_empty() || id.len() > MAX_LEASE_ID_LEN {
        Err(CommandError::InvalidLeaseId)
    } else {
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use CommandError::*;

    const NOW: i64 = 1_800_000_000_000;

    /// (ttl, lease, block) as parsed.
    type AcquireCase<'a> = (
        Vec<&'a str>,
        Result<(i64, Option<&'a str>, Option<i64>), CommandError>,
    );
    /// (lease, extend, claim) as parsed.
    type ConfirmCase<'a> = (
        Vec<&'a str>,
        Result<(&'a str, Option<i64>, Option<&'a str>), CommandError>,
    );

    fn acquire(args: &[&str]) -> Result<Acquire<'static>, CommandError> {
        let owned: Vec<&'static [u8]> = args
            .iter()
            .map(|a| &*Box::leak(a.as_bytes().to_vec().into_boxed_slice()))
            .collect();
        Acquire::parse(Box::leak(owned.into_boxed_slice()), NOW)
    }

    fn confirm(args: &[&str]) -> Result<Confirm<'static>, CommandError> {
        let owned: Vec<&'static [u8]> = args
            .iter()
            .map(|a| &*Box::leak(a.as_bytes().to_vec().into_boxed_slice()))
            .collect();
        Confirm::parse(Box::leak(owned.into_boxed_slice()), NOW)
    }

    #[test]
    fn acquire_table() {
        let long = "x".repeat(129);
        let max = "y".repeat(128);
        let cases: Vec<AcquireCase> = vec![
            (vec![], Err(WrongArity)),
            (vec!["1000"], Ok((1000, None, None))),
            (vec!["1000", "LEASE", "abc"], Ok((1000, Some("abc"), None))),
            (
                vec!["1000", "lease", "abc", "block", "0"],
                Ok((1000, Some("abc"), Some(0))),
            ),
            (
                vec!["1000", "BLOCK", "5", "LEASE", "abc"],
                Ok((1000, Some("abc"), Some(5))),
            ),
            (vec!["1000", "LEASE", &max], Ok((1000, Some(&max), None))),
            (vec!["1", "LEASE"], Err(Syntax)),
            (vec!["1", "LEASE", "a", "LEASE", "b"], Err(Syntax)),
            (vec!["1", "BLOCK", "1", "BLOCK", "1"], Err(Syntax)),
            (vec!["1", "NX"], Err(Syntax)),
            (vec!["abc", "NX"], Err(Syntax)),
            (vec!["abc"], Err(NotInteger)),
            (vec!["1.5"], Err(NotInteger)),
            (vec!["0"], Err(InvalidExpire)),
            (vec!["-5"], Err(InvalidExpire)),
            (vec!["9223372036854775807"], Err(InvalidExpire)),
            (vec!["9223372036854775808"], Err(NotInteger)),
            (vec!["1000", "LEASE", ""], Err(InvalidLeaseId)),
            (vec!["1000", "LEASE", &long], Err(InvalidLeaseId)),
            (vec!["1000", "BLOCK", "x"], Err(NotInteger)),
            (vec!["1000", "BLOCK", "-1"], Err(NegativeTimeout)),
            (vec!["0", "BLOCK", "-1"], Err(InvalidExpire)),
            // Values are checked left to right as they stand.
            (vec!["1", "LEASE", "", "BLOCK", "-1"], Err(InvalidLeaseId)),
            (vec!["1", "BLOCK", "-1", "LEASE", ""], Err(NegativeTimeout)),
            (vec!["1", "BLOCK", "x", "LEASE", ""], Err(NotInteger)),
            (vec!["x", "BLOCK", "-1", "LEASE", ""], Err(NotInteger)),
            (vec!["1", "LIMIT"], Err(Syntax)),
            (vec!["1", "LIMIT", "2", "limit", "2"], Err(Syntax)),
        ];
        for (i, (args, want)) in cases.into_iter().enumerate() {
            let got = acquire(&args).map(|a| {
                (
                    a.ttl_ms,
                    a.lease.map(|l| std::str::from_utf8(l).unwrap()),
                    a.block_ms,
                )
            });
            assert_eq!(got, want, "case {i}: {args:?}");
        }
    }

    #[test]
    fn limit_table() {
        type LimitCase<'a> = (Vec<&'a str>, Result<Option<u32>, CommandError>);
        let cases: Vec<LimitCase> = vec![
            (vec!["1000"], Ok(None)),
            (vec!["1000", "LIMIT", "1"], Ok(Some(1))),
            (vec!["1000", "limit", "3"], Ok(Some(3))),
            (vec!["1000", "LIMIT", "100000"], Ok(Some(100_000))),
            (vec!["1000", "LIMIT", "100001"], Err(InvalidLimit)),
            (vec!["1000", "LIMIT", "0"], Err(InvalidLimit)),
            (vec!["1000", "LIMIT", "-1"], Err(InvalidLimit)),
            (
                vec!["1000", "LIMIT", "9223372036854775807"],
                Err(InvalidLimit),
            ),
            (vec!["1000", "LIMIT", "x"], Err(NotInteger)),
            (vec!["1000", "LIMIT", "1.0"], Err(NotInteger)),
            (
                vec!["1000", "LIMIT", "99999999999999999999"],
                Err(NotInteger),
            ),
            (
                vec!["1000", "LIMIT", "3", "LEASE", "a", "BLOCK", "5"],
                Ok(Some(3)),
            ),
            // Values are checked left to right as they stand.
            (vec!["1", "LIMIT", "0", "LEASE", ""], Err(InvalidLimit)),
            (vec!["1", "LEASE", "", "LIMIT", "0"], Err(InvalidLeaseId)),
            (vec!["1", "BLOCK", "-1", "LIMIT", "x"], Err(NegativeTimeout)),
            (vec!["1", "LIMIT", "x", "BLOCK", "-1"], Err(NotInteger)),
            (vec!["0", "LIMIT", "x"], Err(InvalidExpire)),
            (vec!["1", "LIMIT", "0", "NX"], Err(Syntax)),
        ];
        for (i, (args, want)) in cases.into_iter().enumerate() {
            assert_eq!(acquire(&args).map(|a| a.limit), want, "case {i}: {args:?}");
        }
        assert_eq!(acquire(&["5"]).unwrap().limit(), 1);
        assert_eq!(acquire(&["5", "LIMIT", "4"]).unwrap().limit(), 4);
    }

    #[test]
    fn largest_ttl_that_fits() {
        let fits = (i64::MAX - NOW).to_string();
        assert_eq!(acquire(&[&fits]).map(|a| a.ttl_ms), Ok(i64::MAX - NOW));
        let over = (i64::MAX - NOW + 1).to_string();
        assert_eq!(acquire(&[&over]), Err(InvalidExpire));
    }

    #[test]
    fn confirm_table() {
        let long = "x".repeat(129);
        let cases: Vec<ConfirmCase> = vec![
            (vec![], Err(WrongArity)),
            (vec!["l"], Ok(("l", None, None))),
            (vec!["l", "EXTEND", "10"], Ok(("l", Some(10), None))),
            (vec!["l", "extend", "10"], Ok(("l", Some(10), None))),
            (vec!["l", "EXTEND"], Err(Syntax)),
            (vec!["l", "EXTEND", "1", "EXTEND", "1"], Err(Syntax)),
            (vec!["l", "FOO", "1"], Err(Syntax)),
            (vec!["l", "EXTEND", "x"], Err(NotInteger)),
            (vec!["l", "EXTEND", "0"], Err(InvalidExpire)),
            (vec!["", "EXTEND", "10"], Err(InvalidLeaseId)),
            (vec![""], Err(InvalidLeaseId)),
            // The lease id stands before EXTEND's value, so it is checked first.
            (vec!["", "EXTEND", "0"], Err(InvalidLeaseId)),
            (vec!["", "EXTEND", "x"], Err(InvalidLeaseId)),
            // CLAIM, in any order with EXTEND, each once.
            (vec!["l", "CLAIM", "m"], Ok(("l", None, Some("m")))),
            (
                vec!["l", "claim", "m", "EXTEND", "5"],
                Ok(("l", Some(5), Some("m"))),
            ),
            (
                vec!["l", "EXTEND", "5", "CLAIM", "m"],
                Ok(("l", Some(5), Some("m"))),
            ),
            (vec!["l", "CLAIM"], Err(Syntax)),
            (vec!["l", "CLAIM", "m", "CLAIM", "n"], Err(Syntax)),
            (vec!["l", "CLAIM", "m", "EXTEND"], Err(Syntax)),
            (vec!["l", "CLAIM", ""], Err(InvalidLeaseId)),
            (vec!["l", "CLAIM", &long], Err(InvalidLeaseId)),
            (vec!["l", "CLAIM", "l"], Err(InvalidLeaseId)),
            // Values left to right: the first bad one is reported.
            (vec!["l", "CLAIM", "l", "EXTEND", "0"], Err(InvalidLeaseId)),
            (vec!["l", "EXTEND", "0", "CLAIM", "l"], Err(InvalidExpire)),
            (vec!["l", "EXTEND", "x", "CLAIM", ""], Err(NotInteger)),
            (vec!["", "CLAIM", ""], Err(InvalidLeaseId)),
        ];
        for (i, (args, want)) in cases.into_iter().enumerate() {
            let got = confirm(&args).map(|c| {
                (
                    std::str::from_utf8(c.lease).unwrap(),
                    c.extend_ms,
                    c.claim.map(|m| std::str::from_utf8(m).unwrap()),
                )
            });
            assert_eq!(got, want, "case {i}: {args:?}");
        }
    }

    #[test]
    fn watch_table() {
        type WatchCase<'a> = (Vec<&'a str>, Result<(&'a str, Option<i64>), CommandError>);
        let long = "x".repeat(129);
        let cases: Vec<WatchCase> = vec![
            (vec![], Err(WrongArity)),
            (vec!["l"], Ok(("l", None))),
            (vec!["l", "TIMEOUT", "0"], Ok(("l", Some(0)))),
            (vec!["l", "timeout", "250"], Ok(("l", Some(250)))),
            (vec!["l", "TIMEOUT"], Err(Syntax)),
            (vec!["l", "TIMEOUT", "1", "TIMEOUT", "1"], Err(Syntax)),
            (vec!["l", "BLOCK", "1"], Err(Syntax)),
            (vec!["l", "TIMEOUT", "x"], Err(NotInteger)),
            (vec!["l", "TIMEOUT", "1.5"], Err(NotInteger)),
            (vec!["l", "TIMEOUT", "-1"], Err(NegativeTimeout)),
            (vec![""], Err(InvalidLeaseId)),
            (vec![&long], Err(InvalidLeaseId)),
            (vec!["", "TIMEOUT", "-1"], Err(InvalidLeaseId)),
            (vec!["", "TIMEOUT"], Err(Syntax)),
        ];
        for (i, (args, want)) in cases.into_iter().enumerate() {
            let owned: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
            let got =
                Watch::parse(&owned).map(|w| (std::str::from_utf8(w.lease).unwrap(), w.timeout_ms));
            assert_eq!(got, want, "case {i}: {args:?}");
        }
    }

    #[test]
    fn release_and_info_arity() {
        let none: [&[u8]; 0] = [];
        assert_eq!(Release::parse(&none), Err(WrongArity));
        assert_eq!(Release::parse(&[b"a".as_slice(), b"b"]), Err(WrongArity));
        assert_eq!(Release::parse(&[b"".as_slice()]), Err(InvalidLeaseId));
        assert_eq!(
            Release::parse(&[b"a".as_slice()]),
            Ok(Release { lease: b"a" })
        );
        assert_eq!(Info::parse(&none), Ok(Info));
        assert_eq!(Info::parse(&[b"x".as_slice()]), Err(WrongArity));
    }

    fn lease_id() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 1..=MAX_LEASE_ID_LEN)
    }

    proptest! {
        #[test]
        fn acquire_round_trips(ttl in 1..=(i64::MAX - NOW), lease in proptest::option::of(lease_id()),
                               block in proptest::option::of(0..=i64::MAX),
                               limit in proptest::option::of(1..=MAX_LIMIT)) {
            let cmd = Acquire { ttl_ms: ttl, lease: lease.as_deref(), block_ms: block, limit };
            let args = cmd.to_args();
            prop_assert_eq!(Acquire::parse(&args, NOW), Ok(cmd));
        }

        #[test]
        fn confirm_round_trips(lease in lease_id(), extend in proptest::option::of(1..=(i64::MAX - NOW)),
                               claim in proptest::option::of(lease_id())) {
            prop_assume!(claim.as_deref() != Some(lease.as_slice()));
            let cmd = Confirm { lease: &lease, extend_ms: extend, claim: claim.as_deref() };
            let args = cmd.to_args();
            prop_assert_eq!(Confirm::parse(&args, NOW), Ok(cmd));
        }

        #[test]
        fn watch_round_trips(lease in lease_id(), timeout in proptest::option::of(0..=i64::MAX)) {
            let cmd = Watch { lease: &lease, timeout_ms: timeout };
            let args = cmd.to_args();
            prop_assert_eq!(Watch::parse(&args), Ok(cmd));
        }

        #[test]
        fn release_round_trips(lease in lease_id()) {
            let cmd = Release { lease: &lease };
            let args = cmd.to_args();
            prop_assert_eq!(Release::parse(&args), Ok(cmd));
        }

        /// Any argument list either parses or yields one of the contract's errors; never a panic.
        #[test]
        fn arbitrary_arguments_never_panic(args in proptest::collection::vec(
            prop_oneof![
                Just(b"LEASE".to_vec()), Just(b"BLOCK".to_vec()), Just(b"EXTEND".to_vec()),
                Just(b"CLAIM".to_vec()), Just(b"TIMEOUT".to_vec()), Just(b"LIMIT".to_vec()),
                Just(b"-1".to_vec()), Just(b"0".to_vec()), Just(b"9223372036854775807".to_vec()),
                proptest::collection::vec(any::<u8>(), 0..200),
            ], 0..8), now in any::<i64>()) {
            if let Ok(a) = Acquire::parse(&args, now) {
                prop_assert!(a.ttl_ms >= 1 && now.checked_add(a.ttl_ms).is_some());
                prop_assert!(a.block_ms.is_none_or(|b| b >= 0));
                prop_assert!(a.limit.is_none_or(|n| (1..=MAX_LIMIT).contains(&n)));
                prop_assert!(a.lease.is_none_or(|l| !l.is_empty() && l.len() <= MAX_LEASE_ID_LEN));
            }
            if let Ok(c) = Confirm::parse(&args, now) {
                prop_assert!(c.extend_ms.is_none_or(|e| e >= 1 && now.checked_add(e).is_some()));
                prop_assert!(c.claim.is_none_or(|m| m != c.lease && !m.is_empty() && m.len() <= MAX_LEASE_ID_LEN));
            }
            if let Ok(w) = Watch::parse(&args) {
                prop_assert!(w.timeout_ms.is_none_or(|t| t >= 0));
            }
            let _ = Release::parse(&args);
            let _ = Info::parse(&args);
        }
    }
}
