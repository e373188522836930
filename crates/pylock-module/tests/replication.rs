//! A primary and a replica, both real servers: the replica must hold the primary's exact
//! lease id, token and absolute expiry, refuse writes, and continue the token sequence when
//! promoted.

mod common;

use std::time::Duration;

use common::{dbsize, high_water};
use testkit::redis;
use testkit::{
    acquire, holder, pexpiretime, query, query_err, server_tests, wait_until, Lease, Server,
};

/// Waits until `n` replicas acknowledged everything written so far.
fn wait_replicas(con: &mut redis::Connection, n: i64) {
    let acked: i64 = redis::cmd("WAIT").arg(n).arg(5000).query(con).unwrap();
    assert_eq!(acked, n, "replicas did not acknowledge");
}

server_tests! {
    fn replica_holds_the_same_lease_token_and_expiry(kind: Kind) {
        let primary = Server::start(kind);
        let replica = primary.start_replica(&[]);
        let (mut p, mut r) = (primary.conn(), replica.conn());

        let lease = acquire(&mut p, "k", 60_000).unwrap();
        let custom = Lease::from_value(&query(&mut p, &[b"PYLOCK.ACQUIRE", b"c", b"30000", b"LEASE", b"mine"]));
        wait_replicas(&mut p, 1);
        for (key, l) in [("k", &lease), ("c", &custom)] {
            let on_replica = holder(&mut r, key).expect("replica has the lock");
            assert_eq!(on_replica.lease.id, l.id, "{key}: lease id");
            assert_eq!(on_replica.lease.token, l.token, "{key}: token");
            assert_eq!(pexpiretime(&mut r, key), pexpiretime(&mut p, key), "{key}: absolute expiry");
        }
        let t: String = redis::cmd("TYPE").arg("k").query(&mut r).unwrap();
        assert_eq!(t, "pylock-lk");

        // Renewals replicate the new absolute expiry.
        std::thread::sleep(Duration::from_millis(20));
        query(&mut p, &[b"PYLOCK.CONFIRM", b"k", &lease.id, b"EXTEND", b"90000"]);
        query(&mut p, &[b"PYLOCK.ACQUIRE", b"c", b"45000", b"LEASE", b"mine"]);
        wait_replicas(&mut p, 1);
        for key in ["k", "c"] {
            assert_eq!(pexpiretime(&mut r, key), pexpiretime(&mut p, key), "{key} after renewal");
        }
        assert_eq!(holder(&mut r, "c").unwrap().lease.token, custom.token, "renewal keeps the token");

        // A release deletes the key on the replica.
        query(&mut p, &[b"PYLOCK.RELEASE", b"k", &lease.id]);
        wait_replicas(&mut p, 1);
        assert_eq!(holder(&mut r, "k"), None);
        let exists: i64 = redis::cmd("EXISTS").arg("k").query(&mut r).unwrap();
        assert_eq!(exists, 0);
        assert_eq!(high_water(&replica), high_water(&primary));
    }

    fn expiry_on_the_primary_deletes_on_the_replica(kind: Kind) {
        let primary = Server::start(kind);
        let replica = primary.start_replica(&[]);
        let (mut p, mut r) = (primary.conn(), replica.conn());
        // Long enough that a loaded machine still sees the key on the replica before expiry.
        acquire(&mut p, "short", 500).unwrap();
        wait_replicas(&mut p, 1);
        assert_eq!(dbsize(&mut r), 1);
        std::thread::sleep(Duration::from_millis(600));
        // The replica never expires keys itself; it reads the lock as free already...
        assert_eq!(holder(&mut r, "short"), None);
        // ...and drops it once the primary expires it (here on access) and sends DEL.
        assert_eq!(holder(&mut p, "short"), None);
        wait_replicas(&mut p, 1);
        wait_until(Duration::from_secs(5), || dbsize(&mut r) == 0).expect("replica still has the key");
    }

    fn read_only_replica_refuses_writes_and_answers_info(kind: Kind) {
        let primary = Server::start(kind);
        let replica = primary.start_replica(&[]);
        let (mut p, mut r) = (primary.conn(), replica.conn());
        let lease = acquire(&mut p, "k", 60_000).unwrap();
        wait_replicas(&mut p, 1);
        let readonly = "READONLY You can't write against a read only replica.";
        for args in [
            vec![b"PYLOCK.ACQUIRE".as_slice(), b"new", b"1000"],
            vec![b"PYLOCK.ACQUIRE", b"k", b"1000", b"LEASE", &lease.id],
            vec![b"PYLOCK.CONFIRM", b"k", &lease.id],
            vec![b"PYLOCK.CONFIRM", b"k", &lease.id, b"EXTEND", b"5"],
            vec![b"PYLOCK.RELEASE", b"k", &lease.id],
        ] {
            assert_eq!(query_err(&mut r, &args), readonly);
        }
        assert_eq!(holder(&mut r, "k").unwrap().lease.id, lease.id);
        assert_eq!(dbsize(&mut r), 1);
        // The internal command is refused from a client on the replica as well.
        let err = query_err(&mut r, &[b"PYLOCK.RESTORE", b"x", b"y", b"1"]);
        assert!(err.starts_with("READONLY") || err.contains("internal"), "{err}");
    }

    fn promoted_replica_continues_the_token_sequence(kind: Kind) {
        let primary = Server::start(kind);
        let replica = primary.start_replica(&[]);
        let (mut p, mut r) = (primary.conn(), replica.conn());
        let mut max_token = 0;
        for i in 0..50 {
            let key = format!("k{}", i % 5);
            if let Some(l) = acquire(&mut p, &key, 60_000) {
                max_token = max_token.max(l.token);
                if i % 3 != 0 {
                    query(&mut p, &[b"PYLOCK.RELEASE", key.as_bytes(), &l.id]);
                }
            }
        }
        wait_replicas(&mut p, 1);
        assert_eq!(high_water(&replica), max_token, "the replica saw every grant's token");
        let held_before: Vec<_> = (0..5)
            .map(|i| holder(&mut r, &format!("k{i}")).map(|h| (h.lease.id, h.lease.token)))
            .collect();

        redis::cmd("REPLICAOF").arg("NO").arg("ONE").query::<()>(&mut r).unwrap();
        drop(primary);
        // Held locks stay held by the same leases on the new primary.
        for (i, before) in held_before.iter().enumerate() {
            let key = format!("k{i}");
            let now = holder(&mut r, &key).map(|h| (h.lease.id, h.lease.token));
            assert_eq!(&now, before, "{key}");
        }
        let after = acquire(&mut r, "fresh", 60_000).unwrap();
        assert!(after.token > max_token, "{} <= {max_token}", after.token);
    }

    fn replica_aof_records_the_grants_it_received(kind: Kind) {
        let primary = Server::start(kind);
        let mut replica = primary.start_replica(&["--appendonly", "yes", "--appendfsync", "always"]);
        replica.wait_aof_rewrite_done();
        let mut p = primary.conn();
        let lease = acquire(&mut p, "k", 120_000).unwrap();
        wait_replicas(&mut p, 1);
        let expiry = pexpiretime(&mut p, "k");
        // Restart the replica from its own AOF, detached from the primary.
        replica.restart_with(&["--replicaof", "no", "one"]);
        let mut r = replica.conn();
        let h = holder(&mut r, "k").expect("lease survived in the replica's AOF");
        assert_eq!((h.lease.id, h.lease.token), (lease.id, lease.token));
        assert_eq!(pexpiretime(&mut r, "k"), expiry);
        assert!(high_water(&replica) >= lease.token);
    }

    fn a_replica_attached_under_load_matches_the_primary(kind: Kind) {
        // The module skips building effects while nothing can receive them (no AOF, no
        // replica, no backlog). A replica that attaches while grants are flowing must still
        // end up with exactly the primary's leases.
        let primary = Server::start(kind);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut loaders = Vec::new();
        for t in 0..2 {
            let mut con = primary.conn();
            let stop = stop.clone();
            loaders.push(std::thread::spawn(move || {
                // Every key keeps changing hands: a held key is released (or extended) by
                // this thread, which remembers its leases, and taken again.
                let mut held: std::collections::HashMap<String, Vec<u8>> = Default::default();
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let key = format!("load:{t}:{}", i % 400);
                    match held.remove(&key) {
                        Some(id) if i % 5 == 0 => {
                            query(&mut con, &[b"PYLOCK.CONFIRM", key.as_bytes(), &id, b"EXTEND", b"90000"]);
                            held.insert(key, id);
                        }
                        Some(id) => {
                            query(&mut con, &[b"PYLOCK.RELEASE", key.as_bytes(), &id]);
                        }
                        None => {
                            let l = acquire(&mut con, &key, 60_000).expect("free: only this thread uses it");
                            held.insert(key, l.id);
                        }
                    }
                    i += 1;
                }
                i
            }));
        }
        std::thread::sleep(Duration::from_millis(200));
        let replica = primary.start_replica(&[]);
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let ops: u64 = loaders.into_iter().map(|h| h.join().unwrap()).sum();
        assert!(ops > 100, "the load ran ({ops} operations)");
        let (mut p, mut r) = (primary.conn(), replica.conn());
        wait_replicas(&mut p, 1);
        assert_eq!(dbsize(&mut r), dbsize(&mut p));
        let mut compared = 0;
        for t in 0..2 {
            for k in 0..400 {
                let key = format!("load:{t}:{k}");
                let on_p = holder(&mut p, &key).map(|h| (h.lease.id, h.lease.token));
                let on_r = holder(&mut r, &key).map(|h| (h.lease.id, h.lease.token));
                assert_eq!(on_r, on_p, "{key}");
                assert_eq!(pexpiretime(&mut r, &key), pexpiretime(&mut p, &key), "{key}");
                compared += usize::from(on_p.is_some());
            }
        }
        assert!(compared > 0);
        let digest = |con: &mut redis::Connection| -> String { redis::cmd("DEBUG").arg("DIGEST").query(con).unwrap() };
        assert_eq!(digest(&mut r), digest(&mut p));
    }

    fn a_primary_restarted_from_rdb_keeps_its_replica_exact(kind: Kind) {
        // The primary restarts from an RDB with replication info: it keeps a backlog, and its
        // replica returns by partial resync, without a fork. Grants after that, by command and
        // by an expiry hand-off (a timer), must still reach the replica as effects.
        let mut primary = Server::start(kind);
        let replica = primary.start_replica(&[]);
        let mut p = primary.conn();
        acquire(&mut p, "before", 60_000).unwrap();
        wait_replicas(&mut p, 1);
        primary.shutdown(true);
        primary.restart_with(&[]);
        replica.wait_in_sync();
        let mut p = primary.conn();
        let mut r = replica.conn();
        let held = Lease::from_value(&query(&mut p, &[b"PYLOCK.ACQUIRE", b"h", b"300", b"LEASE", b"holder"]));
        let mut waiter = primary.conn();
        let handed = std::thread::spawn(move || {
            query(&mut waiter, &[b"PYLOCK.ACQUIRE", b"h", b"60000", b"LEASE", b"waiter", b"BLOCK", b"5000"])
        });
        let granted = acquire(&mut p, "after", 60_000).unwrap();
        let next = Lease::from_value(&handed.join().unwrap());
        assert!(next.token > held.token);
        wait_replicas(&mut p, 1);
        for key in ["before", "after", "h"] {
            let on_p = holder(&mut p, key).map(|h| (h.lease.id, h.lease.token));
            let on_r = holder(&mut r, key).map(|h| (h.lease.id, h.lease.token));
            assert!(on_p.is_some(), "{key} held on the primary");
            assert_eq!(on_r, on_p, "{key}");
            assert_eq!(pexpiretime(&mut r, key), pexpiretime(&mut p, key), "{key}");
        }
        assert_eq!(holder(&mut r, "after").unwrap().lease.id, granted.id);
        assert_eq!(holder(&mut r, "h").unwrap().lease.id, b"waiter");
    }
}
