//! A lease's deadline belongs to the lease: PERSIST, a later EXPIRE and a RESTORE with no TTL
//! never extend it; the key's expiry is put back; waiters are served at the lease's own
//! deadline; and a replica agrees.

mod common;

use std::time::{Duration, Instant};

use common::{now_ms, take};
use testkit::redis::{self, Value};
use testkit::{holder, pexpiretime, query, query_err, server_tests, wait_until, Server};

server_tests! {
    fn generic_commands_never_extend_a_lease(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let mut expires = Vec::new();
        for key in ["persist", "expire", "pexpireat"] {
            take(&mut con, key, 400, "a");
            expires.push((key, pexpiretime(&mut con, key)));
        }
        redis::cmd("PERSIST").arg("persist").query::<()>(&mut con).unwrap();
        redis::cmd("EXPIRE").arg("expire").arg(3600).query::<()>(&mut con).unwrap();
        redis::cmd("PEXPIREAT").arg("pexpireat").arg(now_ms() + 3_600_000).query::<()>(&mut con).unwrap();
        // Even before the expiry is put back, the lease is judged by its own deadline.
        for (key, _) in &expires {
            let h = holder(&mut con, key).unwrap();
            assert!(h.lease.ttl_ms <= 400, "{key}: ttl {}", h.lease.ttl_ms);
        }
        // PERSIST: the module puts the key's expiry back to the lease's deadline. A later
        // EXPIRE is left as the client set it: the key stays until then, the lease does not.
        let (_, persisted_at) = expires[0];
        wait_until(Duration::from_secs(2), || pexpiretime(&mut con, "persist") == persisted_at)
            .unwrap_or_else(|_| panic!("expiry not put back: {}", pexpiretime(&mut con, "persist")));
        assert!(pexpiretime(&mut con, "expire") > now_ms() + 3_000_000);
        std::thread::sleep(Duration::from_millis(450));
        for (key, _) in &expires {
            assert_eq!(holder(&mut con, key), None, "{key}: lease outlived its deadline");
            let e = query_err(&mut con, &[b"PYLOCK.CONFIRM", key.as_bytes(), b"a"]);
            assert!(e.starts_with("NOTHELD"), "{key}: {e}");
        }
        let n: i64 = redis::cmd("EXISTS").arg("persist").query(&mut con).unwrap();
        assert_eq!(n, 0, "the persisted key expired with its lease");
        // The dead lease's key is free for the next grant, with a larger token.
        let next = take(&mut con, "expire", 1000, "b");
        assert_eq!(next.id, b"b");
        // An earlier TTL is left alone: it ends the lease early.
        take(&mut con, "early", 60_000, "a");
        redis::cmd("PEXPIRE").arg("early").arg(100).query::<()>(&mut con).unwrap();
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(holder(&mut con, "early"), None);
    }

    fn a_restore_without_ttl_keeps_the_lease_deadline(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        take(&mut con, "src", 300, "a");
        let at = pexpiretime(&mut con, "src");
        let payload: Vec<u8> = redis::cmd("DUMP").arg("src").query(&mut con).unwrap();
        redis::cmd("RESTORE").arg("copy").arg(0).arg(payload).query::<()>(&mut con).unwrap();
        let h = holder(&mut con, "copy").unwrap();
        assert!(h.lease.ttl_ms <= 300, "ttl {}", h.lease.ttl_ms);
        wait_until(Duration::from_secs(2), || pexpiretime(&mut con, "copy") == at).unwrap();
        std::thread::sleep(Duration::from_millis(350));
        assert_eq!(holder(&mut con, "copy"), None);
    }

    fn waiters_are_served_at_the_lease_deadline_after_persist(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        take(&mut con, "k", 300, "a");
        redis::cmd("PERSIST").arg("k").query::<()>(&mut con).unwrap();
        let url = s.url();
        let t0 = Instant::now();
        let waiter = std::thread::spawn(move || {
            let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
            redis::cmd("PYLOCK.ACQUIRE").arg("k").arg(1000).arg("BLOCK").arg(0)
                .query::<Value>(&mut c).unwrap()
        });
        let got = waiter.join().unwrap();
        assert_ne!(got, Value::Nil);
        let waited = t0.elapsed();
        assert!(waited < Duration::from_millis(600), "served after {waited:?}");
    }

    fn a_replica_judges_by_the_lease_deadline(kind: Kind) {
        let primary = Server::start(kind);
        let replica = primary.start_replica(&[]);
        let (mut p, mut r) = (primary.conn(), replica.conn());
        take(&mut p, "k", 60_000, "a");
        query(&mut p, &[b"PYLOCK.CONFIRM", b"k", b"a", b"EXTEND", b"90000"]);
        redis::cmd("PERSIST").arg("k").query::<()>(&mut p).unwrap();
        let at = pexpiretime(&mut p, "k");
        wait_until(Duration::from_secs(2), || pexpiretime(&mut p, "k") > 0).unwrap();
        let acked: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(&mut p).unwrap();
        assert_eq!(acked, 1);
        let at = if at > 0 { at } else { pexpiretime(&mut p, "k") };
        wait_until(Duration::from_secs(2), || pexpiretime(&mut r, "k") == at).unwrap();
        let h = holder(&mut r, "k").unwrap();
        assert!(h.lease.ttl_ms > 89_000 && h.lease.ttl_ms <= 90_000, "replica ttl {}", h.lease.ttl_ms);
    }
}
