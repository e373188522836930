//! pylock on a real three-primary Redis Cluster: commands route by key, and a held lock
//! survives the migration of its slot to another node.

use pylock_check::checker::{self, Config};
use testkit::redis::{self, cluster::ClusterClient, Value};
use testkit::{holder, pexpiretime, query, query_err, server_tests, Cluster, Kind, Lease};

server_tests! {
    fn commands_route_by_key(kind: Kind) {
        let cluster = Cluster::start(kind);
        let mut con = ClusterClient::new(cluster.urls()).unwrap().get_connection().unwrap();
        let keys: Vec<String> = (0..30).map(|i| format!("lock:{i}")).collect();
        let mut leases = Vec::new();
        for key in &keys {
            let v: Value = redis::cmd("PYLOCK.ACQUIRE").arg(key).arg(60_000).query(&mut con).unwrap();
            leases.push(Lease::from_value(&v));
        }
        let mut nodes_used = std::collections::HashSet::new();
        for (key, lease) in keys.iter().zip(&leases) {
            let owner = cluster.node_for(key);
            nodes_used.insert(owner.port());
            // The lock lives on the node that serves its slot...
            let h = holder(&mut owner.conn(), key).expect("held on its node");
            assert_eq!((h.lease.id.as_slice(), h.lease.token), (lease.id.as_slice(), lease.token));
            // ...and any other node redirects there.
            let other = cluster.nodes().iter().find(|n| n.port() != owner.port()).unwrap();
            let err = query_err(&mut other.conn(), &[b"PYLOCK.INFO", key.as_bytes()]);
            assert!(err.starts_with("MOVED"), "{err}");
            // CONFIRM and RELEASE route the same way.
            let v: Value = redis::cmd("PYLOCK.CONFIRM").arg(key).arg(&lease.id).arg("EXTEND").arg(90_000).query(&mut con).unwrap();
            assert_eq!(Lease::from_value(&v).ttl_ms, 90_000);
            let r: i64 = redis::cmd("PYLOCK.RELEASE").arg(key).arg(&lease.id).query(&mut con).unwrap();
            assert_eq!(r, 1);
        }
        assert_eq!(nodes_used.len(), 3, "the keys spread over every node");
    }

    fn a_held_lock_survives_the_migration_of_its_slot(kind: Kind) {
        let cluster = Cluster::start(kind);
        let key = "lock:migrating";
        let from = cluster.node_for(key);
        let to = cluster.nodes().iter().find(|n| n.port() != from.port()).unwrap();
        let mut on_from = from.conn();
        let lease = Lease::from_value(&query(&mut on_from, &[b"PYLOCK.ACQUIRE", key.as_bytes(), b"60000"]));
        let expiry = pexpiretime(&mut on_from, key);

        cluster.migrate_slot(cluster.slot(key), from, to);

        assert_eq!(cluster.node_for(key).port(), to.port());
        let mut on_to = to.conn();
        let h = holder(&mut on_to, key).expect("the lock moved with its slot");
        assert_eq!((h.lease.id.as_slice(), h.lease.token), (lease.id.as_slice(), lease.token));
        // MIGRATE carries the TTL relative to its own clock reading, so the deadline can move
        // later by the time the migration took.
        let moved = pexpiretime(&mut on_to, key) - expiry;
        assert!((0..1000).contains(&moved), "deadline moved by {moved} ms");
        let t: String = redis::cmd("TYPE").arg(key).query(&mut on_to).unwrap();
        assert_eq!(t, "pylock-lk");
        // The holder still owns it; others still cannot take it; the token sequence continues.
        let mut con = ClusterClient::new(cluster.urls()).unwrap().get_connection().unwrap();
        let v: Value = redis::cmd("PYLOCK.ACQUIRE").arg(key).arg(1000).query(&mut con).unwrap();
        assert_eq!(v, Value::Nil);
        let v: Value = redis::cmd("PYLOCK.CONFIRM").arg(key).arg(&lease.id).query(&mut con).unwrap();
        assert_eq!(Lease::from_value(&v).token, lease.token);
        let r: i64 = redis::cmd("PYLOCK.RELEASE").arg(key).arg(&lease.id).query(&mut con).unwrap();
        assert_eq!(r, 1);
        let v: Value = redis::cmd("PYLOCK.ACQUIRE").arg(key).arg(1000).query(&mut con).unwrap();
        assert!(Lease::from_value(&v).token > lease.token);
    }

    /// A semaphore moves with its slot (MIGRATE): every lease with its id and token, and n;
    /// its leases still expire one by one on the new node.
    fn a_semaphore_survives_the_migration_of_its_slot(kind: Kind) {
        let cluster = Cluster::start(kind);
        let key = "sem:migrating";
        let from = cluster.node_for(key);
        let to = cluster.nodes().iter().find(|n| n.port() != from.port()).unwrap();
        let mut on_from = from.conn();
        let mut leases = Vec::new();
        for (id, ttl) in [("a", "60000"), ("b", "1500"), ("c", "60000")] {
            let v = query(&mut on_from, &[b"PYLOCK.ACQUIRE", key.as_bytes(), ttl.as_bytes(), b"LEASE", id.as_bytes(), b"LIMIT", b"4"]);
            leases.push(Lease::from_value(&v));
        }
        cluster.migrate_slot(cluster.slot(key), from, to);
        assert_eq!(cluster.node_for(key).port(), to.port());
        let mut on_to = to.conn();
        for l in &leases {
            let v = query(&mut on_to, &[b"PYLOCK.CONFIRM", key.as_bytes(), &l.id]);
            assert_eq!(Lease::from_value(&v).token, l.token, "{}", l.id_str());
        }
        let e = query_err(&mut on_to, &[b"PYLOCK.ACQUIRE", key.as_bytes(), b"1000", b"LIMIT", b"2"]);
        assert!(e.starts_with("LIMITMISMATCH the key admits 4"), "{e}");
        // The short lease ends at its deadline on the new node: a place for two newcomers.
        testkit::wait_until(std::time::Duration::from_secs(5), || {
            let r = redis::cmd("PYLOCK.CONFIRM").arg(key).arg("b").query::<Value>(&mut on_to);
            r.is_err_and(|e| e.code() == Some("NOTOWNED"))
        })
        .expect("b expired");
        for id in ["d", "e"] {
            let v = query(&mut on_to, &[b"PYLOCK.ACQUIRE", key.as_bytes(), b"60000", b"LEASE", id.as_bytes(), b"LIMIT", b"4"]);
            assert!(Lease::from_value(&v).token > leases[2].token);
        }
        let v = query(&mut on_to, &[b"PYLOCK.ACQUIRE", key.as_bytes(), b"60000", b"LIMIT", b"4"]);
        assert_eq!(v, Value::Nil, "full again");
    }

    fn waiters_on_a_migrated_lock_are_told_to_retry_not_granted(kind: Kind) {
        let cluster = Cluster::start(kind);
        let key = "lock:waited-on";
        let from = cluster.node_for(key);
        let to = cluster.nodes().iter().find(|n| n.port() != from.port()).unwrap();
        let lease = Lease::from_value(&query(&mut from.conn(), &[b"PYLOCK.ACQUIRE", key.as_bytes(), b"60000"]));
        let mut waiter = from.conn();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let r = redis::cmd("PYLOCK.ACQUIRE").arg(key).arg(5000).arg("BLOCK").arg(20_000).query::<Value>(&mut waiter);
            let _ = tx.send(r.map_err(|e| testkit::error_text(&e)));
        });
        testkit::wait_until(std::time::Duration::from_secs(5), || {
            holder(&mut from.conn(), key).is_some_and(|h| h.waiters == 1)
        })
        .expect("waiter queued");

        let slot = cluster.slot(key);
        cluster.migrate_slot(slot, from, to);

        // The old node must not grant the lock it no longer serves: the waiter is told to retry.
        let r = rx.recv_timeout(std::time::Duration::from_secs(5)).expect("waiter answered");
        assert!(r.as_ref().is_err_and(|e| e.starts_with("TRYAGAIN")), "{r:?}");
        let left: i64 = redis::cmd("CLUSTER").arg("COUNTKEYSINSLOT").arg(slot).query(&mut from.conn()).unwrap();
        assert_eq!(left, 0, "the old node created a lock in a slot it gave away");
        let h = holder(&mut to.conn(), key).expect("held on the new node");
        assert_eq!((h.lease.id.as_slice(), h.lease.token), (lease.id.as_slice(), lease.token));
        assert_eq!(from.info("pylock", "pylock_waiting").as_deref(), Some("0"));
    }

    fn watchers_of_a_migrated_lock_are_told_it_moved(kind: Kind) {
        let cluster = Cluster::start(kind);
        let key = "lock:watched";
        let from = cluster.node_for(key);
        let to = cluster.nodes().iter().find(|n| n.port() != from.port()).unwrap();
        let lease = Lease::from_value(&query(&mut from.conn(), &[b"PYLOCK.ACQUIRE", key.as_bytes(), b"60000"]));
        let mut watcher = from.conn();
        let id = lease.id.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let r = redis::cmd("PYLOCK.WATCH").arg(key).arg(id).query::<Value>(&mut watcher);
            let _ = tx.send(r.map_err(|e| testkit::error_text(&e)));
        });
        testkit::wait_until(std::time::Duration::from_secs(5), || {
            from.info("pylock", "pylock_watching").as_deref() == Some("1")
        })
        .expect("watcher blocked");
        cluster.migrate_slot(cluster.slot(key), from, to);
        let r = rx.recv_timeout(std::time::Duration::from_secs(5)).expect("watcher answered");
        assert_eq!(r, Ok(Value::BulkString(b"moved".to_vec())));
        assert_eq!(from.info("pylock", "pylock_watching").as_deref(), Some("0"));
        // The lease itself lives on, on its new node.
        let h = holder(&mut to.conn(), key).expect("held on the new node");
        assert_eq!(h.lease.id, lease.id);
    }

    fn the_contention_checker_passes_on_the_cluster(kind: Kind) {
        let cluster = Cluster::start(kind);
        let seed = 0xc105_7e55 + (kind == Kind::Valkey) as u64;
        let mut cfg = Config::small(seed);
        // Enough locks that every node holds some of them.
        cfg.keys = 6;
        let history = checker::run(&cluster, &cfg, |_| {});
        let report = checker::check(&cluster, &cfg, &history);
        let summary = report.summary();
        println!("{} cluster / seed {seed}:
{summary}", kind.name());
        assert!(report.passed(), "{summary}");
        assert!(report.counts.grants >= 20, "too few grants to mean anything:\n{summary}");
        assert!(report.confirmed_sections >= 5, "{summary}");
        let nodes_with_locks = (0..cfg.keys)
            .map(|i| cluster.node_for(&checker::key_names(i)[0]).port())
            .collect::<std::collections::HashSet<_>>();
        assert!(nodes_with_locks.len() >= 2, "the locks spread over several nodes");
    }
}
