//! `LockHandle::watch` (sync) against real servers: each way a lease ends is answered with its
//! reason, on a connection of its own, and a timeout is `None`.

use std::thread;
use std::time::{Duration, Instant};

use pylocks::{LeaseEnd, LockFactory, LockHandle};
use testkit::redis;
use testkit::{server_tests, wait_until, Server};

fn jobs(ttl: Duration) -> LockFactory {
    LockFactory::builder("job", ttl)
        .no_root_prefix()
        .build()
        .unwrap()
}

/// Starts a watch of `handle` on its own connection, waits until the server counts it, runs
/// `end`, and returns the answer and how long after `end` it came.
fn watch_through(
    s: &Server,
    handle: &LockHandle,
    end: impl FnOnce(),
) -> (Option<LeaseEnd>, Duration) {
    let mut con = s.conn();
    let h = handle.clone();
    let watcher = thread::spawn(move || {
        let got = h.watch(&mut con, Some(Duration::from_secs(10)));
        (got, Instant::now())
    });
    wait_until(Duration::from_secs(5), || watching(s) == 1).expect("the watch blocks");
    let ended = Instant::now();
    end();
    let (got, answered) = watcher.join().unwrap();
    (
        got.expect("a reason, not an error"),
        answered.saturating_duration_since(ended),
    )
}

fn watching(s: &Server) -> u64 {
    s.info("pylock", "pylock_watching")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

server_tests! {
    fn a_lease_that_is_gone_is_answered_at_once(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let f = jobs(Duration::from_secs(30));
        let h = f.acquire(&mut con, [1]).unwrap();
        h.clone().release(&mut con).unwrap();
        assert_eq!(h.watch(&mut con, None).unwrap(), Some(LeaseEnd::NotHeld));
        let _other = f.acquire(&mut con, [1]).unwrap();
        assert_eq!(h.watch(&mut con, None).unwrap(), Some(LeaseEnd::NotOwned));

        let given = f.acquire(&mut con, [2]).unwrap();
        let _mine = given.claim(&mut con, None).unwrap();
        assert_eq!(given.watch(&mut con, None).unwrap(), Some(LeaseEnd::Claimed));
    }

    fn a_held_lease_times_out_as_none_and_renewals_do_not_end_the_wait(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let mut h = jobs(Duration::from_secs(30)).acquire(&mut con, [3]).unwrap();
        let start = Instant::now();
        assert_eq!(h.watch(&mut con, Some(Duration::from_millis(100))).unwrap(), None);
        assert!(start.elapsed() >= Duration::from_millis(95), "{:?}", start.elapsed());

        let (got, _) = watch_through(&s, &h.clone(), || {
            h.extend(&mut s.conn(), Duration::from_secs(60)).unwrap();
            h.confirm(&mut s.conn()).unwrap();
            thread::sleep(Duration::from_millis(100));
            h.clone().release(&mut s.conn()).unwrap();
        });
        assert_eq!(got, Some(LeaseEnd::Released), "EXTEND and CONFIRM did not end the wait");
    }

    fn release_expiry_claim_delete_and_flush_each_answer_their_reason(kind: Kind) {
        let s = Server::start(kind);
        let f = jobs(Duration::from_secs(30));
        let mut con = s.conn();
        let bound = Duration::from_millis(100);

        let h = f.acquire(&mut con, [10]).unwrap();
        let (got, took) = watch_through(&s, &h, || h.clone().release(&mut s.conn()).unwrap());
        assert_eq!(got, Some(LeaseEnd::Released));
        assert!(took < bound, "{took:?}");

        let h = jobs(Duration::from_millis(300)).acquire(&mut con, [11]).unwrap();
        let (got, _) = watch_through(&s, &h, || ());
        assert_eq!(got, Some(LeaseEnd::Expired));

        let h = f.acquire(&mut con, [12]).unwrap();
        let (got, took) = watch_through(&s, &h, || {
            h.claim(&mut s.conn(), None).unwrap();
        });
        assert_eq!(got, Some(LeaseEnd::Claimed));
        assert!(took < bound, "{took:?}");

        let h = f.acquire(&mut con, [13]).unwrap();
        let (got, took) = watch_through(&s, &h, || {
            redis::cmd("DEL").arg("job:13").query::<()>(&mut s.conn()).unwrap();
        });
        assert_eq!(got, Some(LeaseEnd::Deleted));
        assert!(took < bound, "{took:?}");

        let h = f.acquire(&mut con, [14]).unwrap();
        let (got, took) = watch_through(&s, &h, || {
            redis::cmd("FLUSHALL").query::<()>(&mut s.conn()).unwrap();
        });
        assert_eq!(got, Some(LeaseEnd::Flushed));
        assert!(took < bound, "{took:?}");
        assert_eq!(watching(&s), 0);
    }

    fn client_unblock_ends_the_wait_with_none(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let h = jobs(Duration::from_secs(30)).acquire(&mut con, [20]).unwrap();
        for how in [None, Some("ERROR")] {
            let mut watch_con = s.conn();
            let id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut watch_con).unwrap();
            let h2 = h.clone();
            let watcher = thread::spawn(move || h2.watch(&mut watch_con, None));
            wait_until(Duration::from_secs(5), || watching(&s) == 1).expect("the watch blocks");
            let mut unblock = redis::cmd("CLIENT");
            unblock.arg("UNBLOCK").arg(id);
            if let Some(how) = how {
                unblock.arg(how);
            }
            assert_eq!(unblock.query::<i64>(&mut con).unwrap(), 1, "{how:?}");
            // Neither the plain unblock nor its ERROR form is a role change.
            assert_eq!(watcher.join().unwrap().unwrap(), None, "{how:?}");
        }
        h.release(&mut con).unwrap();
    }

    fn a_role_change_reads_as_demoted(kind: Kind) {
        let s = Server::start(kind);
        let other = Server::start(kind);
        let mut con = s.conn();
        let h = jobs(Duration::from_secs(30)).acquire(&mut con, [30]).unwrap();
        // Redis 7.0 and Valkey answer the blocked watch with their own UNBLOCKED error on a role
        // change; the client reads that, or the module's `demoted`, as Demoted.
        let (got, took) = watch_through(&s, &h, || {
            redis::cmd("REPLICAOF").arg("127.0.0.1").arg(other.port()).query::<()>(&mut s.conn()).unwrap();
        });
        assert_eq!(got, Some(LeaseEnd::Demoted));
        assert!(took < Duration::from_millis(100), "{took:?}");
        assert_eq!(watching(&s), 0);
    }
}
