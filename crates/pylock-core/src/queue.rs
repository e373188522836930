//! The rules of fair waiting, without Redis: who gets a freed lock, who else is answered with
//! the same grant, whether a grant nobody received is taken back, and when waits time out.
//!
//! The module keeps one [`WaitQueue`] per lock and one [`Deadlines`] for all BLOCK timeouts,
//! and carries out what these types decide. `C` is however the caller names a blocked client
//! (the module uses the blocked-client handle).
//!
//! - **FIFO.** [`WaitQueue::hand_off`] gives a freed lock to the longest waiter.
//! - **Same LEASE.** A waiter that asked with the LEASE the lock was just granted to is a retry
//!   of that request (a client that re-sent ACQUIRE after a lost reply): it is answered with
//!   the same grant, in queue order, and the lease's deadline becomes its ttl from now.
//! - **Receipt.** Everyone answered with one grant shares a [`Delivery`]. The grant is taken
//!   back only when the last of them is settled and none received it.
//!
//! A second kind of blocked client (a watcher of a lease) needs no queue order and lives beside
//! these queues; a lock that admits n holders hands off while fewer than n leases are live,
//! which is [`WaitQueue::hand_off`] called once per free place.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::Hash;

/// One blocked `ACQUIRE … BLOCK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiter<C> {
    /// The blocked client.
    pub client: C,
    /// The ttl it asked for, in milliseconds.
    pub ttl_ms: i64,
    /// The LEASE it asked with, if any.
    pub lease: Option<Box<[u8]>>,
    /// The n it asked for (`LIMIT`, or 1).
    pub limit: u32,
}

/// A freed lock's next holder, and the waiters answered with the same grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandOff<C> {
    /// The longest waiter: the lock is granted to it, for its ttl from now.
    pub head: Waiter<C>,
    /// Later waiters with the head's LEASE, in queue order, each with the deadline the lease
    /// has once that waiter's request is applied (its ttl from now). The lease's final
    /// deadline is the last one's (or the head's when there are none).
    pub same_lease: Vec<(Waiter<C>, i64)>,
}

impl<C> HandOff<C> {
    /// The lease's deadline once every request in the hand-off is applied.
    pub fn final_deadline(&self, now_ms: i64) -> i64 {
        self.same_lease
            .last()
            .map_or(now_ms.saturating_add(self.head.ttl_ms), |(_, at)| *at)
    }
}

/// The waiters of one lock, longest waiting first.
///
/// Every operation the hand-off makes is O(1) whatever the queue's length: joining, leaving
/// (a timeout or a disconnect, found by the client's place instead of a scan), and handing off
/// to the head. Only a hand-off whose head shares its LEASE with a later waiter, a retry after
/// a lost reply, walks the queue to answer those waiters too; a count per LEASE tells when.
#[derive(Debug, Clone)]
pub struct WaitQueue<C> {
    /// Places in arrival order; a waiter that left early is `None` until the place reaches
    /// the front, or the queue is compacted.
    slots: VecDeque<Option<Waiter<C>>>,
    /// The place number of `slots[0]`; place numbers only grow.
    front: u64,
    /// Each queued client's place number.
    places: HashMap<C, u64>,
    /// How many queued waiters asked with each LEASE.
    leases: HashMap<Box<[u8]>, u32>,
}

impl<C> Default for WaitQueue<C> {
    fn default() -> Self {
        Self {
            slots: VecDeque::new(),
            front: 0,
            places: HashMap::new(),
            leases: HashMap::new(),
        }
    }
}

impl<C: Clone + Eq + Hash> WaitQueue<C> {
    /// Joins the queue at its end. A client already queued keeps its place and is not added
    /// again.
    pub fn push(&mut self, waiter: Waiter<C>) {
        if self.places.contains_key(&waiter.client) {
            return;
        }
        let place = self.front + self.slots.len() as u64;
        self.places.insert(waiter.client.clone(), place);
        if let Some(lease) = &waiter.lease {
            *self.leases.entry(lease.clone()).or_insert(0) += 1;
        }
        self.slots.push_back(Some(waiter));
    }

    /// Leaves the queue (timed out, disconnected, unblocked); the waiter, if it was queued.
    pub fn remove(&mut self, client: &C) -> Option<Waiter<C>> {
        let place = self.places.remove(client)?;
        let index = usize::try_from(place - self.front).ok()?;
        let waiter = self.slots.get_mut(index)?.take()?;
        self.forget_lease(waiter.lease.as_deref());
        self.tidy();
        Some(waiter)
    }

    /// Takes the waiters a freed lock goes to: the head, and every later waiter that asked
    /// with the head's LEASE (see the module docs). `None` when nobody waits.
    pub fn hand_off(&mut self, now_ms: i64) -> Option<HandOff<C>> {
        let head = loop {
            let slot = self.slots.pop_front()?;
            self.front += 1;
            if let Some(w) = slot {
                break w;
            }
        };
        self.places.remove(&head.client);
        self.forget_lease(head.lease.as_deref());
        let mut same_lease = Vec::new();
        if let Some(lease) = head.lease.as_deref() {
            if self.leases.remove(lease).is_some() {
                for slot in &mut self.slots {
                    if slot
                        .as_ref()
                        .is_some_and(|w| w.lease.as_deref() == Some(lease))
                    {
                        if let Some(w) = slot.take() {
                            self.places.remove(&w.client);
                            let at = now_ms.saturating_add(w.ttl_ms);
                            same_lease.push((w, at));
                        }
                    }
                }
            }
        }
        self.tidy();
        Some(HandOff { head, same_lease })
    }

    /// Takes every waiter, in order (a node that no longer serves the lock answers them all).
    pub fn drain(&mut self) -> impl Iterator<Item = Waiter<C>> + '_ {
        self.places.clear();
        self.leases.clear();
        self.front += self.slots.len() as u64;
        self.slots.drain(..).flatten()
    }

    /// How many wait.
    pub fn len(&self) -> usize {
        self.places.len()
    }

    /// Whether nobody waits.
    pub fn is_empty(&self) -> bool {
        self.places.is_empty()
    }

    /// The waiters, longest waiting first.
    pub fn iter(&self) -> impl Iterator<Item = &Waiter<C>> {
        self.slots.iter().flatten()
    }

    fn forget_lease(&mut self, lease: Option<&[u8]>) {
        let Some(lease) = lease else { return };
        if let Some(n) = self.leases.get_mut(lease) {
            *n -= 1;
            if *n == 0 {
                self.leases.remove(lease);
            }
        }
    }

    /// Drops the empty places at the front, and renumbers the queue without its empty places
    /// once they outnumber the waiters (so waiters that leave behind a long-waiting head cost
    /// O(1) each, amortised, and no memory grows without bound).
    fn tidy(&mut self) {
        while matches!(self.slots.front(), Some(None)) {
            self.slots.pop_front();
            self.front += 1;
        }
        let live = self.places.len();
        if self.slots.len() > 2 * live + 16 {
            self.slots.retain(Option::is_some);
            for (i, w) in self.slots.iter().flatten().enumerate() {
                self.places.insert(w.client.clone(), self.front + i as u64);
            }
        }
    }
}

/// Whether a grant reached any of the clients answered with it.
///
/// Each such client [`join`](Delivery::join)s when its answer is decided, is marked
/// [`received`](Delivery::received) when its reply is written, and
/// [`settle`](Delivery::settle)s when its wait is over however it ended. The grant is to be
/// taken back exactly when the last member settles and none received it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Delivery {
    received: bool,
    in_flight: u32,
}

impl Delivery {
    /// A client is answered with this grant.
    pub fn join(&mut self) {
        self.in_flight = self.in_flight.saturating_add(1);
    }

    /// A member's reply carrying the grant was written.
    pub fn received(&mut self) {
        self.received = true;
    }

    /// Whether any member received the grant.
    pub fn was_received(&self) -> bool {
        self.received
    }

    /// A member's wait is over. True when it was the last one and nobody received the grant:
    /// the caller takes the grant back.
    pub fn settle(&mut self) -> bool {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.in_flight == 0 && !self.received
    }
}

/// BLOCK timeouts of all waiters, earliest first. One module timer serves all of them: it is
/// set for [`Deadlines::next`] and, when it fires, takes [`Deadlines::due`]. A waiter that
/// leaves early is [`remove`](Deadlines::remove)d; no timer needs stopping for it.
#[derive(Debug, Clone)]
pub struct Deadlines<C> {
    by_time: BTreeMap<(i64, u64), C>,
    serial: u64,
}

impl<C> Default for Deadlines<C> {
    fn default() -> Self {
        Self {
            by_time: BTreeMap::new(),
            serial: 0,
        }
    }
}

/// A place in [`Deadlines`], to remove it by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeadlineId(i64, u64);

impl<C> Deadlines<C> {
    /// Adds `client`, due at Unix ms `at_ms`.
    pub fn insert(&mut self, at_ms: i64, client: C) -> DeadlineId {
        self.serial = self.serial.wrapping_add(1);
        self.by_time.insert((at_ms, self.serial), client);
        DeadlineId(at_ms, self.serial)
    }

    /// Removes a deadline that has not come due.
    pub fn remove(&mut self, id: DeadlineId) -> Option<C> {
        self.by_time.remove(&(id.0, id.1))
    }

    /// Takes every client due at `now_ms` (deadline `<= now_ms`), earliest first.
    pub fn due(&mut self, now_ms: i64) -> Vec<C> {
        let later = self.by_time.split_off(&(now_ms.saturating_add(1), 0));
        std::mem::replace(&mut self.by_time, later)
            .into_values()
            .collect()
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<i64> {
        self.by_time.keys().next().map(|(at, _)| *at)
    }

    /// How many deadlines are pending.
    pub fn len(&self) -> usize {
        self.by_time.len()
    }

    /// Whether none is pending.
    pub fn is_empty(&self) -> bool {
        self.by_time.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: i64 = 1_000_000;

    fn w(client: u32, ttl_ms: i64, lease: Option<&str>) -> Waiter<u32> {
        Waiter {
            client,
            ttl_ms,
            lease: lease.map(|l| l.as_bytes().into()),
            limit: 1,
        }
    }

    fn queue(ws: &[Waiter<u32>]) -> WaitQueue<u32> {
        let mut q = WaitQueue::default();
        for x in ws {
            q.push(x.clone());
        }
        q
    }

    fn clients(q: &WaitQueue<u32>) -> Vec<u32> {
        q.iter().map(|w| w.client).collect()
    }

    #[test]
    fn hand_off_cases() {
        // (queue, head, same-lease clients with deadlines, queue left)
        type Case = (Vec<Waiter<u32>>, Option<u32>, Vec<(u32, i64)>, Vec<u32>);
        let cases: Vec<Case> = vec![
            // 1. nobody waits: no hand-off.
            (vec![], None, vec![], vec![]),
            // 2. FIFO: the first waiter, alone.
            (
                vec![w(1, 100, None), w(2, 100, None)],
                Some(1),
                vec![],
                vec![2],
            ),
            // 3. waiters without LEASE never share a grant.
            (
                vec![w(1, 100, None), w(2, 100, None), w(3, 100, None)],
                Some(1),
                vec![],
                vec![2, 3],
            ),
            // 4. later waiters with the head's LEASE are answered too, in order, each with
            //    its own ttl from now; others keep their places.
            (
                vec![
                    w(1, 100, Some("a")),
                    w(2, 100, Some("b")),
                    w(3, 300, Some("a")),
                    w(4, 100, None),
                    w(5, 50, Some("a")),
                ],
                Some(1),
                vec![(3, NOW + 300), (5, NOW + 50)],
                vec![2, 4],
            ),
            // 5. a LEASE shared by later waiters only does not jump the queue.
            (
                vec![w(1, 100, None), w(2, 100, Some("a")), w(3, 100, Some("a"))],
                Some(1),
                vec![],
                vec![2, 3],
            ),
        ];
        for (i, (ws, head, same, left)) in cases.into_iter().enumerate() {
            let mut q = queue(&ws);
            let got = q.hand_off(NOW);
            assert_eq!(got.as_ref().map(|h| h.head.client), head, "case {}", i + 1);
            let got_same: Vec<(u32, i64)> = got
                .as_ref()
                .map(|h| h.same_lease.iter().map(|(w, at)| (w.client, *at)).collect())
                .unwrap_or_default();
            assert_eq!(got_same, same, "case {}", i + 1);
            assert_eq!(clients(&q), left, "case {}", i + 1);
        }
    }

    #[test]
    fn final_deadline_is_the_last_request_applied() {
        let mut q = queue(&[w(1, 500, Some("a")), w(2, 100, Some("a"))]);
        let h = q.hand_off(NOW).unwrap();
        assert_eq!(h.final_deadline(NOW), NOW + 100);
        let mut q = queue(&[w(1, 500, Some("a"))]);
        assert_eq!(q.hand_off(NOW).unwrap().final_deadline(NOW), NOW + 500);
    }

    #[test]
    fn remove_leaves_the_others_in_order() {
        let mut q = queue(&[w(1, 1, None), w(2, 1, None), w(3, 1, None)]);
        assert_eq!(q.remove(&2).map(|w| w.client), Some(2));
        assert_eq!(q.remove(&2), None);
        assert_eq!(clients(&q), vec![1, 3]);
        assert_eq!(q.drain().map(|w| w.client).collect::<Vec<_>>(), vec![1, 3]);
        assert!(q.is_empty());
    }

    #[test]
    fn departures_behind_a_long_waiting_head_do_not_pile_up() {
        let mut q = queue(&[w(0, 1, None)]);
        for c in 1..10_000 {
            q.push(w(c, 1, Some("x")));
            assert_eq!(q.remove(&c).map(|w| w.client), Some(c));
        }
        assert!(
            q.slots.len() <= 18,
            "{} places kept for 1 waiter",
            q.slots.len()
        );
        assert_eq!(clients(&q), vec![0]);
        assert!(q.leases.is_empty());
        assert_eq!(q.hand_off(NOW).map(|h| h.head.client), Some(0));
        assert!(q.is_empty());
    }

    #[test]
    fn delivery_cases() {
        // (members, which received, settle order) -> which settle returns true
        let mut d = Delivery::default();
        d.join();
        assert!(d.settle(), "one member, never received: take back");

        let mut d = Delivery::default();
        d.join();
        d.received();
        assert!(!d.settle(), "one member that received it: keep");

        let mut d = Delivery::default();
        d.join();
        d.join();
        assert!(!d.settle(), "not the last member yet");
        assert!(d.settle(), "last member, nobody received: take back");

        let mut d = Delivery::default();
        d.join();
        d.join();
        assert!(!d.settle());
        d.received();
        assert!(!d.settle(), "the second member received it: keep");
        assert!(d.was_received());
    }

    #[test]
    fn deadlines_come_due_in_order() {
        let mut d = Deadlines::default();
        let a = d.insert(NOW + 30, 'a');
        d.insert(NOW + 10, 'b');
        d.insert(NOW + 10, 'c');
        d.insert(NOW + 20, 'd');
        assert_eq!(d.next(), Some(NOW + 10));
        assert_eq!(d.due(NOW + 9), Vec::<char>::new());
        assert_eq!(d.due(NOW + 10), vec!['b', 'c']);
        assert_eq!(d.remove(a), Some('a'));
        assert_eq!(d.remove(a), None);
        assert_eq!(d.next(), Some(NOW + 20));
        assert_eq!(d.due(i64::MAX), vec!['d']);
        assert!(d.is_empty());
    }

    fn arb_waiter() -> impl Strategy<Value = Waiter<u32>> {
        (0u32..1000, 1i64..1000, proptest::option::of(0u8..3)).prop_map(|(c, ttl, l)| Waiter {
            client: c,
            ttl_ms: ttl,
            lease: l.map(|l| vec![b'a' + l].into()),
            limit: 1,
        })
    }

    proptest! {
        /// Repeated hand-offs serve every waiter exactly once; heads come in queue order; each
        /// same-LEASE follower stood behind its head with the head's LEASE; no one without
        /// that LEASE is passed over by the batching.
        #[test]
        fn hand_offs_serve_everyone_once_in_order(mut ws in proptest::collection::vec(arb_waiter(), 0..40)) {
            for (i, w) in ws.iter_mut().enumerate() {
                w.client = i as u32; // distinct clients, numbered in arrival order
            }
            let mut q = queue(&ws);
            let mut served = Vec::new();
            let mut last_head = None;
            while let Some(h) = q.hand_off(NOW) {
                prop_assert!(last_head.is_none_or(|l| h.head.client > l), "heads in arrival order");
                last_head = Some(h.head.client);
                for (f, _) in &h.same_lease {
                    prop_assert!(f.client > h.head.client);
                    prop_assert_eq!(f.lease.as_deref(), h.head.lease.as_deref());
                    prop_assert!(h.head.lease.is_some());
                }
                // The remaining queue keeps arrival order.
                let left = clients(&q);
                prop_assert!(left.windows(2).all(|p| p[0] < p[1]));
                // Nobody left behind the head shares its LEASE.
                if let Some(l) = h.head.lease.as_deref() {
                    prop_assert!(q.iter().all(|w| w.lease.as_deref() != Some(l)));
                }
                served.push(h.head.client);
                served.extend(h.same_lease.iter().map(|(f, _)| f.client));
            }
            served.sort_unstable();
            prop_assert_eq!(served, (0..ws.len() as u32).collect::<Vec<_>>());
        }

        /// Against the plain model (a list scanned on every hand-off and removal), any mix of
        /// joins, departures and hand-offs gives the same heads, the same same-LEASE answers
        /// and the same queue, in the same order.
        #[test]
        fn matches_the_scanning_model(ops in proptest::collection::vec((0u8..4, 0u32..24, proptest::option::of(0u8..3), 1i64..500), 0..200)) {
            let mut q: WaitQueue<u32> = WaitQueue::default();
            let mut model: Vec<Waiter<u32>> = Vec::new();
            for (op, client, lease, ttl) in ops {
                match op {
                    0 | 1 => {
                        let waiter = Waiter { client, ttl_ms: ttl, lease: lease.map(|l| vec![b'a' + l].into()), limit: 1 };
                        if !model.iter().any(|w| w.client == client) {
                            model.push(waiter.clone());
                        }
                        q.push(waiter);
                    }
                    2 => {
                        let pos = model.iter().position(|w| w.client == client);
                        let want = pos.map(|p| model.remove(p));
                        prop_assert_eq!(q.remove(&client), want);
                    }
                    _ => {
                        let got = q.hand_off(NOW);
                        if model.is_empty() {
                            prop_assert!(got.is_none());
                        } else {
                            let head = model.remove(0);
                            let mut same = Vec::new();
                            if let Some(l) = head.lease.as_deref() {
                                let (s, rest): (Vec<_>, Vec<_>) = model.drain(..).partition(|w| w.lease.as_deref() == Some(l));
                                model = rest;
                                same = s.into_iter().map(|w| { let at = NOW + w.ttl_ms; (w, at) }).collect();
                            }
                            prop_assert_eq!(got, Some(HandOff { head, same_lease: same }));
                        }
                    }
                }
                prop_assert_eq!(q.len(), model.len());
                prop_assert_eq!(q.iter().cloned().collect::<Vec<_>>(), model.clone());
            }
            prop_assert_eq!(q.drain().collect::<Vec<_>>(), model);
            prop_assert!(q.is_empty());
        }

        /// A grant is taken back iff nobody of its members received it, decided exactly at the
        /// last settle.
        #[test]
        fn delivery_takes_back_iff_nobody_received(received in proptest::collection::vec(any::<bool>(), 1..8)) {
            let mut d = Delivery::default();
            for _ in &received {
                d.join();
            }
            let mut verdicts = Vec::new();
            for r in &received {
                if *r {
                    d.received();
                }
                verdicts.push(d.settle());
            }
            let last = verdicts.pop().unwrap();
            prop_assert!(verdicts.iter().all(|v| !v));
            prop_assert_eq!(last, !received.iter().any(|r| *r));
        }

        /// `due` returns exactly the deadlines at or before `now`, sorted; the rest stay.
        #[test]
        fn due_splits_at_now(ats in proptest::collection::vec(0i64..100, 0..30), now in 0i64..100) {
            let mut d = Deadlines::default();
            for (i, at) in ats.iter().enumerate() {
                d.insert(*at, (*at, i));
            }
            let due = d.due(now);
            prop_assert!(due.iter().all(|(at, _)| *at <= now));
            prop_assert!(due.windows(2).all(|p| p[0] <= p[1]));
            prop_assert_eq!(due.len() + d.len(), ats.len());
            prop_assert!(d.next().is_none_or(|n| n > now));
        }
    }
}
