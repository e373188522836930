//! `PYLOCK.ACQUIRE` against real servers: a grant on a free lock (a UUID v4 lease, a token, the
//! full TTL as an absolute expiry, the module's own key type), nil on a held lock with nothing
//! changed, the idempotent retry with one's own `LEASE`, binary-safe lease ids, and fencing
//! tokens that keep increasing across release and expiry.

mod common;

use std::time::Duration;

use common::{dump, now_ms};
use testkit::redis::{self, Value};
use testkit::{acquire, holder, pexpiretime, query, server_tests, Lease, Server};

fn is_uuid_v4(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && [8, 13, 18, 23].iter().all(|&i| b[i] == b'-')
        && b[14] == b'4'
        && matches!(b[19], b'8' | b'9' | b'a' | b'b')
        && s.chars()
            .filter(|c| *c != '-')
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
}

server_tests! {
    fn acquire_free_lock_grants_a_uuid_lease(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let lease = acquire(&mut con, "lock:a", 60_000).expect("granted");
        assert!(is_uuid_v4(lease.id_str()), "{:?}", lease.id_str());
        assert!(lease.token > 0);
        assert_eq!(lease.ttl_ms, 60_000, "a fresh grant reports its full ttl");
        let held = holder(&mut con, "lock:a").expect("held");
        assert_eq!(held.lease.id, lease.id);
        assert_eq!(held.lease.token, lease.token);
        assert!(held.lease.ttl_ms > 59_000 && held.lease.ttl_ms <= 60_000);
        assert_eq!(held.waiters, 0);
        let left = pexpiretime(&mut con, "lock:a") - now_ms();
        assert!((59_000..=60_000).contains(&left), "absolute expiry is set: {left}");
        // Many server-made ids: every one a lowercase hyphenated v4 UUID, all different, and
        // between them every hex digit in every one of the 32 places.
        let mut seen = std::collections::HashSet::new();
        let mut digits = vec![std::collections::HashSet::new(); 36];
        for i in 0..400 {
            let l = acquire(&mut con, &format!("lock:ids:{i}"), 60_000).expect("granted");
            let id = l.id_str().to_string();
            assert!(is_uuid_v4(&id), "{id:?}");
            for (at, c) in id.chars().enumerate() {
                digits[at].insert(c);
            }
            assert!(seen.insert(id), "ids repeat");
        }
        let free = (0..36).filter(|&at| ![8, 13, 14, 18, 19, 23].contains(&at));
        assert!(free.clone().all(|at| digits[at].len() == 16), "{digits:?}");
        let t: String = redis::cmd("TYPE").arg("lock:a").query(&mut con).unwrap();
        assert_eq!(t, "pylock-lk");
    }

    fn server_lease_ids_differ(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let mut ids = std::collections::HashSet::new();
        for i in 0..200 {
            let l = acquire(&mut con, &format!("k{i}"), 10_000).unwrap();
            assert!(ids.insert(l.id));
        }
    }

    fn acquire_held_lock_is_nil_and_changes_nothing(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let first = acquire(&mut con, "k", 60_000).unwrap();
        let before = (dump(&mut con, "k"), pexpiretime(&mut con, "k"));
        assert_eq!(acquire(&mut con, "k", 90_000), None);
        let v = query(&mut con, &[b"PYLOCK.ACQUIRE", b"k", b"90000", b"LEASE", b"other"]);
        assert_eq!(v, Value::Nil);
        assert_eq!((dump(&mut con, "k"), pexpiretime(&mut con, "k")), before);
        assert_eq!(holder(&mut con, "k").unwrap().lease.id, first.id);
    }

    fn acquire_with_own_lease_is_idempotent(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let v = query(&mut con, &[b"PYLOCK.ACQUIRE", b"k", b"1000", b"LEASE", b"job-17"]);
        let first = Lease::from_value(&v);
        assert_eq!(first.id, b"job-17");
        assert_eq!(first.ttl_ms, 1000);
        // A retry after a lost reply: same lease, same token, TTL set to the new value.
        let v = query(&mut con, &[b"pylock.acquire", b"k", b"50000", b"lease", b"job-17"]);
        let again = Lease::from_value(&v);
        assert_eq!(again.id, first.id);
        assert_eq!(again.token, first.token);
        assert_eq!(again.ttl_ms, 50_000);
        let left = pexpiretime(&mut con, "k") - now_ms();
        assert!(left > 49_000, "ttl reset to 50 s, got {left}");
        // Shorter is allowed too: the TTL is set, not only extended.
        let v = query(&mut con, &[b"PYLOCK.ACQUIRE", b"k", b"2000", b"LEASE", b"job-17"]);
        assert_eq!(Lease::from_value(&v).ttl_ms, 2000);
        assert!(pexpiretime(&mut con, "k") - now_ms() <= 2000);
    }

    fn lease_ids_are_binary_safe_up_to_128_bytes(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let id: Vec<u8> = (0..128u8).map(|i| i.wrapping_mul(37)).collect();
        let v = query(&mut con, &[b"PYLOCK.ACQUIRE", b"bin", b"10000", b"LEASE", &id]);
        let lease = Lease::from_value(&v);
        assert_eq!(lease.id, id);
        let v = query(&mut con, &[b"PYLOCK.CONFIRM", b"bin", &id]);
        assert_eq!(Lease::from_value(&v).id, id);
        let v = query(&mut con, &[b"PYLOCK.RELEASE", b"bin", &id]);
        assert_eq!(v, Value::Int(1));
    }

    fn tokens_increase_across_release_and_expiry(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let mut last = 0;
        for round in 0..20 {
            let l = acquire(&mut con, "k", 30).unwrap();
            assert!(l.token > last, "round {round}: {} <= {last}", l.token);
            last = l.token;
            if round % 2 == 0 {
                query(&mut con, &[b"PYLOCK.RELEASE", b"k", &l.id]);
            } else {
                std::thread::sleep(Duration::from_millis(40));
            }
        }
    }
}
