//! Faults injected into real servers: SIGKILL right after grants with `appendfsync always`,
//! SIGSTOP across a hand-off, promotion of a replica after `WAIT`, and a failover without
//! `WAIT` that loses a grant while fencing tokens still order the holders.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use testkit::redis::{self, Value};
use testkit::{acquire, holder, server_tests, Lease, Server};

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
}
