//! Semaphores: `PYLOCK.ACQUIRE … LIMIT n`, up to n live leases on one key, each with its own
//! id, fencing token and deadline; FIFO hand-off of freed places; per-lease expiry from the
//! module's timer; INFO's shape; LIMITMISMATCH; replication, RDB, AOF and a promoted replica
//! holding every lease; generic commands. On Redis 7.0 and Valkey.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::dbsize;
use testkit::redis::{self, Value};
use testkit::{pexpiretime, query, query_err, server_tests, wait_until, Lease, Server};

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

fn ids(i: &SemInfo) -> Vec<String> {
    i.3.iter().map(|l| l.0.clone()).collect()
}

fn wait_replicas(con: &mut redis::Connection, n: i64) {
    let acked: i64 = redis::cmd("WAIT").arg(n).arg(5000).query(con).unwrap();
    assert_eq!(acked, n, "replicas did not acknowledge");
}

/// A client blocked in `ACQUIRE … BLOCK` on its own connection; its reply comes back on join.
fn blocked_take(
    s: &Server,
    key: &str,
    id: &str,
    n: u32,
    block_ms: i64,
) -> thread::JoinHandle<Value> {
    let mut con = s.conn();
    let (key, id) = (key.to_string(), id.to_string());
    thread::spawn(move || {
        query(
            &mut con,
            &[
                b"PYLOCK.ACQUIRE",
                key.as_bytes(),
                b"10000",
                b"LEASE",
                id.as_bytes(),
                b"BLOCK",
                block_ms.to_string().as_bytes(),
                b"LIMIT",
                n.to_string().as_bytes(),
            ],
        )
    })
}

/// Waits until `n` clients wait on the server (`INFO pylock` `waiting`).
fn wait_waiting(s: &Server, n: i64) {
    wait_until(Duration::from_secs(5), || {
        s.info("pylock", "pylock_waiting").as_deref() == Some(&n.to_string())
    })
    .unwrap_or_else(|_| panic!("never {n} waiting"));
}

server_tests! {
    /// Up to n leases, each with its own id, increasing token and deadline; the same LEASE
    /// renews; the n + 1st gets nil and nothing changes.
    fn up_to_n_leases_each_with_its_own_id_token_and_deadline(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let a = take(&mut con, "sem", "a", 10_000, 3).expect("a");
        let b = take(&mut con, "sem", "b", 20_000, 3).expect("b");
        let c = take(&mut con, "sem", "c", 30_000, 3).expect("c");
        assert!(a.token < b.token && b.token < c.token, "{a:?} {b:?} {c:?}");
        assert_eq!(take(&mut con, "sem", "d", 30_000, 3), None, "full");
        // Server-made ids too.
        let v = query(&mut con, &[b"PYLOCK.ACQUIRE", b"sem", b"1000", b"LIMIT", b"3"]);
        assert_eq!(v, Value::Nil);
        let i = info(&mut con, "sem").expect("held");
        assert_eq!((i.0, i.1, i.2), (3, 3, 0));
        assert_eq!(ids(&i), ["a", "b", "c"], "earliest deadline first");
        assert_eq!(i.3[1].1, b.token);
        // PTTL is the latest lease's deadline.
        let pttl: i64 = redis::cmd("PTTL").arg("sem").query(&mut con).unwrap();
        assert!(pttl > 29_000 && pttl <= 30_000, "{pttl}");
        // The same LEASE renews, keeping its token; now it is the latest.
        let a2 = take(&mut con, "sem", "a", 40_000, 3).expect("renewed");
        assert_eq!(a2.token, a.token);
        let i = info(&mut con, "sem").unwrap();
        assert_eq!(ids(&i), ["b", "c", "a"]);
        let pttl: i64 = redis::cmd("PTTL").arg("sem").query(&mut con).unwrap();
        assert!(pttl > 39_000, "{pttl}");
        let t: String = redis::cmd("TYPE").arg("sem").query(&mut con).unwrap();
        assert_eq!(t, "pylock-lk");
    }

    /// CONFIRM, EXTEND, RELEASE act on one lease by id: NOTOWNED for an id not among them,
    /// NOTHELD when no lease holds the key.
    fn confirm_extend_and_release_act_on_one_lease(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let a = take(&mut con, "sem", "a", 10_000, 2).unwrap();
        let b = take(&mut con, "sem", "b", 10_000, 2).unwrap();
        let v = Lease::from_value(&query(&mut con, &[b"PYLOCK.CONFIRM", b"sem", b"b"]));
        assert_eq!((v.id_str(), v.token), ("b", b.token));
        let v = Lease::from_value(&query(&mut con, &[b"PYLOCK.CONFIRM", b"sem", b"a", b"EXTEND", b"50000"]));
        assert_eq!(v.token, a.token);
        assert!(v.ttl_ms > 49_000);
        assert!(query_err(&mut con, &[b"PYLOCK.CONFIRM", b"sem", b"zz"]).starts_with("NOTOWNED"));
        assert!(query_err(&mut con, &[b"PYLOCK.RELEASE", b"sem", b"zz"]).starts_with("NOTOWNED"));
        assert_eq!(release(&mut con, "sem", "a"), Value::Int(1));
        assert!(query_err(&mut con, &[b"PYLOCK.RELEASE", b"sem", b"a"]).starts_with("NOTOWNED"));
        assert_eq!(ids(&info(&mut con, "sem").unwrap()), ["b"]);
        // PTTL follows the latest remaining lease.
        let pttl: i64 = redis::cmd("PTTL").arg("sem").query(&mut con).unwrap();
        assert!(pttl <= 10_000, "{pttl}");
        assert_eq!(release(&mut con, "sem", "b"), Value::Int(1));
        assert_eq!(dbsize(&mut con), 0, "the key goes with its last lease");
        assert!(query_err(&mut con, &[b"PYLOCK.RELEASE", b"sem", b"b"]).starts_with("NOTHELD"));
        assert!(query_err(&mut con, &[b"PYLOCK.CONFIRM", b"sem", b"b"]).starts_with("NOTHELD"));
        assert_eq!(info(&mut con, "sem"), None);
    }

    /// Another n while a lease lives: LIMITMISMATCH naming the key's n, nothing changes;
    /// a lock asked for as a semaphore and back.
    fn another_n_is_limitmismatch_and_changes_nothing(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        take(&mut con, "sem", "a", 10_000, 3).unwrap();
        let before = info(&mut con, "sem").unwrap();
        for n in ["2", "4", "1"] {
            let e = query_err(&mut con, &[b"PYLOCK.ACQUIRE", b"sem", b"1000", b"LEASE", b"x", b"LIMIT", n.as_bytes()]);
            assert_eq!(e, "LIMITMISMATCH the key admits 3 leases at once", "{n}");
        }
        let e = query_err(&mut con, &[b"PYLOCK.ACQUIRE", b"sem", b"1000", b"LEASE", b"a"]);
        assert!(e.starts_with("LIMITMISMATCH"), "{e}");
        assert_eq!(info(&mut con, "sem").unwrap().3.len(), before.3.len());
        assert_eq!(info(&mut con, "sem").unwrap().3[0].1, before.3[0].1);
        // A plain lock refuses LIMIT 2.
        let v = query(&mut con, &[b"PYLOCK.ACQUIRE", b"lock", b"10000", b"LEASE", b"l"]);
        assert_ne!(v, Value::Nil);
        let e = query_err(&mut con, &[b"PYLOCK.ACQUIRE", b"lock", b"1000", b"LIMIT", b"2"]);
        assert_eq!(e, "LIMITMISMATCH the key admits 1 lease at once");
        // LIMIT 1 is a lock: INFO keeps a lock's reply.
        let v = query(&mut con, &[b"PYLOCK.ACQUIRE", b"one", b"10000", b"LEASE", b"o", b"LIMIT", b"1"]);
        assert_ne!(v, Value::Nil);
        let v = query(&mut con, &[b"PYLOCK.INFO", b"one"]);
        assert!(matches!(&v, Value::Array(a) if a[0] == Value::BulkString(b"lease".to_vec())), "{v:?}");
        // Once every lease is gone, the key takes a new n.
        release(&mut con, "sem", "a");
        assert!(take(&mut con, "sem", "a", 1000, 5).is_some());
        assert_eq!(info(&mut con, "sem").unwrap().0, 5);
    }

    /// Bad LIMIT values: the contract's errors, and no key made.
    fn bad_limits_are_refused_with_no_change(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        for (n, want) in [
            ("0", "ERR invalid limit"),
            ("-1", "ERR invalid limit"),
            ("100001", "ERR invalid limit"),
            ("x", "ERR value is not an integer or out of range"),
            ("1.5", "ERR value is not an integer or out of range"),
        ] {
            assert_eq!(query_err(&mut con, &[b"PYLOCK.ACQUIRE", b"sem", b"1000", b"LIMIT", n.as_bytes()]), want, "{n}");
        }
        assert_eq!(query_err(&mut con, &[b"PYLOCK.ACQUIRE", b"sem", b"1000", b"LIMIT"]), "ERR syntax error");
        assert_eq!(
            query_err(&mut con, &[b"PYLOCK.ACQUIRE", b"sem", b"1000", b"LIMIT", b"2", b"LIMIT", b"2"]),
            "ERR syntax error"
        );
        assert_eq!(dbsize(&mut con), 0);
        assert!(take(&mut con, "sem", "a", 1000, 100_000).is_some(), "the largest n");
    }

    /// Each lease ends at its own deadline, from the module's timer: the others stay, the
    /// key's expiry follows the latest, and the last one takes the key with it.
    fn each_lease_expires_at_its_own_deadline(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        take(&mut con, "sem", "short", 150, 3).unwrap();
        take(&mut con, "sem", "long", 60_000, 3).unwrap();
        wait_until(Duration::from_secs(3), || {
            info(&mut con, "sem").is_some_and(|i| i.3.len() == 1)
        })
        .expect("the short lease expired");
        assert_eq!(ids(&info(&mut con, "sem").unwrap()), ["long"]);
        // A lease past its deadline never counts: a third and fourth fit.
        assert!(take(&mut con, "sem", "x", 60_000, 3).is_some());
        assert!(take(&mut con, "sem", "y", 60_000, 3).is_some());
        assert_eq!(take(&mut con, "sem", "z", 60_000, 3), None);
        assert!(query_err(&mut con, &[b"PYLOCK.CONFIRM", b"sem", b"short"]).starts_with("NOTOWNED"));
        // Expiry of every lease removes the key.
        take(&mut con, "k2", "p", 100, 2).unwrap();
        take(&mut con, "k2", "q", 200, 2).unwrap();
        wait_until(Duration::from_secs(3), || {
            redis::cmd("EXISTS").arg("k2").query::<i64>(&mut con).unwrap() == 0
        })
        .expect("the key went with its last lease");
    }

    /// Waiters are served FIFO: each freed place (release, expiry, deletion) goes to the
    /// longest waiter, several places to several waiters in order; a new caller cannot
    /// take a place first.
    fn freed_places_go_to_the_longest_waiters_in_order(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        take(&mut con, "sem", "a", 60_000, 2).unwrap();
        take(&mut con, "sem", "b", 60_000, 2).unwrap();
        let w1 = blocked_take(&s, "sem", "w1", 2, 5000);
        wait_waiting(&s, 1);
        let w2 = blocked_take(&s, "sem", "w2", 2, 5000);
        wait_waiting(&s, 2);
        let w3 = blocked_take(&s, "sem", "w3", 2, 5000);
        wait_waiting(&s, 3);
        assert_eq!(info(&mut con, "sem").unwrap().2, 3, "waiters");
        // One release: one place, to the first.
        assert_eq!(release(&mut con, "sem", "a"), Value::Int(1));
        let l1 = Lease::from_value(&w1.join().unwrap());
        assert_eq!(l1.id_str(), "w1");
        // A newcomer finds no place while waiters wait.
        assert_eq!(take(&mut con, "sem", "new", 1000, 2), None);
        // Two places at once (DEL of the key): the next two, in order.
        let _: i64 = redis::cmd("DEL").arg("sem").query(&mut con).unwrap();
        let l2 = Lease::from_value(&w2.join().unwrap());
        let l3 = Lease::from_value(&w3.join().unwrap());
        assert_eq!((l2.id_str(), l3.id_str()), ("w2", "w3"));
        assert!(l1.token < l2.token && l2.token < l3.token);
        let i = info(&mut con, "sem").unwrap();
        let mut held = ids(&i);
        held.sort();
        assert_eq!(held, ["w2", "w3"]);
    }

    /// A lease's expiry passes its place to the longest waiter, from the timer.
    fn an_expiring_lease_passes_its_place_to_the_longest_waiter(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        take(&mut con, "sem", "long", 60_000, 2).unwrap();
        take(&mut con, "sem", "short", 300, 2).unwrap();
        let started = Instant::now();
        let w = blocked_take(&s, "sem", "w", 2, 5000);
        let l = Lease::from_value(&w.join().unwrap());
        assert_eq!(l.id_str(), "w");
        assert!(started.elapsed() < Duration::from_millis(2500), "{:?}", started.elapsed());
        let mut held = ids(&info(&mut con, "sem").unwrap());
        held.sort();
        assert_eq!(held, ["long", "w"]);
    }

    /// CLAIM keeps the place, with a new token; the old id gets CLAIMED; WATCH ends per lease
    /// with its reason.
    fn claim_and_watch_act_on_one_lease(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let a = take(&mut con, "sem", "a", 10_000, 2).unwrap();
        take(&mut con, "sem", "b", 10_000, 2).unwrap();
        let n = Lease::from_value(&query(&mut con, &[b"PYLOCK.CONFIRM", b"sem", b"a", b"CLAIM", b"a2"]));
        assert_eq!(n.id_str(), "a2");
        assert!(n.token > a.token);
        // A retry of the claim: the same token.
        let again = Lease::from_value(&query(&mut con, &[b"PYLOCK.CONFIRM", b"sem", b"a", b"CLAIM", b"a2"]));
        assert_eq!(again.token, n.token);
        assert!(query_err(&mut con, &[b"PYLOCK.CONFIRM", b"sem", b"a"]).starts_with("CLAIMED"));
        assert!(query_err(&mut con, &[b"PYLOCK.CONFIRM", b"sem", b"a", b"CLAIM", b"a3"]).starts_with("CLAIMED"));
        // Still two places used, not three: a claim keeps its place.
        assert_eq!(take(&mut con, "sem", "c", 1000, 2), None);
        // The new id may not be another live lease's.
        assert_eq!(
            query_err(&mut con, &[b"PYLOCK.CONFIRM", b"sem", b"a2", b"CLAIM", b"b"]),
            "ERR invalid lease id"
        );
        // WATCH: at once for ids not held; per lease when it ends.
        let v = query(&mut con, &[b"PYLOCK.WATCH", b"sem", b"a"]);
        assert_eq!(v, Value::BulkString(b"claimed".to_vec()));
        let v = query(&mut con, &[b"PYLOCK.WATCH", b"sem", b"zz"]);
        assert_eq!(v, Value::BulkString(b"notowned".to_vec()));
        let mut wb = s.conn();
        let watch_b = thread::spawn(move || query(&mut wb, &[b"PYLOCK.WATCH", b"sem", b"b", b"TIMEOUT", b"5000"]));
        let mut wa = s.conn();
        let watch_a2 = thread::spawn(move || query(&mut wa, &[b"PYLOCK.WATCH", b"sem", b"a2", b"TIMEOUT", b"700"]));
        wait_until(Duration::from_secs(5), || s.info("pylock", "pylock_watching").as_deref() == Some("2")).unwrap();
        assert_eq!(release(&mut con, "sem", "b"), Value::Int(1));
        assert_eq!(watch_b.join().unwrap(), Value::BulkString(b"released".to_vec()));
        // The other lease's watcher is not ended by it.
        assert_eq!(watch_a2.join().unwrap(), Value::Nil, "a2 still holds after TIMEOUT");
        // Expiry of one lease: `expired`.
        take(&mut con, "sem2", "e", 300, 2).unwrap();
        take(&mut con, "sem2", "f", 60_000, 2).unwrap();
        let v = query(&mut con, &[b"PYLOCK.WATCH", b"sem2", b"e", b"TIMEOUT", b"5000"]);
        assert_eq!(v, Value::BulkString(b"expired".to_vec()));
    }

    /// A replica holds every lease with its id, token and deadline, and n; each change
    /// replicates as one lease's effect; a promoted replica continues above every token.
    fn a_replica_and_a_promoted_replica_hold_every_lease(kind: Kind) {
        let primary = Server::start(kind);
        let replica = primary.start_replica(&[]);
        let (mut p, mut r) = (primary.conn(), replica.conn());
        take(&mut p, "sem", "a", 60_000, 3).unwrap();
        take(&mut p, "sem", "b", 30_000, 3).unwrap();
        take(&mut p, "sem", "c", 400, 3).unwrap();
        query(&mut p, &[b"PYLOCK.CONFIRM", b"sem", b"b", b"CLAIM", b"b2"]);
        query(&mut p, &[b"PYLOCK.CONFIRM", b"sem", b"a", b"EXTEND", b"90000"]);
        wait_replicas(&mut p, 1);
        let strip = |mut i: SemInfo| {
            // ttl is read a moment apart on each server; ids, tokens, order and n must agree.
            i.3.iter_mut().for_each(|l| l.2 = 0);
            i
        };
        assert_eq!(strip(info(&mut r, "sem").unwrap()), strip(info(&mut p, "sem").unwrap()));
        assert_eq!(pexpiretime(&mut r, "sem"), pexpiretime(&mut p, "sem"));
        // The short lease expires on the primary: the replica follows by its effect, and never
        // counts it past its deadline meanwhile.
        wait_until(Duration::from_secs(3), || info(&mut r, "sem").is_some_and(|i| i.1 == 2)).unwrap();
        wait_until(Duration::from_secs(3), || {
            let got: Value = redis::cmd("DUMP").arg("sem").query(&mut r).unwrap();
            let want: Value = redis::cmd("DUMP").arg("sem").query(&mut p).unwrap();
            got == want
        })
        .expect("the same value on both");
        // Promotion: the replica holds both leases and grants above their tokens.
        let max = info(&mut p, "sem").unwrap().3.iter().map(|l| l.1).max().unwrap();
        redis::cmd("REPLICAOF").arg("NO").arg("ONE").query::<()>(&mut r).unwrap();
        let d = take(&mut r, "sem", "d", 1000, 3).expect("a free place");
        assert!(d.token > max);
        assert_eq!(take(&mut r, "sem", "e", 1000, 3), None, "n kept");
        let mut held = ids(&info(&mut r, "sem").unwrap());
        held.sort();
        assert_eq!(held, ["a", "b2", "d"]);
    }

    /// RDB (DEBUG RELOAD and a restart) and AOF (with and without the RDB preamble) keep every
    /// lease and n.
    fn rdb_and_aof_restarts_keep_every_lease(kind: Kind) {
        for (name, extra) in [
            ("rdb", vec![]),
            ("aof-preamble", vec!["--appendonly", "yes", "--aof-use-rdb-preamble", "yes"]),
            ("aof-plain", vec!["--appendonly", "yes", "--aof-use-rdb-preamble", "no"]),
        ] {
            let mut s = Server::start_with(kind, &extra);
            let mut con = s.conn();
            take(&mut con, "sem", "a", 60_000, 4).unwrap();
            take(&mut con, "sem", "b", 50_000, 4).unwrap();
            query(&mut con, &[b"PYLOCK.CONFIRM", b"sem", b"b", b"CLAIM", b"b2"]);
            take(&mut con, "sem", "c", 70_000, 4).unwrap();
            release(&mut con, "sem", "a");
            take(&mut con, "lock", "l", 60_000, 1).unwrap();
            let strip = |mut i: SemInfo| {
                i.3.iter_mut().for_each(|l| l.2 = 0);
                i
            };
            let before = strip(info(&mut con, "sem").unwrap());
            let expiry = pexpiretime(&mut con, "sem");
            if name != "rdb" {
                let _: Value = redis::cmd("BGREWRITEAOF").query(&mut con).unwrap();
                s.wait_aof_rewrite_done();
                take(&mut con, "sem", "after-rewrite", 65_000, 4).unwrap();
            } else {
                redis::cmd("DEBUG").arg("RELOAD").query::<()>(&mut con).unwrap();
                assert_eq!(strip(info(&mut con, "sem").unwrap()), before, "{name}: DEBUG RELOAD");
                redis::cmd("SAVE").query::<()>(&mut con).unwrap();
            }
            let want = strip(info(&mut con, "sem").unwrap());
            s.kill();
            s.restart_with(&extra);
            let mut con = s.conn();
            let got = strip(info(&mut con, "sem").expect("held after restart"));
            assert_eq!(got, want, "{name}");
            assert_eq!(got.0, 4);
            if name == "rdb" {
                assert_eq!(pexpiretime(&mut con, "sem"), expiry, "{name}");
            }
            assert!(query_err(&mut con, &[b"PYLOCK.CONFIRM", b"sem", b"b"]).starts_with("CLAIMED"), "{name}");
            let t = take(&mut con, "sem", "z", 1000, 4);
            if name == "rdb" {
                let t = t.expect("a free place");
                assert!(got.3.iter().all(|l| l.1 < t.token), "{name}: tokens continue above");
            }
        }
    }

    /// A semaphore's DUMP restores every lease (with RESTORE's TTL not extending any); a bad
    /// payload gets `ERR Bad data format` and makes no key; COPY is refused; PERSIST and
    /// EXPIRE do not extend a lease.
    fn dump_restore_copy_and_generic_commands(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        take(&mut con, "sem", "a", 60_000, 3).unwrap();
        take(&mut con, "sem", "b", 300, 3).unwrap();
        let payload: Vec<u8> = redis::cmd("DUMP").arg("sem").query(&mut con).unwrap();
        let _: () = redis::cmd("RESTORE").arg("copy").arg(0).arg(&payload).query(&mut con).unwrap();
        let strip = |mut i: SemInfo| {
            i.3.iter_mut().for_each(|l| l.2 = 0);
            i
        };
        assert_eq!(strip(info(&mut con, "copy").unwrap()), strip(info(&mut con, "sem").unwrap()));
        // Truncations of the payload (with a valid CRC) are refused and leave no key.
        let dump = pylock_check::payload::Dump::parse(&payload).unwrap();
        let keys = dbsize(&mut con);
        for cut in [dump.body.len() - 1, dump.body.len() - 2, dump.body.len() - 10, 40] {
            let sealed = dump.seal(&dump.body[..cut]);
            let err = redis::cmd("RESTORE").arg("bad").arg(0).arg(&sealed).query::<Value>(&mut con).unwrap_err();
            assert_eq!(testkit::error_text(&err), "ERR Bad data format", "cut {cut}");
        }
        assert_eq!(dbsize(&mut con), keys);
        let err = redis::cmd("COPY").arg("sem").arg("other").query::<Value>(&mut con).unwrap_err();
        assert!(testkit::error_text(&err).starts_with("ERR"), "{err}");
        // PERSIST and a later EXPIRE do not extend the short lease.
        let _: i64 = redis::cmd("PERSIST").arg("sem").query(&mut con).unwrap();
        let _: i64 = redis::cmd("PEXPIRE").arg("sem").arg(600_000).query(&mut con).unwrap();
        wait_until(Duration::from_secs(3), || info(&mut con, "sem").is_some_and(|i| i.1 == 1)).unwrap();
        assert_eq!(ids(&info(&mut con, "sem").unwrap()), ["a"]);
        // FLUSHALL serves waiters at once.
        take(&mut con, "full", "x", 60_000, 2).unwrap();
        take(&mut con, "full", "y", 60_000, 2).unwrap();
        let w = blocked_take(&s, "full", "w", 2, 5000);
        wait_waiting(&s, 1);
        let _: () = redis::cmd("FLUSHALL").query(&mut con).unwrap();
        assert_eq!(Lease::from_value(&w.join().unwrap()).id_str(), "w");
    }

    /// After a restart from RDB and on a promoted replica, the module's timer again removes
    /// each lease at its deadline (its id leaves the stored value), not only when the key is
    /// next acquired.
    fn leases_expire_from_the_timer_after_a_restart_and_a_promotion(kind: Kind) {
        let holds = |con: &mut redis::Connection, id: &[u8]| -> bool {
            let payload: Vec<u8> = redis::cmd("DUMP").arg("sem").query(con).unwrap();
            payload.windows(id.len()).any(|w| w == id)
        };
        let mut s = Server::start(kind);
        let mut con = s.conn();
        take(&mut con, "sem", "long-lease", 60_000, 2).unwrap();
        take(&mut con, "sem", "short-lease", 1_500, 2).unwrap();
        redis::cmd("SAVE").query::<()>(&mut con).unwrap();
        s.kill();
        s.restart_with(&[]);
        let mut con = s.conn();
        assert!(holds(&mut con, b"short-lease"), "loaded with both");
        wait_until(Duration::from_secs(5), || !holds(&mut con, b"short-lease"))
            .expect("the timer removed the short lease after the restart");
        assert!(holds(&mut con, b"long-lease"));

        let primary = Server::start(kind);
        let replica = primary.start_replica(&[]);
        let (mut p, mut r) = (primary.conn(), replica.conn());
        take(&mut p, "sem", "long-lease", 60_000, 2).unwrap();
        take(&mut p, "sem", "short-lease", 1_000, 2).unwrap();
        wait_replicas(&mut p, 1);
        redis::cmd("REPLICAOF").arg("NO").arg("ONE").query::<()>(&mut r).unwrap();
        drop(primary);
        assert!(holds(&mut r, b"short-lease"));
        wait_until(Duration::from_secs(5), || !holds(&mut r, b"short-lease"))
            .expect("the promoted replica's timer removed the short lease");
        assert_eq!(ids(&info(&mut r, "sem").unwrap()), ["long-lease"]);
    }

    /// RENAME carries every lease and n unchanged; an EXPIRE in the past deletes the key and
    /// serves its waiters at once; SET over it answers its waiters WRONGTYPE.
    fn rename_expire_and_set_on_a_semaphore(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        take(&mut con, "sem", "a", 60_000, 2).unwrap();
        take(&mut con, "sem", "b", 60_000, 2).unwrap();
        let strip = |mut i: SemInfo| {
            i.3.iter_mut().for_each(|l| l.2 = 0);
            i
        };
        let before = strip(info(&mut con, "sem").unwrap());
        let _: () = redis::cmd("RENAME").arg("sem").arg("sem2").query(&mut con).unwrap();
        assert_eq!(strip(info(&mut con, "sem2").unwrap()), before);
        assert_eq!(info(&mut con, "sem"), None);
        // An EXPIRE in the past ends every lease and serves the waiters at once.
        let w = blocked_take(&s, "sem2", "w", 2, 5000);
        wait_waiting(&s, 1);
        let _: i64 = redis::cmd("PEXPIREAT").arg("sem2").arg(1).query(&mut con).unwrap();
        assert_eq!(Lease::from_value(&w.join().unwrap()).id_str(), "w");
        // SET over a full semaphore (w, which got its place, and x): its waiter is answered
        // WRONGTYPE.
        take(&mut con, "sem2", "x", 60_000, 2).unwrap();
        let mut wc = s.conn();
        let w = thread::spawn(move || {
            redis::cmd("PYLOCK.ACQUIRE")
                .arg("sem2")
                .arg(1000)
                .arg("BLOCK")
                .arg(5000)
                .arg("LIMIT")
                .arg(2)
                .query::<Value>(&mut wc)
                .map_err(|e| testkit::error_text(&e))
        });
        wait_waiting(&s, 1);
        let _: () = redis::cmd("SET").arg("sem2").arg("v").query(&mut con).unwrap();
        let r = w.join().unwrap();
        assert!(matches!(&r, Err(e) if e.starts_with("WRONGTYPE")), "{r:?}");
    }
}
