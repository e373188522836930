//! Keyspace events of the module class (`d` in `notify-keyspace-events`): every grant,
//! hand-off, extension and release publishes one, seen by a real subscriber; calls that change
//! nothing publish none; a replica publishes `pylock.restore` for a replicated grant; and the
//! module's own keyspace handler is not woken by them, so hand-offs stay in FIFO order with
//! every class of event on.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use testkit::redis::{self, Value};
use testkit::{acquire, holder, query, server_tests, wait_until, Lease, Server};

const MARKER: &str = "test-marker";

/// A subscriber to some patterns and to a marker channel. [`Subscriber::until_marker`] returns
/// everything published before a marker the test published after its commands, so "no event"
/// is checked without waiting for a timeout.
struct Subscriber<'a> {
    ps: redis::PubSub<'a>,
    marks: u32,
}

impl<'a> Subscriber<'a> {
    /// Subscribes `con` (which stays in pub/sub mode while this lives) to `patterns`.
    fn new(con: &'a mut redis::Connection, patterns: &[&str]) -> Self {
        let mut ps = con.as_pubsub();
        for p in patterns {
            ps.psubscribe(*p).unwrap();
        }
        ps.subscribe(MARKER).unwrap();
        ps.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Self { ps, marks: 0 }
    }

    /// (channel, payload) of each message published before a new marker.
    fn until_marker(&mut self, publisher: &mut redis::Connection) -> Vec<(String, String)> {
        self.marks += 1;
        let mark = self.marks.to_string();
        redis::cmd("PUBLISH")
            .arg(MARKER)
            .arg(&mark)
            .query::<i64>(publisher)
            .unwrap();
        self.collect(|channel, payload| channel == MARKER && payload == mark)
    }

    /// Messages until (not including) the first for which `last` is true; fails after 10 s.
    fn collect(&mut self, last: impl Fn(&str, &str) -> bool) -> Vec<(String, String)> {
        let mut seen = Vec::new();
        loop {
            let msg = self
                .ps
                .get_message()
                .unwrap_or_else(|e| panic!("{e}; so far {seen:?}"));
            let channel = msg.get_channel_name().to_string();
            let payload: String = msg.get_payload().unwrap();
            if last(&channel, &payload) {
                return seen;
            }
            if channel != MARKER {
                seen.push((channel, payload));
            }
        }
    }
}

fn keyspace(key: &str, event: &str) -> (String, String) {
    (format!("__keyspace@0__:{key}"), event.to_string())
}

fn notify(con: &mut redis::Connection, classes: &str) {
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg(classes)
        .query::<()>(con)
        .unwrap();
}

server_tests! {
    fn grants_extensions_and_releases_publish_module_events(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        notify(&mut con, "Kd");
        let mut sub_con = s.conn();
        let mut sub = Subscriber::new(&mut sub_con, &["__keyspace@0__:*"]);

        let v = query(&mut con, &[b"PYLOCK.ACQUIRE", b"k", b"60000", b"LEASE", b"a"]);
        let a = Lease::from_value(&v);
        assert_eq!(sub.until_marker(&mut con), vec![keyspace("k", "pylock.acquire")]);

        // Nothing changes, nothing is published: contention, a plain CONFIRM, INFO, refusals.
        query(&mut con, &[b"PYLOCK.ACQUIRE", b"k", b"1000"]);
        query(&mut con, &[b"PYLOCK.CONFIRM", b"k", b"a"]);
        query(&mut con, &[b"PYLOCK.INFO", b"k"]);
        let _ = redis::cmd("PYLOCK.CONFIRM").arg("k").arg("other").query::<Value>(&mut con);
        let _ = redis::cmd("PYLOCK.RELEASE").arg("free").arg("a").query::<Value>(&mut con);
        assert_eq!(sub.until_marker(&mut con), vec![]);

        // A same-LEASE retry and CONFIRM … EXTEND move the deadline.
        query(&mut con, &[b"PYLOCK.ACQUIRE", b"k", b"30000", b"LEASE", b"a"]);
        query(&mut con, &[b"PYLOCK.CONFIRM", b"k", b"a", b"EXTEND", b"40000"]);
        assert_eq!(
            sub.until_marker(&mut con),
            vec![keyspace("k", "pylock.extend"), keyspace("k", "pylock.extend")]
        );

        assert_eq!(query(&mut con, &[b"PYLOCK.RELEASE", b"k", &a.id]), Value::Int(1));
        assert_eq!(sub.until_marker(&mut con), vec![keyspace("k", "pylock.release")]);

        // Without `d` in the configuration there are none.
        notify(&mut con, "Kg");
        let b = acquire(&mut con, "k", 60_000).unwrap();
        assert_eq!(query(&mut con, &[b"PYLOCK.RELEASE", b"k", &b.id]), Value::Int(1));
        assert_eq!(sub.until_marker(&mut con), vec![]);
    }

    fn keyevent_channels_carry_the_key(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        notify(&mut con, "Ed");
        let mut sub_con = s.conn();
        let mut sub = Subscriber::new(&mut sub_con, &["__keyevent@*__:pylock.*"]);
        redis::cmd("SELECT").arg(3).query::<()>(&mut con).unwrap();
        let l = acquire(&mut con, "lock:x", 60_000).unwrap();
        query(&mut con, &[b"PYLOCK.CONFIRM", b"lock:x", &l.id, b"EXTEND", b"5000"]);
        query(&mut con, &[b"PYLOCK.RELEASE", b"lock:x", &l.id]);
        let ev = |e: &str| (format!("__keyevent@3__:{e}"), "lock:x".to_string());
        assert_eq!(
            sub.until_marker(&mut con),
            vec![ev("pylock.acquire"), ev("pylock.extend"), ev("pylock.release")]
        );
    }

    fn hand_offs_publish_release_then_handoff_in_fifo_order(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        // Every class on: the module's own handler (generic, expired, evicted) must still not
        // be woken by the module-class events, and the queue must be served in order.
        notify(&mut con, "KEA");
        let mut sub_con = s.conn();
        let mut sub = Subscriber::new(&mut sub_con, &["__keyspace@0__:k"]);
        let first = acquire(&mut con, "k", 60_000).unwrap();
        let (tx, rx) = mpsc::channel();
        for name in ["w1", "w2", "w3"] {
            let mut w = s.conn();
            let tx = tx.clone();
            thread::spawn(move || {
                let v = query(&mut w, &[b"PYLOCK.ACQUIRE", b"k", b"60000", b"LEASE", name.as_bytes(), b"BLOCK", b"20000"]);
                tx.send((name, Lease::from_value(&v))).unwrap();
            });
            let queued = match name { "w1" => 1, "w2" => 2, _ => 3 };
            wait_until(Duration::from_secs(5), || holder(&mut con, "k").is_some_and(|h| h.waiters == queued)).unwrap();
        }
        assert_eq!(sub.until_marker(&mut con), vec![keyspace("k", "pylock.acquire")]);

        let mut holder_id = first.id.clone();
        let mut last_token = first.token;
        for want in ["w1", "w2", "w3"] {
            assert_eq!(query(&mut con, &[b"PYLOCK.RELEASE", b"k", &holder_id]), Value::Int(1));
            let (name, lease) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
            assert_eq!(name, want, "FIFO");
            assert_eq!(lease.id, want.as_bytes());
            assert!(lease.token > last_token);
            assert_eq!(
                sub.until_marker(&mut con),
                vec![keyspace("k", "pylock.release"), keyspace("k", "pylock.handoff")],
                "{want}"
            );
            holder_id = lease.id;
            last_token = lease.token;
        }
        assert_eq!(holder(&mut con, "k").unwrap().waiters, 0);
    }

    fn expiry_hands_off_with_an_event(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        notify(&mut con, "KEA");
        let mut sub_con = s.conn();
        let mut sub = Subscriber::new(&mut sub_con, &["__keyspace@0__:k"]);
        acquire(&mut con, "k", 300).unwrap();
        let mut w = s.conn();
        let waiter = thread::spawn(move || {
            query(&mut w, &[b"PYLOCK.ACQUIRE", b"k", b"60000", b"LEASE", b"next", b"BLOCK", b"20000"])
        });
        let got = sub.collect(|_, payload| payload == "pylock.handoff");
        assert_eq!(got.first(), Some(&keyspace("k", "pylock.acquire")), "{got:?}");
        let lease = Lease::from_value(&waiter.join().unwrap());
        assert_eq!(lease.id, b"next");
        assert_eq!(holder(&mut con, "k").unwrap().lease.id, b"next");
    }

    fn a_replica_publishes_restore_for_a_replicated_grant(kind: Kind) {
        let primary = Server::start(kind);
        let replica = primary.start_replica(&[]);
        let mut r = replica.conn();
        notify(&mut r, "Kd");
        let mut sub_con = replica.conn();
        let mut sub = Subscriber::new(&mut sub_con, &["__keyspace@0__:k"]);
        let mut p = primary.conn();
        let wait = |p: &mut redis::Connection| {
            let acked: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(p).unwrap();
            assert_eq!(acked, 1);
        };
        let l = acquire(&mut p, "k", 60_000).unwrap();
        wait(&mut p);
        assert_eq!(sub.until_marker(&mut r), vec![keyspace("k", "pylock.restore")]);
        // An extension reaches a replica as the whole lease again (pylock.restore), a release
        // as DEL (Redis's own event).
        notify(&mut r, "Kgd");
        query(&mut p, &[b"PYLOCK.CONFIRM", b"k", &l.id, b"EXTEND", b"30000"]);
        assert_eq!(query(&mut p, &[b"PYLOCK.RELEASE", b"k", &l.id]), Value::Int(1));
        wait(&mut p);
        assert_eq!(
            sub.until_marker(&mut r),
            vec![keyspace("k", "pylock.restore"), keyspace("k", "del")]
        );
    }
}
