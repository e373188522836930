//! Faults injected into real servers: SIGKILL right after grants with `appendfsync always`,
//! SIGSTOP across a hand-off, promotion of a replica after `WAIT`, a failover without
//! `WAIT` that loses a grant while fencing tokens still order the holders, and watchers
//! across a kill, a restart, a failover and a demotion.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use testkit::redis::{self, Value};
use testkit::{acquire, holder, query, server_tests, Lease, Server};

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn high_water(s: &Server) -> i64 {
    s.info("pylock", "pylock_token_high_water")
        .unwrap()
        .parse()
        .unwrap()
}

/// What a key may hold: exactly a lease with an expiry inside a window, or nothing. `id` or
/// `token` of `None` mean any (an ACQUIRE whose reply never came).
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    Free,
    Held {
        id: Option<Vec<u8>>,
        token: Option<i64>,
        expiry: (i64, i64),
    },
}

impl Expect {
    fn admits(&self, got: &Option<(Vec<u8>, i64, i64)>) -> bool {
        match (self, got) {
            (Expect::Free, None) => true,
            (Expect::Held { id, token, expiry }, Some((gid, gtoken, gexp))) => {
                id.as_ref().is_none_or(|i| i == gid)
                    && token.is_none_or(|t| t == *gtoken)
                    && (expiry.0 - 1..=expiry.1.saturating_add(1)).contains(gexp)
            }
            _ => false,
        }
    }
}

/// A worker's keys and, per key, the acknowledged state and the state the in-flight call (if
/// the kill cut it off) may have left.
type Ledger = Vec<(String, Expect, Option<Expect>)>;

/// Grants, extends and releases its own keys until the connection dies; never waits for
/// anything but replies, so the kill lands right after acknowledged writes.
fn churn(mut con: redis::Connection, worker: usize, keys: usize, seed: u64) -> (Ledger, i64, u64) {
    let mut rng = pylock_check::checker::Rng::new(seed);
    // Keys are per run (the seed), so a new round starts from free locks.
    let mut ledger: Ledger = (0..keys)
        .map(|k| (format!("s{seed}:w{worker}:k{k}"), Expect::Free, None))
        .collect();
    let mut max_token = 0;
    let mut serial = 0;
    let mut acked = 0;
    loop {
        let k = rng.below(keys as u64) as usize;
        let (key, state) = (ledger[k].0.clone(), ledger[k].1.clone());
        let ttl = rng.range(60_000, 120_000);
        let t0 = unix_ms();
        let (cmd, pending) = match &state {
            Expect::Free => {
                serial += 1;
                let custom = rng
                    .chance(50)
                    .then(|| format!("w{worker}-{serial}").into_bytes());
                let mut c = redis::cmd("PYLOCK.ACQUIRE");
                c.arg(&key).arg(ttl);
                if let Some(id) = &custom {
                    c.arg("LEASE").arg(id.as_slice());
                }
                (
                    c,
                    Expect::Held {
                        id: custom,
                        token: None,
                        expiry: (t0 + ttl, i64::MAX),
                    },
                )
            }
            Expect::Held { id, token, .. } if rng.chance(50) => {
                let mut c = redis::cmd("PYLOCK.CONFIRM");
                c.arg(&key).arg(id.clone().unwrap()).arg("EXTEND").arg(ttl);
                (
                    c,
                    Expect::Held {
                        id: id.clone(),
                        token: *token,
                        expiry: (t0 + ttl, i64::MAX),
                    },
                )
            }
            Expect::Held { id, .. } => {
                let mut c = redis::cmd("PYLOCK.RELEASE");
                c.arg(&key).arg(id.clone().unwrap());
                (c, Expect::Free)
            }
        };
        ledger[k].2 = Some(pending);
        let reply = cmd.query::<Value>(&mut con);
        let t1 = unix_ms();
        let reply = match reply {
            Ok(v) => v,
            Err(_) => return (ledger, max_token, acked), // the server died; the call stays pending
        };
        ledger[k].1 = match (&state, reply) {
            (_, Value::Int(1)) => Expect::Free,
            (_, v @ Value::Array(_)) => {
                let l = Lease::from_value(&v);
                max_token = max_token.max(l.token);
                Expect::Held {
                    id: Some(l.id),
                    token: Some(l.token),
                    expiry: (t0 + ttl, t1 + ttl),
                }
            }
            (s, v) => panic!("{key} in {s:?}: unexpected {v:?}"),
        };
        ledger[k].2 = None;
        acked += 1;
    }
}

/// How long after the event a watcher may be answered: a bound a loaded 2-core CI machine
/// keeps, where a stalled process can add tens of milliseconds. The delays themselves (0.5 to
/// 9 ms in quiet runs) are reported in docs/RELIABILITY.md.
const WATCH_LIMIT: Duration = Duration::from_millis(250);

/// A WATCH (no TIMEOUT) on its own connection: its reply, and when it came.
fn watch_in_thread(
    s: &Server,
    key: &str,
    id: &[u8],
) -> thread::JoinHandle<(Result<Value, String>, Instant)> {
    let (url, key, id) = (s.url(), key.to_string(), id.to_vec());
    thread::spawn(move || {
        let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
        let r = redis::cmd("PYLOCK.WATCH")
            .arg(&key)
            .arg(&id)
            .query::<Value>(&mut con);
        (r.map_err(|e| testkit::error_text(&e)), Instant::now())
    })
}

fn wait_watching(s: &Server, n: usize) {
    let watching = || {
        s.info("pylock", "pylock_watching")
            .and_then(|v| v.parse::<usize>().ok())
    };
    testkit::wait_until(Duration::from_secs(5), || watching() == Some(n))
        .unwrap_or_else(|_| panic!("watching {:?} != {n}", watching()));
}

/// Checks an answer came within [`WATCH_LIMIT`] of `event`, and returns the delay.
fn in_time(what: &str, event: Instant, at: Instant) -> Duration {
    let late = at.saturating_duration_since(event);
    assert!(
        late <= WATCH_LIMIT,
        "{what}: answered {late:?} after the event"
    );
    late
}

fn read_state(con: &mut redis::Connection, key: &str) -> Option<(Vec<u8>, i64, i64)> {
    holder(con, key).map(|h| (h.lease.id, h.lease.token, testkit::pexpiretime(con, key)))
}

server_tests! {
    /// A waiter whose BLOCK time runs out in the same instant the lock is handed to it (here:
    /// the server is stopped across both deadlines) must still get an answer: the lease, or
    /// nil with the lock not left to its lease.
    fn a_waiter_timing_out_as_the_lock_is_handed_over_gets_an_answer(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        for round in 0..5 {
            let key = format!("k{round}");
            acquire(&mut con, &key, 200).expect("granted");
            let mut waiter = s.conn();
            waiter.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let (tx, rx) = mpsc::channel();
            let k = key.clone();
            thread::spawn(move || {
                let r = redis::cmd("PYLOCK.ACQUIRE").arg(&k).arg(60_000).arg("LEASE").arg("waiter")
                    .arg("BLOCK").arg(200).query::<Value>(&mut waiter);
                let _ = tx.send(r);
            });
            testkit::wait_until(Duration::from_secs(5), || {
                holder(&mut con, &key).is_some_and(|h| h.waiters == 1)
            })
            .expect("queued");
            // Both the holder's deadline and the waiter's timeout pass while the server sleeps.
            s.signal("STOP");
            thread::sleep(Duration::from_millis(400));
            s.signal("CONT");
            let reply = rx.recv_timeout(Duration::from_secs(10)).expect("thread answered");
            let reply = reply.unwrap_or_else(|e| panic!("round {round}: the waiter got no answer: {e}"));
            // Whatever it was told must match the lock's state once things settle.
            thread::sleep(Duration::from_millis(50));
            let h = holder(&mut con, &key);
            match reply {
                Value::Nil => assert!(
                    h.as_ref().is_none_or(|h| h.lease.id != b"waiter"),
                    "round {round}: told nil but holds the lock: {h:?}"
                ),
                v => {
                    let l = Lease::from_value(&v);
                    let h = h.unwrap_or_else(|| panic!("round {round}: granted {l:?} but the lock is free"));
                    assert_eq!((h.lease.id, h.lease.token), (l.id, l.token), "round {round}");
                }
            }
        }
        let pong: String = redis::cmd("PING").query(&mut con).unwrap();
        assert_eq!(pong, "PONG");
    }

    fn sigkill_right_after_grants_keeps_every_acknowledged_lease(kind: Kind) {
        let mut s = Server::start_with(kind, &["--appendonly", "yes", "--appendfsync", "always"]);
        s.wait_aof_rewrite_done();
        let mut kills = 0;
        let mut checked = 0;
        let mut acked_ops = 0;
        for round in 0..3u64 {
            let workers: Vec<_> = (0..4)
                .map(|w| {
                    let con = s.conn();
                    thread::spawn(move || churn(con, w, 10, round * 10 + w as u64))
                })
                .collect();
            thread::sleep(Duration::from_millis(150 + 100 * round));
            s.kill();
            kills += 1;
            let results: Vec<_> = workers.into_iter().map(|h| h.join().expect("worker")).collect();
            s.restart_with(&[]);
            let mut con = s.conn();
            let max_token = results.iter().map(|r| r.1).max().unwrap_or(0);
            acked_ops += results.iter().map(|r| r.2).sum::<u64>();
            for (ledger, _, _) in &results {
                for (key, acked, pending) in ledger {
                    let got = read_state(&mut con, key);
                    let ok = acked.admits(&got) || pending.as_ref().is_some_and(|p| p.admits(&got));
                    assert!(ok, "round {round}: {key} holds {got:?}; acknowledged {acked:?}, in flight {pending:?}");
                    checked += 1;
                }
            }
            assert!(high_water(&s) >= max_token, "round {round}: high water below an acknowledged token");
            let fresh = acquire(&mut con, &format!("fresh{round}"), 1000).unwrap();
            assert!(fresh.token > max_token, "round {round}: token {} reissued after {max_token}", fresh.token);
        }
        println!("{kills} SIGKILLs after {acked_ops} acknowledged writes, {checked} keys checked after restart");
    }

    fn promoted_replica_has_every_lease_wait_acknowledged(kind: Kind) {
        let mut primary = Server::start(kind);
        let replica = primary.start_replica(&[]);
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let mut con = primary.conn();
                thread::spawn(move || {
                    (0..25)
                        .map(|k| {
                            let key = format!("w{w}:k{k}");
                            let v = query(&mut con, &[b"PYLOCK.ACQUIRE", key.as_bytes(), b"120000"]);
                            (key, Lease::from_value(&v))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let leases: Vec<(String, Lease)> = workers.into_iter().flat_map(|h| h.join().unwrap()).collect();
        let mut p = primary.conn();
        let expiries: Vec<i64> = leases.iter().map(|(k, _)| testkit::pexpiretime(&mut p, k)).collect();
        let acked: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(&mut p).unwrap();
        assert_eq!(acked, 1, "the replica acknowledged the grants");
        primary.kill();
        let mut r = replica.conn();
        redis::cmd("REPLICAOF").arg("NO").arg("ONE").query::<()>(&mut r).unwrap();
        let mut max_token = 0;
        for ((key, lease), expiry) in leases.iter().zip(&expiries) {
            let got = read_state(&mut r, key).unwrap_or_else(|| panic!("{key} lost in the failover"));
            assert_eq!(got, (lease.id.clone(), lease.token, *expiry), "{key}");
            let v = query(&mut r, &[b"PYLOCK.CONFIRM", key.as_bytes(), &lease.id]);
            assert_eq!(Lease::from_value(&v).token, lease.token);
            assert_eq!(acquire(&mut r, key, 1000), None, "{key} must still be held");
            max_token = max_token.max(lease.token);
        }
        let fresh = acquire(&mut r, "fresh", 1000).unwrap();
        assert!(fresh.token > max_token);
    }

    /// Replication is asynchronous: a grant the primary acknowledged, that no replica received,
    /// is lost when the primary dies and a replica takes over; the lock is granted again there.
    /// `WAIT` tells the client at once (0 replicas), and the fencing token of the second grant
    /// is still larger, so a fenced resource refuses the first holder.
    fn failover_without_wait_can_lose_a_grant_but_tokens_still_order_holders(kind: Kind) {
        let mut primary = Server::start(kind);
        let replica = primary.start_replica(&[]);
        let resource = Server::start(kind);
        let mut p = primary.conn();
        // Cut the replica off: freeze it, and make the primary drop its link. (Freezing alone is
        // not enough on loopback: the kernel would still deliver what the primary sent.)
        replica.signal("STOP");
        let killed: i64 = redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("replica").query(&mut p).unwrap();
        assert_eq!(killed, 1);
        let lost = acquire(&mut p, "lock:x", 60_000).expect("granted by the primary");
        let acked: i64 = redis::cmd("WAIT").arg(1).arg(200).query(&mut p).unwrap();
        assert_eq!(acked, 0, "no replica has the grant, and WAIT says so");
        primary.kill();
        replica.signal("CONT");
        let mut r = replica.conn();
        redis::cmd("REPLICAOF").arg("NO").arg("ONE").query::<()>(&mut r).unwrap();
        assert_eq!(holder(&mut r, "lock:x"), None, "the grant was lost with the primary");
        let second = acquire(&mut r, "lock:x", 60_000).expect("granted again on the new primary");
        // The new primary never saw the lost token; its clock floor (µs since the epoch) is
        // what puts the new token above it.
        assert!(second.token > lost.token, "{} <= {}", second.token, lost.token);
        let err = testkit::query_err(&mut r, &[b"PYLOCK.CONFIRM", b"lock:x", &lost.id]);
        assert!(err.starts_with("NOTOWNED"), "{err}");
        // A resource that keeps the largest token it saw refuses the first holder.
        let fence = "local max = tonumber(redis.call('GET', KEYS[1]) or '0') \
                     if tonumber(ARGV[1]) < max then return 0 end \
                     redis.call('SET', KEYS[1], ARGV[1]) return 1";
        let mut res = resource.conn();
        let write = |con: &mut redis::Connection, token: i64| -> i64 {
            redis::cmd("EVAL").arg(fence).arg(1).arg("fence").arg(token).query(con).unwrap()
        };
        assert_eq!(write(&mut res, second.token), 1, "the new holder writes");
        assert_eq!(write(&mut res, lost.token), 0, "the holder whose grant was lost is refused");
    }

    /// Watchers across faults, each answered within 50 ms of the event. A SIGKILL drops every
    /// watcher's connection. After a restart from the AOF the leases are back and new watchers
    /// hear of a release. After a failover (`WAIT`, SIGKILL, the replica promoted) the leases
    /// live on the new primary, whose watchers hear of a release and of an expiry. A demotion
    /// (the new primary made a replica) ends the rest: the server's own `UNBLOCKED` error, or
    /// `demoted`.
    fn watchers_are_told_across_kill_restart_failover_and_demotion(kind: Kind) {
        let mut s = Server::start_with(kind, &["--appendonly", "yes", "--appendfsync", "always"]);
        s.wait_aof_rewrite_done();
        let replica = s.start_replica(&[]);
        let keys: Vec<String> = (0..6).map(|i| format!("wk:{i}")).collect();
        let lease = |k: &str| format!("lease-{k}").into_bytes();
        let mut con = s.conn();
        for k in &keys {
            let v = query(&mut con, &[b"PYLOCK.ACQUIRE", k.as_bytes(), b"600000", b"LEASE", &lease(k)]);
            assert_ne!(v, Value::Nil);
        }
        let mut delays: Vec<(&str, Duration)> = Vec::new();

        // A SIGKILL: every watcher's connection drops.
        let ws: Vec<_> = keys.iter().map(|k| watch_in_thread(&s, k, &lease(k))).collect();
        wait_watching(&s, keys.len());
        let killed = Instant::now();
        s.kill();
        for w in ws {
            let (r, at) = w.join().unwrap();
            assert!(r.is_err(), "a killed server's watcher got {r:?}");
            delays.push(("kill", in_time("kill", killed, at)));
        }

        // Restarted from the AOF: the leases are back, and watchers hear of a release.
        s.restart_with(&[]);
        let mut con = s.conn();
        for k in &keys {
            let v = query(&mut con, &[b"PYLOCK.CONFIRM", k.as_bytes(), &lease(k)]);
            assert_eq!(Lease::from_value(&v).id, lease(k), "{k} after the restart");
        }
        let ws: Vec<_> = keys[..2].iter().map(|k| watch_in_thread(&s, k, &lease(k))).collect();
        wait_watching(&s, 2);
        for (k, w) in keys[..2].iter().zip(ws) {
            let sent = Instant::now();
            assert_eq!(query(&mut con, &[b"PYLOCK.RELEASE", k.as_bytes(), &lease(k)]), Value::Int(1));
            let (r, at) = w.join().unwrap();
            assert_eq!(r, Ok(Value::BulkString(b"released".to_vec())), "{k}");
            delays.push(("released after a restart", in_time(k, sent, at)));
        }

        // A failover: the replica has every lease (WAIT), the primary dies, the replica takes
        // over; its watchers hear of a release and of an expiry.
        let acked: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(&mut con).unwrap();
        assert_eq!(acked, 1);
        s.kill();
        let mut r = replica.conn();
        redis::cmd("REPLICAOF").arg("NO").arg("ONE").query::<()>(&mut r).unwrap();
        let rest = &keys[2..];
        let ws: Vec<_> = rest.iter().map(|k| watch_in_thread(&replica, k, &lease(k))).collect();
        wait_watching(&replica, rest.len());
        let sent = Instant::now();
        assert_eq!(query(&mut r, &[b"PYLOCK.RELEASE", rest[0].as_bytes(), &lease(&rest[0])]), Value::Int(1));
        let extended = Instant::now();
        query(&mut r, &[b"PYLOCK.CONFIRM", rest[1].as_bytes(), &lease(&rest[1]), b"EXTEND", b"300"]);
        let mut ws = ws.into_iter();
        let (got, at) = ws.next().unwrap().join().unwrap();
        assert_eq!(got, Ok(Value::BulkString(b"released".to_vec())));
        delays.push(("released after a failover", in_time("release", sent, at)));
        let (got, at) = ws.next().unwrap().join().unwrap();
        assert_eq!(got, Ok(Value::BulkString(b"expired".to_vec())));
        let deadline = extended + Duration::from_millis(300);
        assert!(at + Duration::from_millis(2) >= deadline, "expired before the deadline");
        delays.push(("expired after a failover", in_time("expiry", deadline, at)));

        // A demotion: the new primary becomes a replica of another server.
        let other = Server::start(kind);
        wait_watching(&replica, 2);
        let demoted = Instant::now();
        redis::cmd("REPLICAOF").arg("127.0.0.1").arg(other.port()).query::<()>(&mut r).unwrap();
        for w in ws {
            let (got, at) = w.join().unwrap();
            match got {
                Ok(v) => assert_eq!(v, Value::BulkString(b"demoted".to_vec())),
                Err(e) => assert!(e.starts_with("UNBLOCKED"), "{e}"),
            }
            delays.push(("demoted", in_time("demotion", demoted, at)));
        }
        println!("{} watch delays: {delays:?}", kind.name());
    }
}
