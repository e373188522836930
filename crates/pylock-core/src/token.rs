//! Fencing tokens.
//!
//! A token must exceed every token ever granted for its key, even after the key is gone
//! (released or expired), after a restart, and on a promoted replica. Per-key state cannot
//! give that, because a released key leaves nothing behind. So tokens come from one
//! server-wide sequence:
//!
//! ```text
//! next = max(high_water + 1, now_ms * 1000)
//! ```
//!
//! - `high_water` is the largest token this server has granted or seen: it is raised by every
//!   grant, by every lease loaded from RDB/AOF, and by every grant a replica receives.
//! - The clock floor (`now_ms * 1000`, so tokens read as microseconds since the epoch while
//!   fewer than 1000 grants happen per millisecond) covers what `high_water` cannot know:
//!   tokens of leases that were released before the last AOF rewrite, or grants a promoted
//!   replica never received. It assumes the wall clock at restart or promotion is later than it
//!   was at those grants, which is the same clock Redis already trusts for key expiry.
//!
//! A server-wide sequence is stronger than the contract asks (per key), and costs nothing.

/// The server-wide fencing-token sequence.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenClock {
    high_water: i64,
}

/// How many tokens one millisecond of wall clock makes room for.
pub const TOKENS_PER_MS: i64 = 1000;

/// How far ahead of the clock floor a token may plausibly be: 100 years of milliseconds. The
/// sequence runs ahead of `now_ms * 1000` only by sustaining more than 1000 grants per
/// millisecond, and a century of that lead is beyond any server; a token further ahead did not
/// come from a grant (a forged or corrupt `RESTORE` payload, a damaged file). Such tokens are
/// refused where data is loaded, so one payload cannot push the high-water mark to `i64::MAX`
/// and end every later grant with `fencing tokens exhausted`.
pub const PLAUSIBLE_LEAD_MS: i64 = 100 * 365 * 24 * 3600 * 1000;

/// The largest token that data loaded at wall-clock time `now_ms` may carry.
pub fn plausible_limit(now_ms: i64) -> i64 {
    now_ms
        .max(0)
        .saturating_add(PLAUSIBLE_LEAD_MS)
        .saturating_mul(TOKENS_PER_MS)
}

impl TokenClock {
    /// A sequence that has granted nothing yet.
    pub const fn new() -> Self {
        Self { high_water: 0 }
    }

    /// Takes the next token at wall-clock time `now_ms`.
    ///
    /// Returns `None` only when the token space (`i64::MAX`) is exhausted, which the clock floor
    /// reaches in the year 2262; the module answers that with an error instead of repeating a
    /// token.
    pub fn next(&mut self, now_ms: i64) -> Option<i64> {
        let after = self.high_water.checked_add(1)?;
        let floor = now_ms.saturating_mul(TOKENS_PER_MS);
        let token = after.max(floor).max(1);
        self.high_water = token;
        Some(token)
    }

    /// Records a token granted elsewhere (loaded from disk, or received from a primary).
    pub fn observe(&mut self, token: i64) {
        self.high_water = self.high_water.max(token);
    }

    /// The largest token granted or observed.
    pub fn high_water(&self) -> i64 {
        self.high_water
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn follows_the_clock_when_idle() {
        let mut c = TokenClock::new();
        assert_eq!(c.next(1_000), Some(1_000_000));
        assert_eq!(c.next(2_000), Some(2_000_000));
    }

    #[test]
    fn counts_within_one_millisecond() {
        let mut c = TokenClock::new();
        assert_eq!(c.next(5), Some(5000));
        assert_eq!(c.next(5), Some(5001));
        assert_eq!(c.next(5), Some(5002));
    }

    #[test]
    fn survives_a_clock_going_back() {
        let mut c = TokenClock::new();
        let a = c.next(10_000).unwrap();
        let b = c.next(1).unwrap();
        assert!(b > a);
    }

    #[test]
    fn observed_tokens_raise_the_floor() {
        let mut c = TokenClock::new();
        c.observe(9_000_000_000_000_000);
        assert_eq!(c.next(1), Some(9_000_000_000_000_001));
        c.observe(5);
        assert_eq!(c.high_water(), 9_000_000_000_000_001);
    }

    #[test]
    fn refuses_to_repeat_at_the_end() {
        let mut c = TokenClock::new();
        c.observe(i64::MAX);
        assert_eq!(c.next(0), None);
        assert_eq!(c.next(i64::MAX), None);
    }

    #[test]
    fn clock_at_zero_or_negative_still_gives_positive_tokens() {
        let mut c = TokenClock::new();
        assert_eq!(c.next(-5), Some(1));
        assert_eq!(c.next(0), Some(2));
    }

    proptest! {
        /// Whatever the clock does and whatever is observed, tokens strictly increase.
        #[test]
        fn strictly_increasing(steps in proptest::collection::vec(
            (any::<bool>(), -10_000_000_000_000i64..10_000_000_000_000i64), 1..200)) {
            let mut c = TokenClock::new();
            let mut last = 0;
            for (observe, v) in steps {
                if observe {
                    c.observe(v);
                    last = last.max(v);
                } else if let Some(t) = c.next(v) {
                    prop_assert!(t > last);
                    prop_assert!(t > 0);
                    last = t;
                }
            }
        }
    }
}
