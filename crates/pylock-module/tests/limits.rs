//! The server's own limits applied to pylock: ACL key patterns and command grants, `maxmemory`
//! with `noeviction`, and `CLIENT PAUSE WRITE`. (A read-only replica is in replication.rs.)

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use testkit::redis::{self, Value};
use testkit::{acquire, holder, query, query_err, server_tests, wait_until, Lease, Server};

mod common;
use common::{as_user, code};

/// Whether the server gives module commands ACL categories (Redis 7.2+, and Valkey, which
/// reports 7.2.4).
fn has_module_acl_categories(s: &Server) -> bool {
    let v = s.info("server", "redis_version").unwrap();
    let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (7, 2)
}

/// Servers time a pause from a clock cached per event-loop turn, which may be a little behind
/// the moment the test sent CLIENT PAUSE.
const SLACK: Duration = Duration::from_millis(100);

server_tests! {
    fn acl_user_limited_to_lock_keys_cannot_take_other_locks(kind: Kind) {
        let s = Server::start(kind);
        let mut admin = s.conn();
        redis::cmd("ACL")
            .arg(&["SETUSER", "u", "on", ">pw", "~lock:*", "+pylock.acquire", "+pylock.confirm", "+pylock.release", "+pylock.info"][..])
            .query::<()>(&mut admin)
            .unwrap();
        let mut u = as_user(&s, "u");
        let lease = acquire(&mut u, "lock:a", 10_000).expect("its own keys work");
        query(&mut u, &[b"PYLOCK.CONFIRM", b"lock:a", &lease.id, b"EXTEND", b"20000"]);
        assert!(holder(&mut u, "lock:a").is_some());
        assert_eq!(query(&mut u, &[b"PYLOCK.RELEASE", b"lock:a", &lease.id]), Value::Int(1));
        let other = acquire(&mut admin, "other:a", 10_000).unwrap();
        for args in [
            vec!["PYLOCK.ACQUIRE", "other:b", "1000"],
            vec!["PYLOCK.ACQUIRE", "other:a", "1000", "BLOCK", "100"],
            vec!["PYLOCK.CONFIRM", "other:a", other.id_str()],
            vec!["PYLOCK.RELEASE", "other:a", other.id_str()],
            vec!["PYLOCK.INFO", "other:a"],
            vec!["GET", "lock:a"],
        ] {
            let mut c = redis::cmd(args[0]);
            c.arg(&args[1..]);
            assert_eq!(code(c.query(&mut u)), "NOPERM", "{args:?}");
        }
        assert_eq!(holder(&mut admin, "other:a").unwrap().lease.id, other.id, "untouched");
        let n: i64 = redis::cmd("EXISTS").arg("other:b").query(&mut admin).unwrap();
        assert_eq!(n, 0);

        // Categories: on Redis 7.0 module commands have none, so +@write does not grant them;
        // where the server supports it the module puts them in @write/@read/@fast.
        redis::cmd("ACL").arg(&["SETUSER", "cat", "on", ">pw", "~*", "+@write", "+@read"][..]).query::<()>(&mut admin).unwrap();
        let mut cat = as_user(&s, "cat");
        let r = code(redis::cmd("PYLOCK.ACQUIRE").arg("lock:c").arg(1000).query(&mut cat));
        if has_module_acl_categories(&s) {
            assert!(r.starts_with("ok"), "{r}");
        } else {
            assert_eq!(r, "NOPERM");
        }
    }

    fn over_maxmemory_acquire_gets_oom_while_confirm_and_release_work(kind: Kind) {
        let s = Server::start_with(kind, &["--maxmemory-policy", "noeviction"]);
        let mut con = s.conn();
        let held = acquire(&mut con, "held", 60_000).unwrap();
        let handed = acquire(&mut con, "handed", 60_000).unwrap();
        // A waiter queued before memory runs out.
        let mut w = s.conn();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let _ = tx.send(query(&mut w, &[b"PYLOCK.ACQUIRE", b"handed", b"5000", b"LEASE", b"waiter", b"BLOCK", b"20000"]));
        });
        wait_until(Duration::from_secs(5), || holder(&mut con, "handed").is_some_and(|h| h.waiters == 1)).unwrap();

        // Data, then a limit below what it uses: every deny-oom command is refused from here.
        let chunk = vec![b'x'; 100 * 1024];
        for i in 0..30 {
            redis::cmd("SET").arg(format!("fill:{i}")).arg(&chunk).query::<()>(&mut con).unwrap();
        }
        let used: u64 = s.info("memory", "used_memory").unwrap().parse().unwrap();
        redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(used - 1024 * 1024).query::<()>(&mut con).unwrap();
        let err = redis::cmd("SET").arg("one-more").arg("x").query::<()>(&mut con).unwrap_err();
        assert_eq!(err.code(), Some("OOM"), "{err}");
        let err = query_err(&mut con, &[b"PYLOCK.ACQUIRE", b"new", b"1000"]);
        assert!(err.starts_with("OOM "), "{err}");
        let err = query_err(&mut con, &[b"PYLOCK.ACQUIRE", b"held", b"1000", b"BLOCK", b"10"]);
        assert!(err.starts_with("OOM "), "{err}");
        let v = query(&mut con, &[b"PYLOCK.CONFIRM", b"held", &held.id]);
        assert_eq!(Lease::from_value(&v).token, held.token);
        let v = query(&mut con, &[b"PYLOCK.CONFIRM", b"held", &held.id, b"EXTEND", b"90000"]);
        assert_eq!(Lease::from_value(&v).ttl_ms, 90_000);
        assert!(holder(&mut con, "held").is_some(), "INFO answers");
        assert_eq!(query(&mut con, &[b"PYLOCK.RELEASE", b"held", &held.id]), Value::Int(1));
        // A release hands the lock to its waiter even now: the hand-off is part of the release.
        assert_eq!(query(&mut con, &[b"PYLOCK.RELEASE", b"handed", &handed.id]), Value::Int(1));
        let got = Lease::from_value(&rx.recv_timeout(Duration::from_secs(5)).expect("waiter answered"));
        assert_eq!(got.id, b"waiter");
        assert!(query_err(&mut con, &[b"PYLOCK.ACQUIRE", b"new", b"1000"]).starts_with("OOM "));
        redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(0).query::<()>(&mut con).unwrap();
        assert!(acquire(&mut con, "new", 1000).is_some(), "works again with memory");
    }

    fn client_pause_write_delays_pylock_writes_then_they_complete(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let held = acquire(&mut con, "held", 60_000).unwrap();
        let pause = Duration::from_millis(1500);
        let t0 = Instant::now();
        redis::cmd("CLIENT").arg("PAUSE").arg(pause.as_millis() as u64).arg("WRITE").query::<()>(&mut con).unwrap();
        let spawn = |args: Vec<Vec<u8>>| {
            let mut c = s.conn();
            let (tx, rx) = mpsc::channel();
            thread::spawn(move || {
                let a: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
                let v = query(&mut c, &a);
                let _ = tx.send((v, Instant::now()));
            });
            rx
        };
        let acq = spawn(vec![b"PYLOCK.ACQUIRE".to_vec(), b"free".to_vec(), b"10000".to_vec()]);
        let rel = spawn(vec![b"PYLOCK.RELEASE".to_vec(), b"held".to_vec(), held.id.clone()]);
        // A read answers during the pause; nothing has been written yet.
        thread::sleep(Duration::from_millis(100));
        let free_now = holder(&mut con, "free");
        let held_now = holder(&mut con, "held");
        if t0.elapsed() < pause - SLACK {
            assert_eq!(free_now, None, "ACQUIRE ran during the pause");
            assert_eq!(held_now.map(|h| h.lease.id), Some(held.id.clone()), "RELEASE ran during the pause");
        }
        let (v, at) = acq.recv_timeout(Duration::from_secs(15)).expect("ACQUIRE completed");
        assert!(at - t0 >= pause - SLACK, "ACQUIRE answered {:?} after the pause began", at - t0);
        assert!(Lease::from_value(&v).token > held.token);
        let (v, at) = rel.recv_timeout(Duration::from_secs(15)).expect("RELEASE completed");
        assert!(at - t0 >= pause - SLACK);
        assert_eq!(v, Value::Int(1));
    }

    /// The holder's deadline passes during a write pause, with a waiter queued: Redis pauses key
    /// expiry too, so the module must not hand the lock over (a write) until the pause ends.
    fn expiry_during_client_pause_write_hands_over_after_the_pause(kind: Kind) {
        let mut s = Server::start(kind);
        let mut con = s.conn();
        acquire(&mut con, "k", 300).unwrap();
        let mut w = s.conn();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let v = query(&mut w, &[b"PYLOCK.ACQUIRE", b"k", b"5000", b"LEASE", b"next", b"BLOCK", b"10000"]);
            let _ = tx.send((v, Instant::now()));
        });
        wait_until(Duration::from_secs(5), || holder(&mut con, "k").is_some_and(|h| h.waiters == 1)).unwrap();
        let pause = Duration::from_millis(1500);
        let t0 = Instant::now();
        redis::cmd("CLIENT").arg("PAUSE").arg(pause.as_millis() as u64).arg("WRITE").query::<()>(&mut con).unwrap();
        let (v, at) = rx.recv_timeout(Duration::from_secs(15)).expect("waiter answered");
        assert!(s.is_running(), "the server died");
        assert_eq!(Lease::from_value(&v).id, b"next");
        assert!(at - t0 >= pause - SLACK, "handed over {:?} into a {pause:?} write pause", at - t0);
        assert_eq!(holder(&mut con, "k").unwrap().lease.id, b"next");
    }
}
