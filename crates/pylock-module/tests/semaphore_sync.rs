//! Semaphores (`PYLOCK.ACQUIRE … LIMIT n`) across replication and the module's own
//! bookkeeping: a replica attached afterwards (full sync from an RDB) and one returning by
//! partial resync hold every lease exactly; a lease past its deadline never counts there; a
//! promoted replica expires leases and hands places over FIFO; a place handed to a waiter whose
//! client is gone goes to the next waiter (never lost), on the primary, its replica and its
//! AOF alike; after SWAPDB a dead lease never counts and still leaves by the timer. On Redis
//! 7.0 and Valkey. (The basics are in `semaphore.rs`.)

mod common;

use std::thread;
use std::time::Duration;

use common::dump;
use testkit::redis::{self, Value};
use testkit::{pexpiretime, query, server_tests, wait_until, Lease, Server};

/// `PYLOCK.ACQUIRE key ttl LEASE id LIMIT n`: the lease, or `None` for nil.
fn take(con: &mut redis::Connection, key: &str, id: &str, ttl: i64, n: u32) -> Option<Lease> {
    let v = query(
        con,
        &[
            b"PYLOCK.ACQUIRE",
            key.as_bytes(),
            ttl.to_string().as_bytes(),
            b"LEASE",
            id.as_bytes(),
            b"LIMIT",
            n.to_string().as_bytes(),
        ],
    );
    (v != Value::Nil).then(|| Lease::from_value(&v))
}

fn release(con: &mut redis::Connection, key: &str, id: &str) -> Value {
    query(con, &[b"PYLOCK.RELEASE", key.as_bytes(), id.as_bytes()])
}

/// INFO on a semaphore: `(n, holders, waiters, [(id, token, ttl)])`; `None` for nil.
type SemInfo = (i64, i64, i64, Vec<(String, i64, i64)>);

fn info(con: &mut redis::Connection, key: &str) -> Option<SemInfo> {
    let v = query(con, &[b"PYLOCK.INFO", key.as_bytes()]);
    let Value::Array(items) = v else {
        assert_eq!(v, Value::Nil);
        return None;
    };
    let text = |v: &Value| match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).unwrap(),
        other => panic!("{other:?}"),
    };
    let int = |v: &Value| match v {
        Value::Int(i) => *i,
        other => panic!("{other:?}"),
    };
    let fields: Vec<String> = items.iter().step_by(2).map(text).collect();
    assert_eq!(fields, ["limit", "holders", "waiters", "leases"]);
    let Value::Array(leases) = &items[7] else {
        panic!("{items:?}")
    };
    let leases = leases
        .iter()
        .map(|l| match l {
            Value::Array(l) => (text(&l[0]), int(&l[1]), int(&l[2])),
            other => panic!("{other:?}"),
        })
        .collect();
    Some((int(&items[1]), int(&items[3]), int(&items[5]), leases))
}

/// INFO without what is read a moment apart (each lease's ttl) or is the server's own (its
/// waiters): n, holders, and each lease's id and token, earliest deadline first.
type Held = (i64, i64, Vec<(String, i64)>);

fn held(con: &mut redis::Connection, key: &str) -> Option<Held> {
    info(con, key).map(|(n, holders, _, leases)| {
        (
            n,
            holders,
            leases.into_iter().map(|(id, t, _)| (id, t)).collect(),
        )
    })
}

fn ids(con: &mut redis::Connection, key: &str) -> Vec<String> {
    let mut ids: Vec<String> = info(con, key)
        .map(|i| i.3.into_iter().map(|l| l.0).collect())
        .unwrap_or_default();
    ids.sort();
    ids
}

/// Whether the stored value at `key` (its DUMP) still names lease `id`, live or not.
fn stores(con: &mut redis::Connection, key: &str, id: &str) -> bool {
    match dump(con, key) {
        Value::BulkString(b) => b.windows(id.len()).any(|w| w == id.as_bytes()),
        _ => false,
    }
}

fn wait_replicas(con: &mut redis::Connection, n: i64) {
    let acked: i64 = redis::cmd("WAIT").arg(n).arg(5000).query(con).unwrap();
    assert_eq!(acked, n, "replicas did not acknowledge");
}

/// A client blocked in `ACQUIRE key ttl LEASE id BLOCK block LIMIT n` on its own connection:
/// its client id, and the thread that returns its reply (an error's text for a killed client).
fn waiter(
    s: &Server,
    key: &str,
    id: &str,
    ttl: i64,
    n: u32,
    block_ms: i64,
) -> (i64, thread::JoinHandle<Result<Value, String>>) {
    let mut con = s.conn();
    let client: i64 = redis::cmd("CLIENT").arg("ID").query(&mut con).unwrap();
    let (key, id) = (key.to_string(), id.to_string());
    let t = thread::spawn(move || {
        redis::cmd("PYLOCK.ACQUIRE")
            .arg(&key)
            .arg(ttl)
            .arg("LEASE")
            .arg(&id)
            .arg("BLOCK")
            .arg(block_ms)
            .arg("LIMIT")
            .arg(n)
            .query::<Value>(&mut con)
            .map_err(|e| testkit::error_text(&e))
    });
    (client, t)
}

/// Waits until `n` clients wait on the server (`INFO pylock` `waiting`).
fn wait_waiting(s: &Server, n: i64) {
    wait_until(Duration::from_secs(5), || {
        s.info("pylock", "pylock_waiting").as_deref() == Some(&n.to_string())
    })
    .unwrap_or_else(|_| panic!("never {n} waiting"));
}

fn granted(r: &Result<Value, String>) -> Option<String> {
    match r {
        Ok(v @ Value::Array(_)) => Some(Lease::from_value(v).id_str().to_string()),
        _ => None,
    }
}

server_tests! {
    /// A replica attached after the fact gets the semaphore by full sync (an RDB): every lease
    /// with its id, token and deadline, the claim, and n. A lease past its deadline does not
    /// count there while the primary (paused) has not removed it yet; once it does, the freed
    /// place goes to the primary's longest waiter and the replica follows. Promoted, the
    /// replica expires leases from its own timer and hands places over FIFO above every token.
    fn a_replica_attached_later_holds_every_lease_and_takes_over(kind: Kind) {
        let primary = Server::start(kind);
        let mut p = primary.conn();
        take(&mut p, "sem", "a", 60_000, 3).unwrap();
        take(&mut p, "sem", "b", 30_000, 3).unwrap();
        // Long enough to outlast the replica's start on a loaded machine.
        take(&mut p, "sem", "short", 6_000, 3).unwrap();
        query(&mut p, &[b"PYLOCK.CONFIRM", b"sem", b"b", b"CLAIM", b"b2"]);
        let (_, w1) = waiter(&primary, "sem", "w1", 4_000, 3, 20_000);
        wait_waiting(&primary, 1);
        let (_, w2) = waiter(&primary, "sem", "w2", 60_000, 3, 20_000);
        wait_waiting(&primary, 2);
        let before = held(&mut p, "sem").unwrap();
        assert_eq!(before.2.iter().map(|l| l.0.as_str()).collect::<Vec<_>>(), ["short", "b2", "a"]);

        let replica = primary.start_replica(&[]);
        let full_syncs: i64 = primary.info("stats", "sync_full").unwrap().parse().unwrap();
        assert!(full_syncs >= 1, "a full sync");
        let mut r = replica.conn();
        wait_replicas(&mut p, 1);
        assert_eq!(held(&mut r, "sem"), Some(before.clone()), "ids, tokens, order, n");
        assert_eq!(dump(&mut r, "sem"), dump(&mut p, "sem"), "the same stored value, deadlines included");
        assert_eq!(pexpiretime(&mut r, "sem"), pexpiretime(&mut p, "sem"));

        // The primary's writes are paused past the short lease's deadline, so it cannot remove
        // the lease: the replica still stores it, and does not count it.
        redis::cmd("CLIENT").arg("PAUSE").arg(60_000).arg("WRITE").query::<()>(&mut p).unwrap();
        assert!(stores(&mut p, "sem", "short"), "paused before the short lease's deadline");
        wait_until(Duration::from_secs(10), || info(&mut r, "sem").is_some_and(|i| i.1 == 2))
            .expect("the dead lease stopped counting on the replica");
        assert!(stores(&mut r, "sem", "short"), "still stored on the replica");
        assert_eq!(ids(&mut r, "sem"), ["a", "b2"]);
        redis::cmd("CLIENT").arg("UNPAUSE").query::<()>(&mut p).unwrap();
        // Its place goes to the longest waiter; the replica follows.
        assert_eq!(granted(&w1.join().unwrap()).as_deref(), Some("w1"));
        wait_replicas(&mut p, 1);
        wait_until(Duration::from_secs(5), || dump(&mut r, "sem") == dump(&mut p, "sem"))
            .expect("the same value on both");
        assert!(!stores(&mut r, "sem", "short"));
        assert_eq!(ids(&mut r, "sem"), ["a", "b2", "w1"]);
        let max = held(&mut p, "sem").unwrap().2.iter().map(|l| l.1).max().unwrap();

        // Promotion. w2 still waits on the old primary, which goes away.
        redis::cmd("REPLICAOF").arg("NO").arg("ONE").query::<()>(&mut r).unwrap();
        drop(p);
        drop(primary);
        let _ = w2.join().unwrap();
        let (_, x1) = waiter(&replica, "sem", "x1", 60_000, 3, 20_000);
        wait_waiting(&replica, 1);
        let (_, x2) = waiter(&replica, "sem", "x2", 60_000, 3, 20_000);
        wait_waiting(&replica, 2);
        // w1's lease (4 s) ends from the promoted replica's timer: its place goes to x1...
        let l1 = Lease::from_value(&x1.join().unwrap().expect("x1 answered"));
        assert_eq!(l1.id_str(), "x1");
        assert!(l1.token > max, "{} <= {max}", l1.token);
        assert_eq!(ids(&mut r, "sem"), ["a", "b2", "x1"]);
        // ...and a release's to x2, next in line.
        assert_eq!(release(&mut r, "sem", "b2"), Value::Int(1));
        let l2 = Lease::from_value(&x2.join().unwrap().expect("x2 answered"));
        assert_eq!(l2.id_str(), "x2");
        assert!(l2.token > l1.token);
        assert_eq!(ids(&mut r, "sem"), ["a", "x1", "x2"]);
        assert_eq!(take(&mut r, "sem", "late", 1_000, 3), None, "n kept");
    }

    /// A replica whose link drops returns by partial resync: the grants, claim, release and
    /// expiry made meanwhile reach it from the backlog as one lease's effects each, and it
    /// ends holding exactly the primary's value.
    fn a_partial_resync_brings_each_leases_effects(kind: Kind) {
        let primary = Server::start(kind);
        let replica = primary.start_replica(&[]);
        let (mut p, mut r) = (primary.conn(), replica.conn());
        take(&mut p, "sem", "a", 60_000, 3).unwrap();
        take(&mut p, "sem", "b", 60_000, 3).unwrap();
        wait_replicas(&mut p, 1);
        let partial = |s: &Server| -> i64 { s.info("stats", "sync_partial_ok").unwrap().parse().unwrap() };
        let partial_before = partial(&primary);
        // Keep the replica away for a moment: it cannot reconnect while it is paused.
        replica.signal("STOP");
        let killed: i64 = redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("replica").query(&mut p).unwrap();
        assert_eq!(killed, 1);
        take(&mut p, "sem", "c", 300, 3).unwrap();
        query(&mut p, &[b"PYLOCK.CONFIRM", b"sem", b"a", b"CLAIM", b"a2"]);
        release(&mut p, "sem", "b");
        take(&mut p, "sem", "d", 60_000, 3).unwrap();
        take(&mut p, "other", "o", 60_000, 5).unwrap();
        wait_until(Duration::from_secs(3), || !stores(&mut p, "sem", "c")).expect("c expired on the primary");
        replica.signal("CONT");
        replica.wait_in_sync();
        wait_replicas(&mut p, 1);
        assert!(partial(&primary) > partial_before, "the replica came back by partial resync");
        for key in ["sem", "other"] {
            assert_eq!(held(&mut r, key), held(&mut p, key), "{key}");
            assert_eq!(dump(&mut r, key), dump(&mut p, key), "{key}");
            assert_eq!(pexpiretime(&mut r, key), pexpiretime(&mut p, key), "{key}");
        }
        assert_eq!(ids(&mut r, "sem"), ["a2", "d"]);
        assert!(!stores(&mut r, "sem", "c"), "the expiry's DROP arrived");
    }

    /// A freed place handed to a waiter whose client is gone in the same moment (its
    /// connection killed, or CLIENT UNBLOCK with TIMEOUT or ERROR, in the transaction that
    /// frees the place) is never lost: the lease it was given is revoked and the place goes
    /// to the next waiter in FIFO order; or, when the answer still reached the client (Valkey
    /// ignores a TIMEOUT unblock of a client it already answered), that client holds it.
    /// Either way every stored lease is one a client received, and the replica and the AOF
    /// end with exactly the primary's leases.
    fn a_place_handed_to_a_vanished_waiter_goes_to_the_next(kind: Kind) {
        let mut primary = Server::start_with(kind, &["--appendonly", "yes", "--appendfsync", "always"]);
        primary.wait_aof_rewrite_done();
        let replica = primary.start_replica(&[]);
        let (mut p, mut r) = (primary.conn(), replica.conn());
        let mut keys = Vec::new();
        for how in ["KILL", "TIMEOUT", "ERROR"] {
            let key = format!("sem-{how}");
            take(&mut p, &key, "h1", 60_000, 2).unwrap();
            take(&mut p, &key, "h2", 60_000, 2).unwrap();
            let (gone, t_gone) = waiter(&primary, &key, "first", 60_000, 2, 20_000);
            wait_waiting(&primary, 1);
            let (_, t_second) = waiter(&primary, &key, "second", 60_000, 2, 20_000);
            wait_waiting(&primary, 2);
            let (_, t_third) = waiter(&primary, &key, "third", 60_000, 2, 20_000);
            wait_waiting(&primary, 3);
            let mut end = redis::cmd("CLIENT");
            match how {
                "KILL" => end.arg("KILL").arg("ID").arg(gone),
                mode => end.arg("UNBLOCK").arg(gone).arg(mode),
            };
            let mut pipe = redis::pipe();
            pipe.atomic().cmd("PYLOCK.RELEASE").arg(&key).arg("h1").add_command(end);
            let _: Value = pipe.query(&mut p).unwrap();
            let first = t_gone.join().unwrap();
            let mut t_second = Some(t_second);
            let holders = if granted(&first).is_some() {
                // The answer reached it: it holds the freed place, the others still wait.
                assert_ne!(how, "KILL", "a killed client received nothing");
                vec!["first", "h2"]
            } else {
                // Its grant was taken back and passed on, in order: second, not third.
                let second = t_second.take().unwrap().join().unwrap();
                assert_eq!(granted(&second).as_deref(), Some("second"), "{how}: {first:?}");
                vec!["h2", "second"]
            };
            wait_until(Duration::from_secs(5), || ids(&mut p, &key) == holders)
                .unwrap_or_else(|_| panic!("{how}: {:?}, want {holders:?}", ids(&mut p, &key)));
            if holders[0] == "h2" {
                assert!(!stores(&mut p, &key, "first"), "{how}: the undelivered lease is gone");
                // Third still waits; the next freed place is its.
                assert_eq!(info(&mut p, &key).unwrap().2, 1, "{how}: third waits");
                release(&mut p, &key, "h2");
                assert_eq!(granted(&t_third.join().unwrap()).as_deref(), Some("third"), "{how}");
                assert_eq!(ids(&mut p, &key), ["second", "third"], "{how}");
            } else {
                release(&mut p, &key, "h2");
                let second = t_second.take().unwrap().join().unwrap();
                assert_eq!(granted(&second).as_deref(), Some("second"), "{how}");
                release(&mut p, &key, "first");
                assert_eq!(granted(&t_third.join().unwrap()).as_deref(), Some("third"), "{how}");
                assert_eq!(ids(&mut p, &key), ["second", "third"], "{how}");
            }
            wait_waiting(&primary, 0);
            keys.push(key);
        }

        // Two places freed in one transaction for the two longest waiters, both killed in it:
        // both places pass to the next two waiters, and no third place appears.
        take(&mut p, "sem-two", "h1", 60_000, 2).unwrap();
        take(&mut p, "sem-two", "h2", 60_000, 2).unwrap();
        let (k1, t_k1) = waiter(&primary, "sem-two", "killed-1", 60_000, 2, 20_000);
        wait_waiting(&primary, 1);
        let (k2, t_k2) = waiter(&primary, "sem-two", "killed-2", 60_000, 2, 20_000);
        wait_waiting(&primary, 2);
        let (_, t_n1) = waiter(&primary, "sem-two", "next-1", 60_000, 2, 20_000);
        wait_waiting(&primary, 3);
        let (_, t_n2) = waiter(&primary, "sem-two", "next-2", 60_000, 2, 20_000);
        wait_waiting(&primary, 4);
        let (_, t_n3) = waiter(&primary, "sem-two", "next-3", 60_000, 2, 3_000);
        wait_waiting(&primary, 5);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("PYLOCK.RELEASE").arg("sem-two").arg("h1")
            .cmd("PYLOCK.RELEASE").arg("sem-two").arg("h2")
            .cmd("CLIENT").arg("KILL").arg("ID").arg(k1)
            .cmd("CLIENT").arg("KILL").arg("ID").arg(k2);
        let _: Value = pipe.query(&mut p).unwrap();
        assert!(t_k1.join().unwrap().is_err() && t_k2.join().unwrap().is_err());
        assert_eq!(granted(&t_n1.join().unwrap()).as_deref(), Some("next-1"));
        assert_eq!(granted(&t_n2.join().unwrap()).as_deref(), Some("next-2"));
        assert_eq!(t_n3.join().unwrap(), Ok(Value::Nil), "no third place");
        assert_eq!(ids(&mut p, "sem-two"), ["next-1", "next-2"]);
        assert!(!stores(&mut p, "sem-two", "killed-"));
        keys.push("sem-two".into());

        // The replica and the AOF hold exactly these leases.
        wait_replicas(&mut p, 1);
        let want: Vec<_> = keys.iter().map(|k| (held(&mut p, k), dump(&mut p, k), pexpiretime(&mut p, k))).collect();
        for (k, w) in keys.iter().zip(&want) {
            assert_eq!(&(held(&mut r, k), dump(&mut r, k), pexpiretime(&mut r, k)), w, "replica: {k}");
        }
        drop(p);
        primary.kill();
        primary.restart_with(&[]);
        let mut p = primary.conn();
        for (k, w) in keys.iter().zip(&want) {
            assert_eq!(&(held(&mut p, k), dump(&mut p, k), pexpiretime(&mut p, k)), w, "AOF: {k}");
        }
    }

    /// SWAPDB moves semaphores to another database number without a per-key event. A lease
    /// that passes its deadline there never counts (INFO, ACQUIRE; on the replica too), and
    /// still leaves the stored value from the module's timer as its own expiry, which the
    /// replica applies: the value on both is the primary's, without the key being touched.
    fn after_swapdb_a_dead_lease_never_counts_and_leaves_by_the_timer(kind: Kind) {
        let primary = Server::start(kind);
        let replica = primary.start_replica(&[]);
        let (mut p, mut r) = (primary.conn(), replica.conn());
        // One semaphore in each database, at different keys, so no entry armed before the
        // swap happens to name the key that now sits in its database.
        take(&mut p, "in-0", "short-0", 700, 3).unwrap();
        take(&mut p, "in-0", "long-0", 60_000, 3).unwrap();
        redis::cmd("SELECT").arg(1).query::<()>(&mut p).unwrap();
        take(&mut p, "in-1", "short-1", 700, 3).unwrap();
        take(&mut p, "in-1", "long-1", 60_000, 3).unwrap();
        redis::cmd("SWAPDB").arg(0).arg(1).query::<()>(&mut p).unwrap();
        wait_replicas(&mut p, 1);
        // Now "in-0" is in database 1 and "in-1" in database 0.
        for (db, key, short, long) in [(1, "in-0", "short-0", "long-0"), (0, "in-1", "short-1", "long-1")] {
            for con in [&mut p, &mut r] {
                redis::cmd("SELECT").arg(db).query::<()>(con).unwrap();
            }
            wait_until(Duration::from_secs(5), || {
                info(&mut p, key).is_some_and(|i| i.1 == 1) && info(&mut r, key).is_some_and(|i| i.1 == 1)
            })
            .unwrap_or_else(|_| panic!("{key}: the dead lease still counts: {:?}", info(&mut p, key)));
            assert_eq!(ids(&mut p, key), [long]);
            assert_eq!(ids(&mut r, key), [long]);
            // No longer held by it: WATCH answers at once, as for any id not holding the key.
            assert_eq!(query(&mut p, &[b"PYLOCK.WATCH", key.as_bytes(), short.as_bytes()]), Value::BulkString(b"notowned".to_vec()));
            // The timer removes it, as a replicated expiry: no command touches the key.
            wait_until(Duration::from_secs(5), || !stores(&mut p, key, short))
                .unwrap_or_else(|_| panic!("{key}: {short} still stored in database {db} after SWAPDB"));
            wait_replicas(&mut p, 1);
            assert!(!stores(&mut r, key, short), "{key}: the replica applied the expiry");
            assert_eq!(dump(&mut r, key), dump(&mut p, key), "{key}");
            // Two places are free, not one.
            assert!(take(&mut p, key, "x", 60_000, 3).is_some(), "{key}");
            assert!(take(&mut p, key, "y", 60_000, 3).is_some(), "{key}");
            assert_eq!(take(&mut p, key, "z", 60_000, 3), None, "{key}");
        }
    }
}
