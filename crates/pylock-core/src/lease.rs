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
    /// Store a new lease with this token and deadline (beside the live ones; a dead one goes).
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
    /// The key holds n live leases, none of them the caller's; nothing changes (ACQUIRE
    /// answers nil, or waits).
    Contended,
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

/// A key's leases as the rules see them. A lock is the case n = 1: `Option<LeaseState>`
/// implements this for it, and the module's semaphore value for n > 1, so every rule below is
/// one code path for both.
///
/// A lease past its deadline at `now_ms` is not live: it never counts, and no id finds it,
/// even while it is still stored (a replica keeps it until its primary's effect removes it).
pub trait Leases<'a> {
    /// n: how many leases the key admits at once.
    fn limit(&self) -> u32;
    /// How many leases are live at `now_ms`.
    fn live(&self, now_ms: i64) -> usize;
    /// The live lease `id`, if any.
    fn lease(&self, id: &[u8], now_ms: i64) -> Option<LeaseState<'a>>;
    /// A live lease that was claimed from `id`, if any.
    fn claimed_from(&self, id: &[u8], now_ms: i64) -> Option<LeaseState<'a>>;
}

impl<'a> Leases<'a> for Option<LeaseState<'a>> {
    fn limit(&self) -> u32 {
        1
    }

    fn live(&self, now_ms: i64) -> usize {
        usize::from(self.is_some_and(|s| s.is_live(now_ms)))
    }

    fn lease(&self, id: &[u8], now_ms: i64) -> Option<LeaseState<'a>> {
        self.filter(|s| s.id == id && s.is_live(now_ms))
    }

    fn claimed_from(&self, id: &[u8], now_ms: i64) -> Option<LeaseState<'a>> {
        self.filter(|s| s.claimed_from == Some(id) && s.is_live(now_ms))
    }
}

/// ACQUIRE: grant while fewer than n leases are live, renew for the same LEASE, or report
/// contention. The key's n must be the request's (`LIMIT`, or 1) while any lease is live.
///
/// # Errors
///
/// `LimitMismatch` (with the key's n) when the key admits another number of leases;
/// `TokensExhausted` when the fencing-token space is used up.
pub fn acquire<'a>(
    leases: &impl Leases<'a>,
    req: &Acquire<'_>,
    now_ms: i64,
    tokens: &mut impl Tokens,
) -> Result<Outcome, CommandError> {
    // `Acquire::parse` guarantees now + ttl fits; saturate anyway rather than trust the caller.
    let deadline_ms = now_ms.saturating_add(req.ttl_ms);
    let live = leases.live(now_ms);
    if live > 0 && leases.limit() != req.limit() {
        return Err(CommandError::LimitMismatch(leases.limit()));
    }
    if req
        .lease
        .is_some_and(|id| leases.lease(id, now_ms).is_some())
    {
        return Ok(Outcome::Renewed { deadline_ms });
    }
    if live < req.limit() as usize {
        let token = tokens.next(now_ms).ok_or(CommandError::TokensExhausted)?;
        return Ok(Outcome::Granted { token, deadline_ms });
    }
    Ok(Outcome::Contended)
}

/// CONFIRM: check that `req.lease` holds a place, optionally move its deadline; with CLAIM,
/// pass that lease to a new id with a new token, or answer a retry of that claim as the claim
/// itself. Returns the outcome and the lease it applies to (the claim's new id for a retry).
///
/// # Errors
///
/// `NotHeld`, `NotOwned` or `Claimed`; `TokensExhausted` when a claim needs a token and the
/// token space is used up.
pub fn confirm<'a>(
    leases: &impl Leases<'a>,
    req: &Confirm<'_>,
    now_ms: i64,
    tokens: &mut impl Tokens,
) -> Result<(Outcome, LeaseState<'a>), CommandError> {
    let extended = req.extend_ms.map(|ttl| now_ms.saturating_add(ttl));
    let renewal = || match extended {
        Some(deadline_ms) => Outcome::Renewed { deadline_ms },
        None => Outcome::Confirmed,
    };
    let Some(claim) = req.claim else {
        let held = owned_by(leases, req.lease, now_ms)?;
        return Ok((renewal(), held));
    };
    if let Some(held) = leases.lease(req.lease, now_ms) {
        // With n > 1 the new id may name another live lease: two places cannot share an id.
        if leases.lease(claim, now_ms).is_some() {
            return Err(CommandError::InvalidLeaseId);
        }
        let token = tokens.next(now_ms).ok_or(CommandError::TokensExhausted)?;
        let outcome = Outcome::Claimed {
            token,
            deadline_ms: extended.or(held.expires_at_ms),
        };
        return Ok((outcome, held));
    }
    // A retry of the claim that made `claim` from this lease: the same success again.
    if let Some(held) = leases
        .lease(claim, now_ms)
        .filter(|h| h.claimed_from == Some(req.lease))
    {
        return Ok((renewal(), held));
    }
    // Not held by this id: CLAIMED, NOTHELD or NOTOWNED.
    owned_by(leases, req.lease, now_ms).map(|held| (renewal(), held))
}

/// WATCH: the lease `req.lease`, if it holds a place now (then the caller waits for it to end).
///
/// # Errors
///
/// `NotHeld`, `NotOwned` or `Claimed`, which WATCH answers at once as reasons.
pub fn watch<'a>(
    leases: &impl Leases<'a>,
    req: &Watch<'_>,
    now_ms: i64,
) -> Result<LeaseState<'a>, CommandError> {
    owned_by(leases, req.lease, now_ms)
}

/// RELEASE: remove the lease if it holds a place; returns it.
///
/// # Errors
///
/// `NotHeld` or `NotOwned`.
pub fn release<'a>(
    leases: &impl Leases<'a>,
    req: &Release<'_>,
    now_ms: i64,
) -> Result<LeaseState<'a>, CommandError> {
    owned_by(leases, req.lease, now_ms)
}

/// The live lease `lease`. Otherwise `Claimed` when a live lease was claimed from it (only
/// the direct predecessor is remembered), `NotHeld` when no lease is live, else `NotOwned`.
fn owned_by<'a>(
    leases: &impl Leases<'a>,
    lease: &[u8],
    now_ms: i64,
) -> Result<LeaseState<'a>, CommandError> {
    if let Some(held) = leases.lease(lease, now_ms) {
        return Ok(held);
    }
    if leases.claimed_from(lease, now_ms).is_some() {
        return Err(CommandError::Claimed);
    }
    if leases.live(now_ms) == 0 {
        return Err(CommandError::NotHeld);
    }
    Err(CommandError::NotOwned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: i64 = 1_000_000;

    // The rules over a lock (`Option<LeaseState>`, n = 1), shaped for the tables below.
    fn acquire_(
        s: Option<LeaseState<'_>>,
        r: &Acquire<'_>,
        now: i64,
        t: &mut impl Tokens,
    ) -> Result<Outcome, CommandError> {
        acquire(&s, r, now, t)
    }
    fn confirm_(
        s: Option<LeaseState<'_>>,
        r: &Confirm<'_>,
        now: i64,
        t: &mut impl Tokens,
    ) -> Result<Outcome, CommandError> {
        confirm(&s, r, now, t).map(|(o, _)| o)
    }
    fn release_(s: Option<LeaseState<'_>>, r: &Release<'_>, now: i64) -> Result<(), CommandError> {
        release(&s, r, now).map(|_| ())
    }
    fn watch_(s: Option<LeaseState<'_>>, r: &Watch<'_>, now: i64) -> Result<(), CommandError> {
        watch(&s, r, now).map(|_| ())
    }

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
            limit: None,
        }
    }

    #[test]
    fn acquire_cases() {
        let mut t = TokenClock::new();
        // 1. free lock: granted with a fresh token.
        let out = acquire_(None, &acq(None), NOW, &mut t).unwrap();
        assert_eq!(
            out,
            Outcome::Granted {
                token: NOW * 1000,
                deadline_ms: NOW + 500
            }
        );
        // 2. held by another lease: contended.
        let out = acquire_(held(b"a", Some(NOW + 1)), &acq(Some(b"b")), NOW, &mut t).unwrap();
        assert_eq!(out, Outcome::Contended);
        // 3. held, caller gives no lease: contended.
        assert_eq!(
            acquire_(held(b"a", None), &acq(None), NOW, &mut t),
            Ok(Outcome::Contended)
        );
        // 4. held by the same lease: renewed.
        let out = acquire_(held(b"a", Some(NOW + 1)), &acq(Some(b"a")), NOW, &mut t).unwrap();
        assert_eq!(
            out,
            Outcome::Renewed {
                deadline_ms: NOW + 500
            }
        );
        // 5. present but past its deadline: free.
        let out = acquire_(held(b"a", Some(NOW)), &acq(Some(b"b")), NOW, &mut t).unwrap();
        assert!(matches!(out, Outcome::Granted { token, .. } if token == NOW * 1000 + 1));
        // 6. the same lease after its deadline: a new grant with a new token, not a renewal.
        let out = acquire_(held(b"a", Some(NOW - 1)), &acq(Some(b"a")), NOW, &mut t).unwrap();
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
            confirm_(None, &c(b"a", None), NOW, t),
            Err(CommandError::NotHeld)
        );
        assert_eq!(
            confirm_(held(b"a", Some(NOW)), &c(b"a", None), NOW, t),
            Err(CommandError::NotHeld)
        );
        assert_eq!(
            confirm_(held(b"a", Some(NOW + 9)), &c(b"b", None), NOW, t),
            Err(CommandError::NotOwned)
        );
        assert_eq!(
            confirm_(held(b"a", Some(NOW + 9)), &c(b"a", None), NOW, t),
            Ok(Outcome::Confirmed)
        );
        assert_eq!(
            confirm_(held(b"a", Some(NOW + 9)), &c(b"a", Some(20)), NOW, t),
            Ok(Outcome::Renewed {
                deadline_ms: NOW + 20
            })
        );
        let r = |lease| Release { lease };
        assert_eq!(release_(None, &r(b"a"), NOW), Err(CommandError::NotHeld));
        assert_eq!(
            release_(held(b"a", None), &r(b"b"), NOW),
            Err(CommandError::NotOwned)
        );
        assert_eq!(release_(held(b"a", None), &r(b"a"), NOW), Ok(()));
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
            confirm_(held(b"a", Some(NOW + 40)), &claim(b"a", None, b"b"), NOW, t),
            Ok(Outcome::Claimed {
                token: NOW * 1000,
                deadline_ms: Some(NOW + 40)
            })
        );
        assert_eq!(
            confirm_(
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
            confirm_(claimed(b"b", b"a"), &claim(b"a", None, b"b"), NOW, t),
            Ok(Outcome::Confirmed)
        );
        assert_eq!(
            confirm_(claimed(b"b", b"a"), &claim(b"a", Some(7), b"b"), NOW, t),
            Ok(Outcome::Renewed {
                deadline_ms: NOW + 7
            })
        );
        // 3. another run claimed it under another id.
        assert_eq!(
            confirm_(claimed(b"b", b"a"), &claim(b"a", None, b"c"), NOW, t),
            Err(CommandError::Claimed)
        );
        // 4. plain CONFIRM, RELEASE and WATCH by the direct predecessor: CLAIMED.
        assert_eq!(
            confirm_(claimed(b"b", b"a"), &plain(b"a"), NOW, t),
            Err(CommandError::Claimed)
        );
        assert_eq!(
            release_(claimed(b"b", b"a"), &Release { lease: b"a" }, NOW),
            Err(CommandError::Claimed)
        );
        let w = Watch {
            lease: b"a",
            timeout_ms: None,
        };
        assert_eq!(
            watch_(claimed(b"b", b"a"), &w, NOW),
            Err(CommandError::Claimed)
        );
        // 5. only the direct predecessor: after a -> b -> c, a gets NOTOWNED.
        assert_eq!(
            confirm_(claimed(b"c", b"b"), &plain(b"a"), NOW, t),
            Err(CommandError::NotOwned)
        );
        assert_eq!(
            confirm_(claimed(b"c", b"b"), &claim(b"a", None, b"c"), NOW, t),
            Err(CommandError::NotOwned)
        );
        // 6. a dead or missing lease: NOTHELD; someone else's: NOTOWNED.
        assert_eq!(
            confirm_(held(b"a", Some(NOW)), &claim(b"a", None, b"b"), NOW, t),
            Err(CommandError::NotHeld)
        );
        assert_eq!(
            confirm_(None, &claim(b"a", None, b"b"), NOW, t),
            Err(CommandError::NotHeld)
        );
        assert_eq!(
            confirm_(held(b"x", Some(NOW + 1)), &claim(b"a", None, b"b"), NOW, t),
            Err(CommandError::NotOwned)
        );
        // The holder named as the new id but claimed from someone else: not a retry.
        assert_eq!(
            confirm_(claimed(b"b", b"z"), &claim(b"a", None, b"b"), NOW, t),
            Err(CommandError::NotOwned)
        );
        // 7. the token space exhausted: an error, nothing claimed.
        let mut spent = TokenClock::new();
        spent.observe(i64::MAX);
        assert_eq!(
            confirm_(
                held(b"a", Some(NOW + 40)),
                &claim(b"a", None, b"b"),
                NOW,
                &mut spent
            ),
            Err(CommandError::TokensExhausted)
        );
        // 8. WATCH of the holder: held.
        assert_eq!(watch_(held(b"a", None), &w, NOW), Ok(()));
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
                        let req = Acquire { ttl_ms: ttl, lease: Some(&id), block_ms: None, limit: None };
                        match acquire_(state, &req, now, &mut tokens).unwrap() {
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
                        let out = confirm_(state, &req, now, &mut tokens);
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
                        match (live_holder, release_(state, &Release { lease: &id }, now)) {
                            (None, Err(CommandError::NotHeld)) => {}
                            (Some(h), Err(CommandError::NotOwned)) => prop_assert_ne!(h, l),
                            (Some(h), Ok(())) => {
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

/// The same rules over a key that admits n leases: a plain model of a semaphore value.
#[cfg(test)]
mod semaphore_tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: i64 = 1_000_000;

    /// `(id, token, deadline, claimed from)` of one lease.
    type ModelLease = (Vec<u8>, i64, i64, Option<Vec<u8>>);

    /// Every lease, and n.
    struct Model {
        limit: u32,
        leases: Vec<ModelLease>,
    }

    impl Model {
        fn state(l: &ModelLease) -> LeaseState<'_> {
            LeaseState {
                id: &l.0,
                token: l.1,
                expires_at_ms: Some(l.2),
                claimed_from: l.3.as_deref(),
            }
        }
    }

    impl<'a> Leases<'a> for &'a Model {
        fn limit(&self) -> u32 {
            self.limit
        }
        fn live(&self, now_ms: i64) -> usize {
            self.leases.iter().filter(|l| l.2 > now_ms).count()
        }
        fn lease(&self, id: &[u8], now_ms: i64) -> Option<LeaseState<'a>> {
            self.leases
                .iter()
                .find(|l| l.0 == id && l.2 > now_ms)
                .map(Model::state)
        }
        fn claimed_from(&self, id: &[u8], now_ms: i64) -> Option<LeaseState<'a>> {
            self.leases
                .iter()
                .find(|l| l.3.as_deref() == Some(id) && l.2 > now_ms)
                .map(Model::state)
        }
    }

    fn model(limit: u32, leases: &[(&str, i64, Option<&str>)]) -> Model {
        Model {
            limit,
            leases: leases
                .iter()
                .enumerate()
                .map(|(i, (id, at, from))| {
                    (
                        id.as_bytes().to_vec(),
                        i as i64 + 1,
                        *at,
                        from.map(|f| f.as_bytes().to_vec()),
                    )
                })
                .collect(),
        }
    }

    fn acq(lease: Option<&str>, limit: Option<u32>) -> Acquire<'_> {
        Acquire {
            ttl_ms: 100,
            lease: lease.map(str::as_bytes),
            block_ms: None,
            limit,
        }
    }

    #[test]
    fn acquire_admits_up_to_n_live_leases() {
        let t = &mut TokenClock::new();
        let m = model(3, &[("a", NOW + 5, None), ("b", NOW + 5, None)]);
        let out = acquire(&&m, &acq(Some("c"), Some(3)), NOW, t).unwrap();
        assert!(matches!(out, Outcome::Granted { deadline_ms, .. } if deadline_ms == NOW + 100));
        // Same LEASE: a renewal, whatever the count.
        let full = model(2, &[("a", NOW + 5, None), ("b", NOW + 5, None)]);
        assert_eq!(
            acquire(&&full, &acq(Some("a"), Some(2)), NOW, t),
            Ok(Outcome::Renewed {
                deadline_ms: NOW + 100
            })
        );
        // Full: contended, with or without a LEASE.
        assert_eq!(
            acquire(&&full, &acq(Some("c"), Some(2)), NOW, t),
            Ok(Outcome::Contended)
        );
        assert_eq!(
            acquire(&&full, &acq(None, Some(2)), NOW, t),
            Ok(Outcome::Contended)
        );
        // A lease past its deadline never counts, even while stored.
        let one_dead = model(2, &[("a", NOW, None), ("b", NOW + 5, None)]);
        assert!(matches!(
            acquire(&&one_dead, &acq(Some("c"), Some(2)), NOW, t),
            Ok(Outcome::Granted { .. })
        ));
        // ... and its id is a new grant, not a renewal.
        assert!(matches!(
            acquire(&&one_dead, &acq(Some("a"), Some(2)), NOW, t),
            Ok(Outcome::Granted { .. })
        ));
    }

    #[test]
    fn the_keys_n_is_fixed_while_a_lease_lives() {
        let t = &mut TokenClock::new();
        let m = model(3, &[("a", NOW + 5, None)]);
        for (req, want) in [
            (acq(Some("a"), None), CommandError::LimitMismatch(3)),
            (acq(Some("a"), Some(1)), CommandError::LimitMismatch(3)),
            (acq(Some("z"), Some(4)), CommandError::LimitMismatch(3)),
        ] {
            assert_eq!(acquire(&&m, &req, NOW, t), Err(want));
        }
        // A lock asked for as a semaphore, and the other way round.
        let lock = held_lock(b"a", NOW + 5);
        assert_eq!(
            acquire(&lock, &acq(Some("b"), Some(2)), NOW, t),
            Err(CommandError::LimitMismatch(1))
        );
        // With every lease dead, the key is free and takes the new n.
        let dead = model(3, &[("a", NOW, None)]);
        assert!(matches!(
            acquire(&&dead, &acq(Some("a"), Some(5)), NOW, t),
            Ok(Outcome::Granted { .. })
        ));
        // Without LIMIT a key of n = 1 is a lock.
        let one = model(1, &[("a", NOW + 5, None)]);
        assert_eq!(
            acquire(&&one, &acq(Some("b"), None), NOW, t),
            Ok(Outcome::Contended)
        );
    }

    fn held_lock(id: &[u8], at: i64) -> Option<LeaseState<'_>> {
        Some(LeaseState {
            id,
            token: 1,
            expires_at_ms: Some(at),
            claimed_from: None,
        })
    }

    #[test]
    fn confirm_release_watch_act_on_one_lease_by_id() {
        let t = &mut TokenClock::new();
        let m = model(
            3,
            &[
                ("a", NOW + 5, None),
                ("b", NOW + 9, Some("x")),
                ("d", NOW, None),
            ],
        );
        let c = |lease: &'static str, extend_ms, claim: Option<&'static str>| Confirm {
            lease: lease.as_bytes(),
            extend_ms,
            claim: claim.map(str::as_bytes),
        };
        let (out, l) = confirm(&&m, &c("b", None, None), NOW, t).unwrap();
        assert_eq!((out, l.id, l.token), (Outcome::Confirmed, &b"b"[..], 2));
        let (out, l) = confirm(&&m, &c("a", Some(50), None), NOW, t).unwrap();
        assert_eq!(
            (out, l.id),
            (
                Outcome::Renewed {
                    deadline_ms: NOW + 50
                },
                &b"a"[..]
            )
        );
        // Others hold it, not this id (nor the dead one).
        assert_eq!(
            confirm(&&m, &c("z", None, None), NOW, t).unwrap_err(),
            CommandError::NotOwned
        );
        assert_eq!(
            confirm(&&m, &c("d", None, None), NOW, t).unwrap_err(),
            CommandError::NotOwned
        );
        // The id a live lease was claimed from.
        assert_eq!(
            confirm(&&m, &c("x", None, None), NOW, t).unwrap_err(),
            CommandError::Claimed
        );
        assert_eq!(
            release(&&m, &Release { lease: b"x" }, NOW).unwrap_err(),
            CommandError::Claimed
        );
        // A claim of one lease keeps its deadline; its retry is the same success.
        let (out, l) = confirm(&&m, &c("a", None, Some("n")), NOW, t).unwrap();
        assert!(matches!(out, Outcome::Claimed { deadline_ms: Some(at), .. } if at == NOW + 5));
        assert_eq!(l.id, b"a");
        let (out, l) = confirm(&&m, &c("x", None, Some("b")), NOW, t).unwrap();
        assert_eq!((out, l.id), (Outcome::Confirmed, &b"b"[..]));
        assert_eq!(
            confirm(&&m, &c("x", None, Some("q")), NOW, t).unwrap_err(),
            CommandError::Claimed
        );
        // The new id may not be another live lease's.
        assert_eq!(
            confirm(&&m, &c("a", None, Some("b")), NOW, t).unwrap_err(),
            CommandError::InvalidLeaseId
        );
        assert_eq!(
            release(&&m, &Release { lease: b"a" }, NOW).unwrap().id,
            b"a"
        );
        let w = Watch {
            lease: b"b",
            timeout_ms: None,
        };
        assert_eq!(watch(&&m, &w, NOW).unwrap().token, 2);
        // No live lease: NOTHELD.
        let dead = model(3, &[("a", NOW, None)]);
        assert_eq!(
            release(&&dead, &Release { lease: b"a" }, NOW).unwrap_err(),
            CommandError::NotHeld
        );
        assert_eq!(
            confirm(&&dead, &c("a", None, Some("n")), NOW, t).unwrap_err(),
            CommandError::NotHeld
        );
    }

    #[derive(Debug, Clone)]
    enum Step {
        Acquire(u8, i64, u32),
        Confirm(u8, Option<i64>),
        Release(u8),
        Sleep(i64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0u8..6, 1i64..50, 1u32..4).prop_map(|(l, t, n)| Step::Acquire(l, t, n)),
            (0u8..6, proptest::option::of(1i64..50)).prop_map(|(l, e)| Step::Confirm(l, e)),
            (0u8..6).prop_map(Step::Release),
            (0i64..30).prop_map(Step::Sleep),
        ]
    }

    proptest! {
        /// One key driven by random commands with random LIMITs: never more than n live
        /// leases, n fixed while any lives, tokens strictly increase, one lease per id, and
        /// only a live lease's id confirms or releases it.
        #[test]
        fn semaphore_model(steps in proptest::collection::vec(step(), 1..300)) {
            let mut tokens = TokenClock::new();
            let mut now = 0i64;
            let mut m = Model { limit: 1, leases: Vec::new() };
            let mut last_token = 0;
            for s in steps {
                let live: Vec<u8> = m.leases.iter().filter(|l| l.2 > now).map(|l| l.0[0]).collect();
                match s {
                    Step::Sleep(ms) => now += ms,
                    Step::Acquire(l, ttl, n) => {
                        let id = [l];
                        let req = Acquire { ttl_ms: ttl, lease: Some(&id), block_ms: None, limit: Some(n) };
                        match acquire(&&m, &req, now, &mut tokens) {
                            Ok(Outcome::Granted { token, deadline_ms }) => {
                                prop_assert!(live.len() < n as usize && !live.contains(&l));
                                prop_assert!(live.is_empty() || m.limit == n);
                                prop_assert!(token > last_token);
                                last_token = token;
                                m.leases.retain(|x| x.2 > now);
                                m.limit = n;
                                m.leases.push((id.to_vec(), token, deadline_ms, None));
                            }
                            Ok(Outcome::Renewed { deadline_ms }) => {
                                prop_assert!(live.contains(&l) && m.limit == n);
                                for x in m.leases.iter_mut().filter(|x| x.0 == id && x.2 > now) {
                                    x.2 = deadline_ms;
                                }
                            }
                            Ok(Outcome::Contended) => {
                                prop_assert!(live.len() >= n as usize && !live.contains(&l));
                            }
                            Err(CommandError::LimitMismatch(k)) => {
                                prop_assert!(!live.is_empty() && k == m.limit && k != n);
                            }
                            other => prop_assert!(false, "unexpected {:?}", other),
                        }
                        let after = m.leases.iter().filter(|x| x.2 > now).count();
                        prop_assert!(after <= m.limit as usize);
                    }
                    Step::Confirm(l, extend) => {
                        let id = [l];
                        let req = Confirm { lease: &id, extend_ms: extend, claim: None };
                        match confirm(&&m, &req, now, &mut tokens).map(|(o, h)| (o, h.id[0])) {
                            Err(CommandError::NotHeld) => prop_assert!(live.is_empty()),
                            Err(CommandError::NotOwned) => prop_assert!(!live.is_empty() && !live.contains(&l)),
                            Ok((Outcome::Confirmed, h)) => prop_assert!(h == l && live.contains(&l)),
                            Ok((Outcome::Renewed { deadline_ms }, h)) => {
                                prop_assert!(h == l && live.contains(&l));
                                for x in m.leases.iter_mut().filter(|x| x.0 == id && x.2 > now) {
                                    x.2 = deadline_ms;
                                }
                            }
                            other => prop_assert!(false, "unexpected {:?}", other),
                        }
                    }
                    Step::Release(l) => {
                        let id = [l];
                        match release(&&m, &Release { lease: &id }, now).map(|h| h.id[0]) {
                            Err(CommandError::NotHeld) => prop_assert!(live.is_empty()),
                            Err(CommandError::NotOwned) => prop_assert!(!live.is_empty() && !live.contains(&l)),
                            Ok(h) => {
                                prop_assert!(h == l && live.contains(&l));
                                m.leases.retain(|x| !(x.0 == id && x.2 > now));
                            }
                            Err(other) => prop_assert!(false, "unexpected {:?}", other),
                        }
                    }
                }
            }
        }
    }
}
