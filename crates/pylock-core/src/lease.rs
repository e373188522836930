//! The lease rules, as pure functions.
//!
//! The caller (the module) reads what is stored at the key, passes it in with `now_ms`, and
//! carries out the [`Outcome`]. Expiry itself is left to Redis: a key that Redis has expired is
//! simply absent. A key that is present but whose deadline has passed by `now_ms` (Redis judges
//! expiry at a script's or transaction's start) counts as free here too, so every PYLOCK command
//! agrees with the deadline it reports.

use crate::command::{Acquire, Confirm, Release};
use crate::error::CommandError;
use crate::token::TokenClock;

/// What is stored at a lock's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseState<'a> {
    /// The lease id.
    pub id: &'a [u8],
    /// The fencing token of the grant.
    pub token: i64,
    /// Absolute deadline in Unix milliseconds, `None` if the key's TTL was removed (PERSIST).
    pub expires_at_ms: Option<i64>,
}

impl LeaseState<'_> {
    /// Whether the lease still holds the lock at `now_ms`.
    pub fn is_live(&self, now_ms: i64) -> bool {
        self.expires_at_ms.is_none_or(|at| at > now_ms)
    }

    /// Milliseconds left at `now_ms`; -1 for a lease without a deadline.
    pub fn ttl_ms(&self, now_ms: i64) -> i64 {
        self.expires_at_ms
            .map_or(-1, |at| at.saturating_sub(now_ms).max(0))
    }
}

/// What a command does to the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Store a new lease with this token and deadline (replacing any dead one).
    Granted {
        /// The new fencing token.
        token: i64,
        /// Absolute deadline in Unix milliseconds.
        deadline_ms: i64,
    },
    /// The holder asked again (ACQUIRE with its own LEASE, or CONFIRM EXTEND): move the deadline.
    Renewed {
        /// Absolute deadline in Unix milliseconds.
        deadline_ms: i64,
    },
    /// The holder is confirmed; nothing changes.
    Confirmed,
    /// Someone else holds the lock; nothing changes (ACQUIRE answers nil).
    Contended,
    /// Delete the key.
    Released,
}

/// Where grants take their fencing tokens from: a [`TokenClock`] here, the server-wide sequence
/// in the module.
pub trait Tokens {
    /// The next token at `now_ms`, or `None` once the token space is exhausted.
    fn next(&mut self, now_ms: i64) -> Option<i64>;
}

impl Tokens for TokenClock {
    fn next(&mut self, now_ms: i64) -> Option<i64> {
        TokenClock::next(self, now_ms)
    }
}

/// Why a grant could not be made although the lock is free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokensExhausted;

/// ACQUIRE: grant, renew for the same LEASE, or report contention.
///
/// # Errors
///
/// [`TokensExhausted`] when the fencing-token space is used up.
pub fn acquire(
    state: Option<LeaseState<'_>>,
    req: &Acquire<'_>,
    now_ms: i64,
    tokens: &mut impl Tokens,
) -> Result<Outcome, TokensExhausted> {
    // `Acquire::parse` guarantees now + ttl fits; saturate anyway rather than trust the caller.
    let deadline_ms = now_ms.saturating_add(req.ttl_ms);
    match state.filter(|s| s.is_live(now_ms)) {
        None => {
            let token = tokens.next(now_ms).ok_or(TokensExhausted)?;
            Ok(Outcome::Granted { token, deadline_ms })
        }
        Some(held) if req.lease == Some(held.id) => Ok(Outcome::Renewed { deadline_ms }),
        Some(_) => Ok(Outcome::Contended),
    }
}

/// CONFIRM: check ownership, optionally move the deadline.
///
/// # Errors
///
/// `NotHeld` or `NotOwned`.
pub fn confirm(
    state: Option<LeaseState<'_>>,
    req: &Confirm<'_>,
    now_ms: i64,
) -> Result<Outcome, CommandError> {
    owned_by(state, req.lease, now_ms)?;
    Ok(match req.extend_ms {
        Some(ttl) => Outcome::Renewed {
            deadline_ms: now_ms.saturating_add(ttl),
        },
        None => Outcome::Confirmed,
    })
}

/// RELEASE: delete the lock if the lease holds it.
///
/// # Errors
///
/// `NotHeld` or `NotOwned`.
pub fn release(
    state: Option<LeaseState<'_>>,
    req: &Release<'_>,
    now_ms: i64,
) -> Result<Outcome, CommandError> {
    owned_by(state, req.lease, now_ms)?;
    Ok(Outcome::Released)
}

fn owned_by(state: Option<LeaseState<'_>>, lease: &[u8], now_ms: i64) -> Result<(), CommandError> {
    match state.filter(|s| s.is_live(now_ms)) {
        None => Err(CommandError::NotHeld),
        Some(held) if held.id == lease => Ok(()),
        Some(_) => Err(CommandError::NotOwned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: i64 = 1_000_000;

    fn held(id: &[u8], expires_at_ms: Option<i64>) -> Option<LeaseState<'_>> {
        Some(LeaseState {
            id,
            token: 7,
            expires_at_ms,
        })
    }

    fn acq(lease: Option<&[u8]>) -> Acquire<'_> {
        Acquire {
            ttl_ms: 500,
            lease,
            block_ms: None,
        }
    }

    #[test]
    fn acquire_cases() {
        let mut t = TokenClock::new();
        // 1. free lock: granted with a fresh token.
        let out = acquire(None, &acq(None), NOW, &mut t).unwrap();
        assert_eq!(
            out,
            Outcome::Granted {
                token: NOW * 1000,
                deadline_ms: NOW + 500
            }
        );
        // 2. held by another lease: contended.
        let out = acquire(held(b"a", Some(NOW + 1)), &acq(Some(b"b")), NOW, &mut t).unwrap();
        assert_eq!(out, Outcome::Contended);
        // 3. held, caller gives no lease: contended.
        assert_eq!(
            acquire(held(b"a", None), &acq(None), NOW, &mut t),
            Ok(Outcome::Contended)
        );
        // 4. held by the same lease: renewed.
        let out = acquire(held(b"a", Some(NOW + 1)), &acq(Some(b"a")), NOW, &mut t).unwrap();
        assert_eq!(
            out,
            Outcome::Renewed {
                deadline_ms: NOW + 500
            }
        );
        // 5. present but past its deadline: free.
        let out = acquire(held(b"a", Some(NOW)), &acq(Some(b"b")), NOW, &mut t).unwrap();
        assert!(matches!(out, Outcome::Granted { token, .. } if token == NOW * 1000 + 1));
        // 6. the same lease after its deadline: a new grant with a new token, not a renewal.
        let out = acquire(held(b"a", Some(NOW - 1)), &acq(Some(b"a")), NOW, &mut t).unwrap();
        assert!(matches!(out, Outcome::Granted { token, .. } if token == NOW * 1000 + 2));
    }

    #[test]
    fn confirm_and_release_cases() {
        let c = |lease, extend_ms| Confirm { lease, extend_ms };
        assert_eq!(
            confirm(None, &c(b"a", None), NOW),
            Err(CommandError::NotHeld)
        );
        assert_eq!(
            confirm(held(b"a", Some(NOW)), &c(b"a", None), NOW),
            Err(CommandError::NotHeld)
        );
        assert_eq!(
            confirm(held(b"a", Some(NOW + 9)), &c(b"b", None), NOW),
            Err(CommandError::NotOwned)
        );
        assert_eq!(
            confirm(held(b"a", Some(NOW + 9)), &c(b"a", None), NOW),
            Ok(Outcome::Confirmed)
        );
        assert_eq!(
            confirm(held(b"a", Some(NOW + 9)), &c(b"a", Some(20)), NOW),
            Ok(Outcome::Renewed {
                deadline_ms: NOW + 20
            })
        );
        let r = |lease| Release { lease };
        assert_eq!(release(None, &r(b"a"), NOW), Err(CommandError::NotHeld));
        assert_eq!(
            release(held(b"a", None), &r(b"b"), NOW),
            Err(CommandError::NotOwned)
        );
        assert_eq!(
            release(held(b"a", None), &r(b"a"), NOW),
            Ok(Outcome::Released)
        );
    }

    #[test]
    fn ttl_left() {
        let s = LeaseState {
            id: b"a",
            token: 1,
            expires_at_ms: Some(NOW + 250),
        };
        assert_eq!(s.ttl_ms(NOW), 250);
        assert_eq!(s.ttl_ms(NOW + 300), 0);
        assert_eq!(
            LeaseState {
                expires_at_ms: None,
                ..s
            }
            .ttl_ms(NOW),
            -1
        );
    }

    /// A model of one key driven by random commands at a moving clock: at no time do two
    /// leases hold it, tokens strictly increase, and only the holder may confirm or release.
    #[derive(Debug, Clone)]
    enum Step {
        Acquire(u8, i64),
        Confirm(u8, Option<i64>),
        Release(u8),
        Sleep(i64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0u8..4, 1i64..50).prop_map(|(l, t)| Step::Acquire(l, t)),
            (0u8..4, proptest::option::of(1i64..50)).prop_map(|(l, e)| Step::Confirm(l, e)),
            (0u8..4).prop_map(Step::Release),
            (0i64..30).prop_map(Step::Sleep),
        ]
    }

    proptest! {
        #[test]
        fn single_key_model(steps in proptest::collection::vec(step(), 1..300)) {
            let mut tokens = TokenClock::new();
            let mut now = 0i64;
            // (lease, token, deadline)
            let mut stored: Option<([u8; 1], i64, i64)> = None;
            let mut last_token = 0;
            for s in steps {
                let state = stored.as_ref().map(|(id, token, at)| LeaseState {
                    id: id.as_slice(), token: *token, expires_at_ms: Some(*at)
                });
                let live_holder = state.filter(|s| s.is_live(now)).map(|s| s.id[0]);
                match s {
                    Step::Sleep(ms) => now += ms,
                    Step::Acquire(l, ttl) => {
                        let id = [l];
                        let req = Acquire { ttl_ms: ttl, lease: Some(&id), block_ms: None };
                        match acquire(state, &req, now, &mut tokens).unwrap() {
                            Outcome::Granted { token, deadline_ms } => {
                                prop_assert!(live_holder.is_none());
                                prop_assert!(token > last_token);
                                last_token = token;
                                stored = Some((id, token, deadline_ms));
                            }
                            Outcome::Renewed { deadline_ms } => {
                                prop_assert_eq!(live_holder, Some(l));
                                if let Some(s) = stored.as_mut() { s.2 = deadline_ms; }
                            }
                            Outcome::Contended => {
                                prop_assert!(live_holder.is_some() && live_holder != Some(l));
                            }
                            other => prop_assert!(false, "unexpected {:?}", other),
                        }
                    }
                    Step::Confirm(l, extend) => {
                        let id = [l];
                        let out = confirm(state, &Confirm { lease: &id, extend_ms: extend }, now);
                        match (live_holder, out) {
                            (None, Err(CommandError::NotHeld)) => {}
                            (Some(h), Err(CommandError::NotOwned)) => prop_assert_ne!(h, l),
                            (Some(h), Ok(Outcome::Confirmed)) => prop_assert_eq!(h, l),
                            (Some(h), Ok(Outcome::Renewed { deadline_ms })) => {
                                prop_assert_eq!(h, l);
                                if let Some(s) = stored.as_mut() { s.2 = deadline_ms; }
                            }
                            other => prop_assert!(false, "unexpected {:?}", other),
                        }
                    }
                    Step::Release(l) => {
                        let id = [l];
                        match (live_holder, release(state, &Release { lease: &id }, now)) {
                            (None, Err(CommandError::NotHeld)) => {}
                            (Some(h), Err(CommandError::NotOwned)) => prop_assert_ne!(h, l),
                            (Some(h), Ok(Outcome::Released)) => {
                                prop_assert_eq!(h, l);
                                stored = None;
                            }
                            other => prop_assert!(false, "unexpected {:?}", other),
                        }
                    }
                }
            }
        }
    }
}
