//! The lease rules, as pure functions.
//!
//! The caller (the module) reads what is stored at the key, passes it in with `now_ms`, and
//! carries out the [`Outcome`]. Expiry itself is left to Redis: a key that Redis has expired is
//! simply absent. A key that is present but whose deadline has passed by `now_ms` (Redis judges
//! expiry at a script's or transaction's start) counts as free here too, so every PYLOCK command
//! agrees with the deadline it reports.

use crate::command::{Acquire, Confirm, Release, Watch};
use crate::error::CommandError;
use crate::token::TokenClock;

/// What is stored at a lock's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseState<'a> {
    /// The lease id.
    pub id: &'a [u8],
    /// The fencing token of the grant.
    pub token: i64,
    /// Absolute deadline in Unix milliseconds: the lease's own, or the key's expiry when that
    /// is earlier. `None` only for a lease with no deadline of its own (one loaded from an
    /// encoding that did not store it) on a key without a TTL.
    pub expires_at_ms: Option<i64>,
    /// The lease this one was claimed from (`CONFIRM … CLAIM`), if it was.
    pub claimed_from: Option<&'a [u8]>,
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
    /// `CONFIRM … CLAIM` by the holder: store the claim's new id with this new token (the
    /// claimed-from relation names the old id), and this deadline.
    Claimed {
        /// The new fencing token.
        token: i64,
        /// Absolute deadline in Unix milliseconds: the old lease's, or now + EXTEND.
        deadline_ms: Option<i64>,
    },
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

/// CONFIRM: check ownership, optionally move the deadline; with CLAIM, pass the lease to a
/// new id with a new token, or answer a retry of that claim as the claim itself.
///
/// # Errors
///
/// `NotHeld`, `NotOwned` or `Claimed`; `TokensExhausted` when a claim needs a token and the
/// token space is used up.
pub fn confirm(
    state: Option<LeaseState<'_>>,
    req: &Confirm<'_>,
    now_ms: i64,
    tokens: &mut impl Tokens,
) -> Result<Outcome, CommandError> {
    let extended = req.extend_ms.map(|ttl| now_ms.saturating_add(ttl));
    let renewal = || match extended {
        Some(deadline_ms) => Outcome::Renewed { deadline_ms },
        None => Outcome::Confirmed,
    };
    let Some(claim) = req.claim else {
        owned_by(state, req.lease, now_ms)?;
        return Ok(renewal());
    };
    match state.filter(|s| s.is_live(now_ms)) {
        None => Err(CommandError::NotHeld),
        Some(held) if held.id == req.lease => {
            let token = tokens.next(now_ms).ok_or(CommandError::TokensExhausted)?;
            Ok(Outcome::Claimed {
                token,
                deadline_ms: extended.or(held.expires_at_ms),
            })
        }
        // A retry of the claim that made the holder: the same success again.
        Some(held) if held.id == claim && held.claimed_from == Some(req.lease) => Ok(renewal()),
        Some(held) if held.claimed_from == Some(req.lease) => Err(CommandError::Claimed),
        Some(_) => Err(CommandError::NotOwned),
    }
}

/// WATCH: whether `req.lease` holds the lock now (then the caller waits for it to end).
///
/// # Errors
///
/// `NotHeld`, `NotOwned` or `Claimed`, which WATCH answers at once as reasons.
pub fn watch(
    state: Option<LeaseState<'_>>,
    req: &Watch<'_>,
    now_ms: i64,
) -> Result<(), CommandError> {
    owned_by(state, req.lease, now_ms)
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

/// Whether `lease` holds the lock. Only the holder's direct predecessor gets `Claimed`.
fn owned_by(state: Option<LeaseState<'_>>, lease: &[u8], now_ms: i64) -> Result<(), CommandError> {
    match state.filter(|s| s.is_live(now_ms)) {
        None => Err(CommandError::NotHeld),
        Some(held) if held.id == lease => Ok(()),
        Some(held) if held.claimed_from == Some(lease) => Err(CommandError::Claimed),
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
            claimed_from: None,
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
        let c = |lease, extend_ms| Confirm {
            lease,
            extend_ms,
            claim: None,
        };
        let t = &mut TokenClock::new();
        assert_eq!(
            confirm(None, &c(b"a", None), NOW, t),
            Err(CommandError::NotHeld)
        );
        assert_eq!(
            confirm(held(b"a", Some(NOW)), &c(b"a", None), NOW, t),
            Err(CommandError::NotHeld)
        );
        assert_eq!(
            confirm(held(b"a", Some(NOW + 9)), &c(b"b", None), NOW, t),
            Err(CommandError::NotOwned)
        );
        assert_eq!(
            confirm(held(b"a", Some(NOW + 9)), &c(b"a", None), NOW, t),
            Ok(Outcome::Confirmed)
        );
        assert_eq!(
            confirm(held(b"a", Some(NOW + 9)), &c(b"a", Some(20)), NOW, t),
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
    fn claim_cases() {
        let claim = |lease, extend_ms, new| Confirm {
            lease,
            extend_ms,
            claim: Some(new),
        };
        let plain = |lease| Confirm {
            lease,
            extend_ms: None,
            claim: None,
        };
        let t = &mut TokenClock::new();
        let claimed = |id, from| {
            Some(LeaseState {
                id,
                token: 9,
                expires_at_ms: Some(NOW + 40),
                claimed_from: Some(from),
            })
        };
        // 1. the holder claims: a new token, the deadline kept or extended.
        assert_eq!(
            confirm(held(b"a", Some(NOW + 40)), &claim(b"a", None, b"b"), NOW, t),
            Ok(Outcome::Claimed {
                token: NOW * 1000,
                deadline_ms: Some(NOW + 40)
            })
        );
        assert_eq!(
            confirm(
                held(b"a", Some(NOW + 40)),
                &claim(b"a", Some(5), b"b"),
                NOW,
                t
            ),
            Ok(Outcome::Claimed {
                token: NOW * 1000 + 1,
                deadline_ms: Some(NOW + 5)
            })
        );
        // 2. a retry of the same claim: the same success, EXTEND applied again.
        assert_eq!(
            confirm(claimed(b"b", b"a"), &claim(b"a", None, b"b"), NOW, t),
            Ok(Outcome::Confirmed)
        );
        assert_eq!(
            confirm(claimed(b"b", b"a"), &claim(b"a", Some(7), b"b"), NOW, t),
            Ok(Outcome::Renewed {
                deadline_ms: NOW + 7
            })
        );
        // 3. another run claimed it under another id.
        assert_eq!(
            confirm(claimed(b"b", b"a"), &claim(b"a", None, b"c"), NOW, t),
            Err(CommandError::Claimed)
        );
        // 4. plain CONFIRM, RELEASE and WATCH by the direct predecessor: CLAIMED.
        assert_eq!(
            confirm(claimed(b"b", b"a"), &plain(b"a"), NOW, t),
            Err(CommandError::Claimed)
        );
        assert_eq!(
            release(claimed(b"b", b"a"), &Release { lease: b"a" }, NOW),
            Err(CommandError::Claimed)
        );
        let w = Watch {
            lease: b"a",
            timeout_ms: None,
        };
        assert_eq!(
            watch(claimed(b"b", b"a"), &w, NOW),
            Err(CommandError::Claimed)
        );
        // 5. only the direct predecessor: after a -> b -> c, a gets NOTOWNED.
        assert_eq!(
            confirm(claimed(b"c", b"b"), &plain(b"a"), NOW, t),
            Err(CommandError::NotOwned)
        );
        assert_eq!(
            confirm(claimed(b"c", b"b"), &claim(b"a", None, b"c"), NOW, t),
            Err(CommandError::NotOwned)
        );
        // 6. a dead or missing lease: NOTHELD; someone else's: NOTOWNED.
        assert_eq!(
            confirm(held(b"a", Some(NOW)), &claim(b"a", None, b"b"), NOW, t),
            Err(CommandError::NotHeld)
        );
        assert_eq!(
            confirm(None, &claim(b"a", None, b"b"), NOW, t),
            Err(CommandError::NotHeld)
        );
        assert_eq!(
            confirm(held(b"x", Some(NOW + 1)), &claim(b"a", None, b"b"), NOW, t),
            Err(CommandError::NotOwned)
        );
        // The holder named as the new id but claimed from someone else: not a retry.
        assert_eq!(
            confirm(claimed(b"b", b"z"), &claim(b"a", None, b"b"), NOW, t),
            Err(CommandError::NotOwned)
        );
        // 7. the token space exhausted: an error, nothing claimed.
        let mut spent = TokenClock::new();
        spent.observe(i64::MAX);
        assert_eq!(
            confirm(
                held(b"a", Some(NOW + 40)),
                &claim(b"a", None, b"b"),
                NOW,
                &mut spent
            ),
            Err(CommandError::TokensExhausted)
        );
        // 8. WATCH of the holder: held.
        assert_eq!(watch(held(b"a", None), &w, NOW), Ok(()));
    }

    #[test]
    fn ttl_left() {
        let s = LeaseState {
            id: b"a",
            token: 1,
            expires_at_ms: Some(NOW + 250),
            claimed_from: None,
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
                    id: id.as_slice(), token: *token, expires_at_ms: Some(*at), claimed_from: None,
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
                        let req = Confirm { lease: &id, extend_ms: extend, claim: None };
                        let out = confirm(state, &req, now, &mut tokens);
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
