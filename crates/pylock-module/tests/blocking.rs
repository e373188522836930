//! Fair blocking acquire (`PYLOCK.ACQUIRE … BLOCK ms`) against real servers: FIFO hand-off on
//! release and on expiry, timeouts, disconnects, CLIENT UNBLOCK, replication of hand-offs,
//! and mutual exclusion under contention.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use testkit::redis::{self, Value};
use testkit::{
    acquire, holder, pexpiretime, query, query_err, server_tests, wait_until, Lease, Server,
};

fn waiters(con: &mut redis::Connection, key: &str) -> i64 {
    holder(con, key).map_or(0, |h| h.waiters)
}

fn waiting_total(s: &Server) -> i64 {
    s.info("pylock", "pylock_waiting").unwrap().parse().unwrap()
}

/// Starts a client that blocks on `key`; its reply arrives on the returned channel.
fn spawn_waiter(
    s: &Server,
    key: &str,
    ttl: i64,
    lease: &str,
    block_ms: i64,
) -> mpsc::Receiver<(Value, Instant)> {
    let mut con = s.conn();
    let (tx, rx) = mpsc::channel();
    let (key, lease) = (key.to_string(), lease.to_string());
    thread::spawn(move || {
        let v = query(
            &mut con,
            &[
                b"PYLOCK.ACQUIRE",
                key.as_bytes(),
                ttl.to_string().as_bytes(),
                b"LEASE",
                lease.as_bytes(),
                b"BLOCK",
                block_ms.to_string().as_bytes(),
            ],
        );
        let _ = tx.send((v, Instant::now()));
    });
    rx
}

/// Waits until the lock at `key` has `n` waiters.
fn until_waiters(con: &mut redis::Connection, key: &str, n: i64) {
    wait_until(Duration::from_secs(5), || waiters(con, key) == n)
        .unwrap_or_else(|_| panic!("expected {n} waiters, have {}", waiters(con, key)));
}

server_tests! {
    fn block_on_a_free_lock_grants_at_once(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let v = query(&mut con, &[b"PYLOCK.ACQUIRE", b"k", b"5000", b"BLOCK", b"0"]);
        assert_eq!(Lease::from_value(&v).ttl_ms, 5000);
    }

    fn release_hands_off_to_the_waiter_before_anyone_else(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let held = acquire(&mut con, "k", 60_000).unwrap();
        let rx = spawn_waiter(&s, "k", 7000, "waiter", 10_000);
        until_waiters(&mut con, "k", 1);
        assert_eq!(waiting_total(&s), 1);
        // Release and a fresh ACQUIRE in one transaction: nothing can run between them, and
        // the fresh caller still loses, because the release handed the lock over.
        let replies: Vec<Value> = redis::pipe()
            .atomic()
            .cmd("PYLOCK.RELEASE").arg("k").arg(&held.id)
            .cmd("PYLOCK.ACQUIRE").arg("k").arg(1000)
            .query(&mut con)
            .unwrap();
        assert_eq!(replies, vec![Value::Int(1), Value::Nil]);
        let (v, _) = rx.recv_timeout(Duration::from_secs(5)).expect("waiter answered");
        let granted = Lease::from_value(&v);
        assert_eq!(granted.id, b"waiter", "the waiter's own LEASE");
        assert!(granted.token > held.token);
        assert!(granted.ttl_ms > 6000 && granted.ttl_ms <= 7000, "the waiter's own ttl: {}", granted.ttl_ms);
        let h = holder(&mut con, "k").unwrap();
        assert_eq!((h.lease.id, h.lease.token, h.waiters), (granted.id, granted.token, 0));
        assert_eq!(waiting_total(&s), 0);
    }

    fn fifty_waiters_are_served_in_arrival_order(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let first = acquire(&mut con, "k", 60_000).unwrap();
        let mut waiters_rx = Vec::new();
        for i in 0..50 {
            waiters_rx.push(spawn_waiter(&s, "k", 60_000, &format!("w{i:02}"), 30_000));
            until_waiters(&mut con, "k", i + 1);
        }
        let mut current = first;
        for (i, rx) in waiters_rx.iter().enumerate() {
            assert_eq!(query(&mut con, &[b"PYLOCK.RELEASE", b"k", &current.id]), Value::Int(1));
            let (v, _) = rx.recv_timeout(Duration::from_secs(5)).unwrap_or_else(|_| panic!("w{i:02} not served"));
            let next = Lease::from_value(&v);
            assert_eq!(next.id_str(), format!("w{i:02}"), "served out of order");
            assert!(next.token > current.token);
            assert_eq!(waiters(&mut con, "k"), 49 - i as i64);
            current = next;
        }
    }

    fn expiry_hands_off_promptly(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let held = acquire(&mut con, "k", 300).unwrap();
        let deadline = pexpiretime(&mut con, "k");
        let rx = spawn_waiter(&s, "k", 5000, "next", 10_000);
        let (v, at) = rx.recv_timeout(Duration::from_secs(5)).expect("handed over on expiry");
        let got = Lease::from_value(&v);
        assert!(got.token > held.token);
        let at_ms = now_ms() - at.elapsed().as_millis() as i64;
        let late = at_ms - deadline;
        // The target is a few ms; the bound leaves room for a loaded test machine.
        assert!((-5..200).contains(&late), "granted {late} ms after the deadline");
        assert_eq!(holder(&mut con, "k").unwrap().lease.id, b"next");
    }

    fn a_timed_out_waiter_gets_nil_and_leaves(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let held = acquire(&mut con, "k", 60_000).unwrap();
        let contended_before: i64 = s.info("pylock", "pylock_contended").unwrap().parse().unwrap();
        let start = Instant::now();
        let v = query(&mut con, &[b"PYLOCK.ACQUIRE", b"k", b"1000", b"BLOCK", b"150"]);
        let waited = start.elapsed();
        assert_eq!(v, Value::Nil);
        assert!(waited >= Duration::from_millis(140), "returned after {waited:?}");
        assert_eq!(waiters(&mut con, "k"), 0);
        assert_eq!(waiting_total(&s), 0);
        let contended: i64 = s.info("pylock", "pylock_contended").unwrap().parse().unwrap();
        assert_eq!(contended, contended_before + 1);
        // Nobody is granted the lock after release.
        query(&mut con, &[b"PYLOCK.RELEASE", b"k", &held.id]);
        assert_eq!(holder(&mut con, "k"), None);
    }

    fn a_disconnected_waiter_leaves_and_is_never_granted(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let held = acquire(&mut con, "k", 60_000).unwrap();
        // A raw socket, so the test can close it while the command blocks.
        let sock = std::net::TcpStream::connect(("127.0.0.1", s.port())).unwrap();
        use std::io::Write;
        (&sock).write_all(b"*7\r\n$14\r\nPYLOCK.ACQUIRE\r\n$1\r\nk\r\n$4\r\n5000\r\n$5\r\nLEASE\r\n$4\r\ngone\r\n$5\r\nBLOCK\r\n$1\r\n0\r\n").unwrap();
        until_waiters(&mut con, "k", 1);
        drop(sock);
        wait_until(Duration::from_secs(5), || waiting_total(&s) == 0).expect("disconnected waiter left");
        assert_eq!(waiters(&mut con, "k"), 0);
        query(&mut con, &[b"PYLOCK.RELEASE", b"k", &held.id]);
        assert_eq!(holder(&mut con, "k"), None, "the lock went to a client that is gone");
        let again = acquire(&mut con, "k", 1000).expect("the lock is free for others");
        assert!(again.token > held.token);
    }

    fn client_unblock_removes_the_waiter(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        acquire(&mut con, "k", 60_000).unwrap();
        for (mode, want_err) in [(None, false), (Some("ERROR"), true)] {
            let mut waiter = s.conn();
            let id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut waiter).unwrap();
            let (tx, rx) = mpsc::channel();
            thread::spawn(move || {
                let r = redis::cmd("PYLOCK.ACQUIRE").arg("k").arg(1000).arg("BLOCK").arg(0).query::<Value>(&mut waiter);
                let _ = tx.send(r.map_err(|e| testkit::error_text(&e)));
            });
            until_waiters(&mut con, "k", 1);
            let mut unblock = redis::cmd("CLIENT");
            unblock.arg("UNBLOCK").arg(id);
            if let Some(m) = mode {
                unblock.arg(m);
            }
            let n: i64 = unblock.query(&mut con).unwrap();
            assert_eq!(n, 1, "CLIENT UNBLOCK found the waiter");
            let r = rx.recv_timeout(Duration::from_secs(5)).expect("waiter answered");
            if want_err {
                assert!(r.as_ref().is_err_and(|e| e.starts_with("UNBLOCKED")), "{r:?}");
            } else {
                assert_eq!(r, Ok(Value::Nil));
            }
            wait_until(Duration::from_secs(5), || waiters(&mut con, "k") == 0).expect("left the queue");
            assert_eq!(waiting_total(&s), 0);
        }
    }

    fn block_inside_multi_and_scripts_does_not_wait(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        acquire(&mut con, "k", 60_000).unwrap();
        let start = Instant::now();
        let replies: Vec<Value> = redis::pipe()
            .atomic()
            .cmd("PYLOCK.ACQUIRE").arg("k").arg(1000).arg("BLOCK").arg(0)
            .cmd("PYLOCK.ACQUIRE").arg("free").arg(1000).arg("BLOCK").arg(0)
            .query(&mut con)
            .unwrap();
        assert_eq!(replies[0], Value::Nil);
        assert_ne!(replies[1], Value::Nil);
        let v: Value = redis::cmd("EVAL")
            .arg("return tostring(redis.call('PYLOCK.ACQUIRE', KEYS[1], 1000, 'BLOCK', 0))")
            .arg(1).arg("k")
            .query(&mut con)
            .unwrap();
        assert_eq!(v, Value::BulkString(b"false".to_vec()));
        assert!(start.elapsed() < Duration::from_secs(2));
        assert_eq!(waiting_total(&s), 0);
    }

    fn waiters_with_the_same_lease_are_answered_together(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let held = acquire(&mut con, "k", 60_000).unwrap();
        let a = spawn_waiter(&s, "k", 5000, "same", 10_000);
        until_waiters(&mut con, "k", 1);
        let other = spawn_waiter(&s, "k", 5000, "other", 10_000);
        until_waiters(&mut con, "k", 2);
        let b = spawn_waiter(&s, "k", 8000, "same", 10_000);
        until_waiters(&mut con, "k", 3);
        query(&mut con, &[b"PYLOCK.RELEASE", b"k", &held.id]);
        let la = Lease::from_value(&a.recv_timeout(Duration::from_secs(5)).unwrap().0);
        let lb = Lease::from_value(&b.recv_timeout(Duration::from_secs(5)).unwrap().0);
        assert_eq!((la.id.as_slice(), lb.id.as_slice()), (b"same".as_slice(), b"same".as_slice()));
        assert_eq!(la.token, lb.token, "a retry of the same lease is the same grant");
        assert_eq!(waiters(&mut con, "k"), 1);
        assert!(other.try_recv().is_err(), "the other waiter must still wait");
    }

    fn a_deleted_lock_goes_to_its_waiter(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        acquire(&mut con, "k", 60_000).unwrap();
        let rx = spawn_waiter(&s, "k", 5000, "after-del", 10_000);
        until_waiters(&mut con, "k", 1);
        let n: i64 = redis::cmd("DEL").arg("k").query(&mut con).unwrap();
        assert_eq!(n, 1);
        let (v, _) = rx.recv_timeout(Duration::from_secs(2)).expect("served after DEL");
        assert_eq!(Lease::from_value(&v).id, b"after-del");
    }

    fn hand_off_is_replicated(kind: Kind) {
        let primary = Server::start(kind);
        let replica = primary.start_replica(&[]);
        let (mut p, mut r) = (primary.conn(), replica.conn());
        let held = acquire(&mut p, "k", 60_000).unwrap();
        let on_release = spawn_waiter(&primary, "k", 400, "by-release", 10_000);
        until_waiters(&mut p, "k", 1);
        let on_expiry = spawn_waiter(&primary, "k", 30_000, "by-expiry", 10_000);
        until_waiters(&mut p, "k", 2);
        query(&mut p, &[b"PYLOCK.RELEASE", b"k", &held.id]);
        let first = Lease::from_value(&on_release.recv_timeout(Duration::from_secs(5)).unwrap().0);
        let second = Lease::from_value(&on_expiry.recv_timeout(Duration::from_secs(5)).unwrap().0);
        assert!(second.token > first.token);
        let acked: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(&mut p).unwrap();
        assert_eq!(acked, 1);
        let h = holder(&mut r, "k").expect("replica holds the handed-off lease");
        assert_eq!((h.lease.id.as_slice(), h.lease.token), (b"by-expiry".as_slice(), second.token));
        assert_eq!(pexpiretime(&mut r, "k"), pexpiretime(&mut p, "k"));
    }

    fn no_lock_is_ever_held_by_two_leases(kind: Kind) {
        let s = Server::start(kind);
        let workers = 4;
        let rounds = 40;
        let mut handles = Vec::new();
        for w in 0..workers {
            let mut con = s.conn();
            handles.push(thread::spawn(move || {
                let mut grants = Vec::new();
                for _ in 0..rounds {
                    let v = query(&mut con, &[b"PYLOCK.ACQUIRE", b"k", b"5000", b"BLOCK", b"10000"]);
                    let l = Lease::from_value(&v);
                    // Inside the critical section: exactly one holder may be here.
                    let inside: i64 = redis::cmd("INCR").arg("inside").query(&mut con).unwrap();
                    assert_eq!(inside, 1, "worker {w} found {inside} holders");
                    redis::cmd("DECR").arg("inside").query::<i64>(&mut con).unwrap();
                    grants.push(l.token);
                    assert_eq!(query(&mut con, &[b"PYLOCK.RELEASE", b"k", &l.id]), Value::Int(1));
                }
                grants
            }));
        }
        let mut tokens: Vec<i64> = handles.into_iter().flat_map(|h| h.join().expect("worker")).collect();
        assert_eq!(tokens.len(), workers * rounds);
        tokens.sort_unstable();
        tokens.dedup();
        assert_eq!(tokens.len(), workers * rounds, "a token was granted twice");
        assert_eq!(waiting_total(&s), 0);
    }

    fn block_errors_follow_the_contract(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        assert_eq!(query_err(&mut con, &[b"PYLOCK.ACQUIRE", b"k", b"100", b"BLOCK", b"-1"]), "ERR timeout is negative");
        assert_eq!(
            query_err(&mut con, &[b"PYLOCK.ACQUIRE", b"k", b"100", b"BLOCK", b"1.5"]),
            "ERR value is not an integer or out of range"
        );
        // A huge timeout is accepted and waits (here: until the holder releases).
        let held = acquire(&mut con, "k", 60_000).unwrap();
        let rx = spawn_waiter(&s, "k", 1000, "patient", i64::MAX);
        until_waiters(&mut con, "k", 1);
        query(&mut con, &[b"PYLOCK.RELEASE", b"k", &held.id]);
        let (v, _) = rx.recv_timeout(Duration::from_secs(5)).expect("served");
        assert_eq!(Lease::from_value(&v).id, b"patient");
    }

    fn a_lease_with_a_huge_ttl_does_not_stall_other_timers(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        // A TTL whose remaining time in microseconds wraps around 2^64 to just past now: an
        // unclamped deadline timer would sort first and stall every module timer.
        let huge = (18_446_744_073_709_552 + 100_000 - now_ms()).to_string();
        query(&mut con, &[b"PYLOCK.ACQUIRE", b"forever", huge.as_bytes(), b"LEASE", b"a"]);
        let start = Instant::now();
        let v = query(&mut con, &[b"PYLOCK.ACQUIRE", b"forever", b"1000", b"BLOCK", b"200"]);
        assert_eq!(v, Value::Nil);
        assert!(start.elapsed() < Duration::from_secs(3), "timed out after {:?}", start.elapsed());
        // Other locks' timers still fire while a waiter sits on the huge lease.
        let parked = spawn_waiter(&s, "forever", 1000, "parked", 60_000);
        until_waiters(&mut con, "forever", 1);
        acquire(&mut con, "other", 200).unwrap();
        let rx = spawn_waiter(&s, "other", 1000, "next", 5000);
        let (v, _) = rx.recv_timeout(Duration::from_secs(3)).expect("expiry hand-off still happens");
        assert_eq!(Lease::from_value(&v).id, b"next");
        let v = query(&mut con, &[b"PYLOCK.ACQUIRE", b"other", b"1000", b"BLOCK", b"100"]);
        assert_eq!(v, Value::Nil, "BLOCK timeouts still fire");
        drop(parked);
    }

    fn a_same_lease_waiter_leaving_does_not_revoke_the_grant_another_received(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let held = acquire(&mut con, "k", 60_000).unwrap();
        let mut w1 = s.conn();
        let w1_id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut w1).unwrap();
        thread::spawn(move || {
            let _ = redis::cmd("PYLOCK.ACQUIRE").arg("k").arg(100_000).arg("LEASE").arg("X").arg("BLOCK").arg(0).query::<Value>(&mut w1);
        });
        until_waiters(&mut con, "k", 1);
        let w2 = spawn_waiter(&s, "k", 100_000, "X", 10_000);
        until_waiters(&mut con, "k", 2);
        // The release hands the lock to both; the first one's connection dies in the same turn.
        let _: Vec<Value> = redis::pipe()
            .cmd("PYLOCK.RELEASE").arg("k").arg(&held.id)
            .cmd("CLIENT").arg("KILL").arg("ID").arg(w1_id)
            .query(&mut con)
            .unwrap();
        let (v, _) = w2.recv_timeout(Duration::from_secs(5)).expect("second waiter answered");
        assert_eq!(Lease::from_value(&v).id, b"X");
        thread::sleep(Duration::from_millis(100));
        let v = query(&mut con, &[b"PYLOCK.CONFIRM", b"k", b"X"]);
        assert_eq!(Lease::from_value(&v).id, b"X", "the grant the second waiter received still holds");
    }

    fn client_unblock_racing_a_hand_off_still_gets_exactly_one_answer(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        for mode in ["TIMEOUT", "ERROR"] {
            let held = acquire(&mut con, "k", 60_000).unwrap();
            let mut waiter = s.conn();
            let id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut waiter).unwrap();
            let (tx, rx) = mpsc::channel();
            thread::spawn(move || {
                let r = redis::cmd("PYLOCK.ACQUIRE").arg("k").arg(60_000).arg("BLOCK").arg(0).query::<Value>(&mut waiter);
                // The connection must still be in step: the next reply is PING's.
                let pong: redis::RedisResult<String> = redis::cmd("PING").query(&mut waiter);
                let _ = tx.send((r.map_err(|e| testkit::error_text(&e)), pong.ok()));
            });
            until_waiters(&mut con, "k", 1);
            // The release hands the lock over and CLIENT UNBLOCK arrives in the same turn.
            let replies: Vec<Value> = redis::pipe()
                .cmd("PYLOCK.RELEASE").arg("k").arg(&held.id)
                .cmd("CLIENT").arg("UNBLOCK").arg(id).arg(mode)
                .query(&mut con)
                .unwrap();
            assert_eq!(replies[0], Value::Int(1));
            let (r, pong) = rx.recv_timeout(Duration::from_secs(5)).expect("the waiter got an answer");
            assert_eq!(pong.as_deref(), Some("PONG"), "{mode}: replies out of step after {r:?}");
            match r {
                // Unblocked before the hand-off reached it: nil (TIMEOUT) or the error (ERROR),
                // and the grant it never received is taken back.
                Ok(Value::Nil) | Err(_) => {
                    wait_until(Duration::from_secs(5), || holder(&mut con, "k").is_none())
                        .expect("the undelivered grant was revoked");
                }
                // Or the hand-off reached it first: it holds the lock.
                Ok(v) => {
                    let l = Lease::from_value(&v);
                    assert_eq!(holder(&mut con, "k").unwrap().lease.id, l.id);
                    query(&mut con, &[b"PYLOCK.RELEASE", b"k", &l.id]);
                }
            }
            assert_eq!(waiting_total(&s), 0);
        }
    }

    /// FLUSHDB, FLUSHALL and SWAPDB send no per-key event; the module's flush and swap events
    /// serve the waiters of the emptied (or swapped) database at once, not at the old holder's
    /// deadline a minute later.
    fn flushes_and_swaps_serve_waiters_at_once(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        for how in ["FLUSHDB", "FLUSHALL", "SWAPDB"] {
            acquire(&mut con, "k", 60_000).expect("held for a minute");
            let rx = spawn_waiter(&s, "k", 5_000, &format!("after-{how}"), 0);
            until_waiters(&mut con, "k", 1);
            let sent = Instant::now();
            match how {
                // Database 1 is empty, so after the swap database 0 has no lock at "k".
                "SWAPDB" => redis::cmd("SWAPDB").arg(0).arg(1).query::<()>(&mut con).unwrap(),
                other => redis::cmd(other).query::<()>(&mut con).unwrap(),
            }
            let (v, at) = rx.recv_timeout(Duration::from_secs(5)).expect("the waiter was answered");
            let lease = Lease::from_value(&v);
            assert_eq!(lease.id_str(), format!("after-{how}"), "{how}");
            assert!(at.duration_since(sent) < Duration::from_secs(1), "{how}: served after {:?}", at.duration_since(sent));
            assert_eq!(holder(&mut con, "k").unwrap().lease.id, lease.id, "{how}");
            query(&mut con, &[b"PYLOCK.RELEASE", b"k", &lease.id]);
            if how == "SWAPDB" {
                // Put the first lock (now in database 1) out of the way for the next round.
                redis::cmd("FLUSHALL").query::<()>(&mut con).unwrap();
            }
            assert_eq!(waiting_total(&s), 0, "{how}");
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
