//! The stored value of a semaphore (a key that admits n > 1 leases): every lease with its id,
//! token, own deadline and claimed-from id, indexed so that no command's cost grows with n.
//!
//! - the leases live in a slab (`slots`), whose indices stay put while a lease lives;
//! - `by_id` finds a lease's slot from its id (a hash table of slot indices, hashed by id);
//! - `by_deadline` orders the slots by deadline: the earliest says when the next lease ends
//!   (the expiry timer), the latest is the key's own expiry (`PTTL`).
//!
//! A grant, a renewal, a claim and a release are O(1) in the table plus O(log n) in the order.
//! Finding a lease claimed from an id (the `CLAIMED` answer of a refused command) scans the
//! leases: that is only on the refusal path. A lock (n = 1) is not stored here but in the
//! compact `storage::Lock`; the rules see both through `pylock_core::Leases`.

use std::collections::BTreeSet;
use std::hash::BuildHasher;
use std::sync::OnceLock;

use hashbrown::HashTable;
use pylock_core::{LeaseState, Leases};

/// One lease of a semaphore.
pub(crate) struct Slot {
    pub(crate) token: i64,
    pub(crate) deadline_ms: i64,
    pub(crate) id: Box<[u8]>,
    pub(crate) from: Option<Box<[u8]>>,
}

/// Every lease of one semaphore key, and n.
pub(crate) struct Sem {
    limit: u32,
    slots: Vec<Option<Slot>>,
    free: Vec<u32>,
    by_id: HashTable<u32>,
    by_deadline: BTreeSet<(i64, u32)>,
}

/// Lease ids are the callers' own: the table's hash is keyed at random once per process, so
/// no one can choose ids that collide.
fn hash(id: &[u8]) -> u64 {
    static KEYS: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    KEYS.get_or_init(Default::default).hash_one(id)
}

impl Sem {
    /// An empty semaphore of `limit` (> 1) leases.
    pub(crate) fn new(limit: u32) -> Self {
        Self {
            limit,
            slots: Vec::new(),
            free: Vec::new(),
            by_id: HashTable::new(),
            by_deadline: BTreeSet::new(),
        }
    }

    pub(crate) fn limit(&self) -> u32 {
        self.limit
    }

    /// How many leases are stored, live or not.
    pub(crate) fn len(&self) -> usize {
        self.by_deadline.len()
    }

    fn slot(&self, at: u32) -> Option<&Slot> {
        self.slots.get(at as usize)?.as_ref()
    }

    /// The slot of lease `id`, live or not.
    pub(crate) fn find(&self, id: &[u8]) -> Option<u32> {
        let slots = &self.slots;
        self.by_id
            .find(hash(id), |&at| {
                slots
                    .get(at as usize)
                    .and_then(Option::as_ref)
                    .is_some_and(|s| &*s.id == id)
            })
            .copied()
    }

    /// The lease stored at `at`.
    pub(crate) fn get(&self, at: u32) -> Option<&Slot> {
        self.slot(at)
    }

    /// Stores a lease (whose id is not stored yet) and returns its slot.
    pub(crate) fn insert(&mut self, slot: Slot) -> u32 {
        let h = hash(&slot.id);
        let deadline = slot.deadline_ms;
        let at = match self.free.pop() {
            Some(at) => {
                self.slots[at as usize] = Some(slot);
                at
            }
            None => {
                self.slots.push(Some(slot));
                (self.slots.len() - 1) as u32
            }
        };
        let slots = &self.slots;
        self.by_id.insert_unique(h, at, |&i| {
            slots
                .get(i as usize)
                .and_then(Option::as_ref)
                .map_or(0, |s| hash(&s.id))
        });
        self.by_deadline.insert((deadline, at));
        at
    }

    /// Removes the lease at `at` and returns it.
    pub(crate) fn remove(&mut self, at: u32) -> Option<Slot> {
        let slot = self.slots.get_mut(at as usize)?.take()?;
        if let Ok(entry) = self.by_id.find_entry(hash(&slot.id), |&i| i == at) {
            entry.remove();
        }
        self.by_deadline.remove(&(slot.deadline_ms, at));
        self.free.push(at);
        if self.by_deadline.is_empty() {
            // The last lease went: give the memory back (the key goes with it anyway).
            self.slots = Vec::new();
            self.free = Vec::new();
            self.by_id = HashTable::new();
        }
        Some(slot)
    }

    /// Moves the deadline of the lease at `at`.
    pub(crate) fn set_deadline(&mut self, at: u32, deadline_ms: i64) {
        let Some(slot) = self.slots.get_mut(at as usize).and_then(Option::as_mut) else {
            return;
        };
        self.by_deadline.remove(&(slot.deadline_ms, at));
        slot.deadline_ms = deadline_ms;
        self.by_deadline.insert((deadline_ms, at));
    }

    /// The earliest deadline of any stored lease.
    pub(crate) fn earliest(&self) -> Option<i64> {
        self.by_deadline.first().map(|(at, _)| *at)
    }

    /// The latest deadline of any stored lease: the key's expiry.
    pub(crate) fn latest(&self) -> Option<i64> {
        self.by_deadline.last().map(|(at, _)| *at)
    }

    /// The slot of a stored lease whose deadline is at or before `now_ms`, earliest first.
    pub(crate) fn first_dead(&self, now_ms: i64) -> Option<u32> {
        self.by_deadline
            .first()
            .filter(|(at, _)| *at <= now_ms)
            .map(|(_, slot)| *slot)
    }

    /// Every stored lease, earliest deadline first.
    pub(crate) fn by_deadline(&self) -> impl Iterator<Item = &Slot> + '_ {
        self.by_deadline.iter().filter_map(|(_, at)| self.slot(*at))
    }

    /// Bytes held, for `MEMORY USAGE`: the value, its leases and their ids, and the indexes.
    pub(crate) fn mem_usage(&self) -> usize {
        let ids: usize = self
            .by_deadline()
            .map(|s| s.id.len() + s.from.as_ref().map_or(0, |f| f.len()))
            .sum();
        std::mem::size_of::<Self>()
            + self.slots.capacity() * std::mem::size_of::<Option<Slot>>()
            + self.free.capacity() * std::mem::size_of::<u32>()
            + self.by_id.allocation_size()
            // A B-tree node holds up to 11 entries; about two thirds full on average.
            + self.by_deadline.len() * std::mem::size_of::<(i64, u32)>() * 3 / 2
            + ids
    }

    /// The rules' view of the leases at a key whose own expiry is `key_expiry_ms`.
    pub(crate) fn view(&self, key_expiry_ms: Option<i64>) -> SemView<'_> {
        SemView {
            sem: self,
            key_expiry_ms,
        }
    }
}

/// A semaphore as the lease rules see it, with the key's expiry (a generic command may have
/// set it earlier than the leases' deadlines: it ends them all then).
#[derive(Clone, Copy)]
pub(crate) struct SemView<'a> {
    pub(crate) sem: &'a Sem,
    pub(crate) key_expiry_ms: Option<i64>,
}

impl<'a> SemView<'a> {
    /// The lease at `at` as the rules see it, live or not.
    pub(crate) fn state(&self, slot: &'a Slot) -> LeaseState<'a> {
        let own = slot.deadline_ms;
        LeaseState {
            id: &slot.id,
            token: slot.token,
            expires_at_ms: Some(self.key_expiry_ms.map_or(own, |k| k.min(own))),
            claimed_from: slot.from.as_deref(),
        }
    }

    /// The stored lease `id`, live or not.
    pub(crate) fn stored(&self, id: &[u8]) -> Option<LeaseState<'a>> {
        let sem = self.sem;
        sem.find(id)
            .and_then(|at| sem.get(at))
            .map(|s| self.state(s))
    }

    fn key_live(&self, now_ms: i64) -> bool {
        self.key_expiry_ms.is_none_or(|at| at > now_ms)
    }
}

impl<'a> Leases<'a> for SemView<'a> {
    fn limit(&self) -> u32 {
        self.sem.limit
    }

    fn live(&self, now_ms: i64) -> usize {
        if !self.key_live(now_ms) {
            return 0;
        }
        // Dead leases are removed at their deadline on a primary; until then (and on a
        // replica) they sit at the front of the order.
        let dead = self
            .sem
            .by_deadline
            .iter()
            .take_while(|(at, _)| *at <= now_ms)
            .count();
        self.sem.len() - dead
    }

    fn lease(&self, id: &[u8], now_ms: i64) -> Option<LeaseState<'a>> {
        self.stored(id).filter(|s| s.is_live(now_ms))
    }

    fn claimed_from(&self, id: &[u8], now_ms: i64) -> Option<LeaseState<'a>> {
        self.sem
            .by_deadline()
            .map(|s| self.state(s))
            .find(|s| s.claimed_from == Some(id) && s.is_live(now_ms))
    }
}
