//! Why a lease ended, as `PYLOCK.WATCH` answers it, and how the module decides it.
//!
//! A watcher waits on one lease: its id and fencing token as they were when the watch began
//! (a same-LEASE ACQUIRE after the lease ended makes a new grant with a new token, which is
//! another lease). Whenever something may have ended it, the module calls [`ended`] with what
//! the key holds now and, when it knows, how the change happened (the `hint`: a RELEASE, a
//! CLAIM, a keyspace event). The rule that matters most is the first: a lease that still holds
//! the lock is never reported as ended, whatever the hint says.

use crate::error::CommandError;
use crate::lease::LeaseState;

/// Why a lease is not (or no longer) held, as WATCH answers it: a bulk string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// Not held by anyone when WATCH was called.
    NotHeld,
    /// Held by another lease when WATCH was called.
    NotOwned,
    /// `PYLOCK.RELEASE` by that lease (or the module took back a hand-off nobody received).
    Released,
    /// Its deadline passed.
    Expired,
    /// `CONFIRM … CLAIM` moved it to a new id (or, when WATCH was called, it had).
    Claimed,
    /// Another command removed or replaced the key: DEL, UNLINK, RENAME, MOVE, RESTORE, SET,
    /// an EXPIRE earlier than the deadline, eviction.
    Deleted,
    /// FLUSHDB, FLUSHALL or SWAPDB.
    Flushed,
    /// Redis Cluster moved the key's slot to another node.
    Moved,
    /// This server became a replica.
    Demoted,
}

impl Reason {
    /// Every reason, in the order of the contract.
    pub const ALL: [Reason; 9] = [
        Reason::NotHeld,
        Reason::NotOwned,
        Reason::Released,
        Reason::Expired,
        Reason::Claimed,
        Reason::Deleted,
        Reason::Flushed,
        Reason::Moved,
        Reason::Demoted,
    ];

    /// The reply's text.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NotHeld => "notheld",
            Reason::NotOwned => "notowned",
            Reason::Released => "released",
            Reason::Expired => "expired",
            Reason::Claimed => "claimed",
            Reason::Deleted => "deleted",
            Reason::Flushed => "flushed",
            Reason::Moved => "moved",
            Reason::Demoted => "demoted",
        }
    }

    /// Reads a reply's text back (the clients' side).
    pub fn parse(text: &[u8]) -> Option<Reason> {
        Reason::ALL
            .into_iter()
            .find(|r| r.as_str().as_bytes() == text)
    }

    /// The answer WATCH gives at once for a lease that is not held when it is called, from the
    /// error CONFIRM would give; `None` for any other error.
    pub fn at_call(err: CommandError) -> Option<Reason> {
        match err {
            CommandError::NotHeld => Some(Reason::NotHeld),
            CommandError::NotOwned => Some(Reason::NotOwned),
            CommandError::Claimed => Some(Reason::Claimed),
            _ => None,
        }
    }
}

/// The lease a watcher waits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watched<'a> {
    /// The lease id.
    pub id: &'a [u8],
    /// The fencing token of its grant.
    pub token: i64,
    /// The lease's own deadline as last seen (Unix ms), `None` if it has none. Not the key's
    /// expiry, which a generic command may have set earlier.
    pub deadline_ms: Option<i64>,
}

impl Watched<'_> {
    /// Whether `state` is this lease, still holding the lock at `now_ms`.
    pub fn holds(&self, state: Option<LeaseState<'_>>, now_ms: i64) -> bool {
        state.is_some_and(|s| s.is_live(now_ms) && s.id == self.id && s.token == self.token)
    }

    /// The reason for a key that Redis expired at `now_ms`: the lease's own end if its deadline
    /// has come, else the key's TTL had been set earlier than the deadline, which deletes it.
    pub fn key_expired(&self, now_ms: i64) -> Reason {
        match self.deadline_ms {
            Some(at) if at > now_ms => Reason::Deleted,
            _ => Reason::Expired,
        }
    }
}

/// Whether the watched lease has ended, now that the key holds `current` (its state as the
/// lease rules see it; `None` when empty), and why. `hint` is how the module saw it end, when
/// it did. `None`: the lease still holds the lock, so the watcher waits on.
pub fn ended(
    watched: &Watched<'_>,
    current: Option<LeaseState<'_>>,
    now_ms: i64,
    hint: Option<Reason>,
) -> Option<Reason> {
    if watched.holds(current, now_ms) {
        return None;
    }
    if hint.is_some() {
        return hint;
    }
    Some(match current {
        Some(s) if s.is_live(now_ms) && s.claimed_from == Some(watched.id) => Reason::Claimed,
        // Still stored but past its deadline: its own (expired), or an earlier TTL that a
        // generic command set (deleted; Redis had not removed the key yet).
        Some(s) if s.id == watched.id && s.token == watched.token => watched.key_expired(now_ms),
        // Gone, or replaced, with nothing to say how: Redis's expiry reports itself, so
        // whatever else removed it was another command.
        _ => match watched.deadline_ms {
            Some(at) if at <= now_ms => Reason::Expired,
            _ => Reason::Deleted,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000;

    fn state<'a>(id: &'a [u8], token: i64, at: i64, from: Option<&'a [u8]>) -> LeaseState<'a> {
        LeaseState {
            id,
            token,
            expires_at_ms: Some(at),
            claimed_from: from,
        }
    }

    #[test]
    fn texts_round_trip() {
        for r in Reason::ALL {
            assert_eq!(Reason::parse(r.as_str().as_bytes()), Some(r));
        }
        assert_eq!(Reason::parse(b"RELEASED"), None);
        assert_eq!(
            Reason::at_call(CommandError::Claimed),
            Some(Reason::Claimed)
        );
        assert_eq!(Reason::at_call(CommandError::WrongType), None);
    }

    #[test]
    fn table() {
        let w = Watched {
            id: b"a",
            token: 5,
            deadline_ms: Some(NOW + 100),
        };
        // (what the key holds, now, hint, answer)
        type Case<'a> = (Option<LeaseState<'a>>, i64, Option<Reason>, Option<Reason>);
        let cases: Vec<Case> = vec![
            // 1. still held: never ended, whatever the hint.
            (
                Some(state(b"a", 5, NOW + 100, None)),
                NOW,
                Some(Reason::Deleted),
                None,
            ),
            (Some(state(b"a", 5, NOW + 100, None)), NOW, None, None),
            // 2. the hint decides when the lease is gone.
            (None, NOW, Some(Reason::Released), Some(Reason::Released)),
            (
                Some(state(b"b", 6, NOW + 50, Some(b"a"))),
                NOW,
                Some(Reason::Claimed),
                Some(Reason::Claimed),
            ),
            // 3. without a hint: claimed from it, past its deadline, or deleted.
            (
                Some(state(b"b", 6, NOW + 50, Some(b"a"))),
                NOW,
                None,
                Some(Reason::Claimed),
            ),
            // Stored past its deadline: its own (expired), or an earlier TTL (deleted).
            (
                Some(state(b"a", 5, NOW + 100, None)),
                NOW + 100,
                None,
                Some(Reason::Expired),
            ),
            (
                Some(state(b"a", 5, NOW, None)),
                NOW,
                None,
                Some(Reason::Deleted),
            ),
            (None, NOW, None, Some(Reason::Deleted)),
            (None, NOW + 100, None, Some(Reason::Expired)),
            // 4. the same id granted again (a new token): the watched lease ended.
            (
                Some(state(b"a", 9, NOW + 100, None)),
                NOW,
                None,
                Some(Reason::Deleted),
            ),
            (
                Some(state(b"a", 9, NOW + 100, None)),
                NOW + 100,
                None,
                Some(Reason::Expired),
            ),
            // 5. another lease that was not claimed from it.
            (
                Some(state(b"c", 7, NOW + 100, Some(b"z"))),
                NOW,
                None,
                Some(Reason::Deleted),
            ),
        ];
        for (i, (current, now, hint, want)) in cases.into_iter().enumerate() {
            assert_eq!(ended(&w, current, now, hint), want, "case {i}");
        }
        assert_eq!(w.key_expired(NOW), Reason::Deleted);
        assert_eq!(w.key_expired(NOW + 100), Reason::Expired);
        let forever = Watched {
            deadline_ms: None,
            ..w
        };
        assert_eq!(forever.key_expired(NOW), Reason::Expired);
    }
}
