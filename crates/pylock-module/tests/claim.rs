//! `PYLOCK.CONFIRM … CLAIM` against real servers: a claim passes the lease to a new id with a
//! new token and never frees the lock; a retry is the same success; the loser gets `CLAIMED`;
//! and a replica, an RDB restart, an AOF replay and `DEBUG RELOAD` keep the claimed-from
//! relation.

mod common;

use std::time::Duration;

use common::{dbsize, dump, high_water, now_ms};
use testkit::redis;
use testkit::{holder, pexpiretime, query, query_err, server_tests, Lease, Server};

fn take(con: &mut redis::Connection, key: &str, ttl: &str, id: &str) -> Lease {
    Lease::from_value(&query(
        con,
        &[
            b"PYLOCK.ACQUIRE",
            key.as_bytes(),
            ttl.as_bytes(),
            b"LEASE",
            id.as_bytes(),
        ],
    ))
}

fn claim(
    con: &mut redis::Connection,
    key: &str,
    from: &str,
    to: &str,
) -> redis::RedisResult<Lease> {
    redis::cmd("PYLOCK.CONFIRM")
        .arg(key)
        .arg(from)
        .arg("CLAIM")
        .arg(to)
        .query::<redis::Value>(con)
        .map(|v| Lease::from_value(&v))
}

fn claimed_count(s: &Server) -> i64 {
    s.info("pylock", "pylock_claimed").unwrap().parse().unwrap()
}

server_tests! {
    fn a_claim_passes_the_lease_on_and_only_one_claimant_wins(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let old = take(&mut con, "k", "60000", "msg-1");
        let deadline = pexpiretime(&mut con, "k");

        let won = claim(&mut con, "k", "msg-1", "run-a").unwrap();
        assert_eq!(won.id, b"run-a");
        assert!(won.token > old.token, "a claim takes a larger token");
        assert!(won.ttl_ms > 59_000 && won.ttl_ms <= 60_000);
        assert_eq!(pexpiretime(&mut con, "k"), deadline, "the deadline stays");
        let h = holder(&mut con, "k").unwrap();
        assert_eq!((h.lease.id.as_slice(), h.lease.token), (b"run-a".as_slice(), won.token));

        // The same claim again (a lost reply): the same success, the same token.
        let again = claim(&mut con, "k", "msg-1", "run-a").unwrap();
        assert_eq!((again.id.as_slice(), again.token), (b"run-a".as_slice(), won.token));
        // With EXTEND it applies again.
        let v = query(&mut con, &[b"PYLOCK.CONFIRM", b"k", b"msg-1", b"CLAIM", b"run-a", b"EXTEND", b"90000"]);
        let ext = Lease::from_value(&v);
        assert_eq!((ext.token, ext.ttl_ms), (won.token, 90_000));
        assert!(pexpiretime(&mut con, "k") - now_ms() > 89_000);

        // A duplicate run with the same old id: CLAIMED, and nothing changes.
        let before = (dump(&mut con, "k"), pexpiretime(&mut con, "k"));
        let err = claim(&mut con, "k", "msg-1", "run-b").unwrap_err();
        assert_eq!(err.code(), Some("CLAIMED"), "{err}");
        for args in [
            &[b"PYLOCK.CONFIRM".as_slice(), b"k", b"msg-1"][..],
            &[b"PYLOCK.CONFIRM", b"k", b"msg-1", b"EXTEND", b"5"],
            &[b"PYLOCK.RELEASE", b"k", b"msg-1"],
        ] {
            let e = query_err(&mut con, args);
            assert!(e.starts_with("CLAIMED "), "{args:?}: {e}");
        }
        let w: redis::Value = redis::cmd("PYLOCK.WATCH").arg("k").arg("msg-1").query(&mut con).unwrap();
        assert_eq!(w, redis::Value::BulkString(b"claimed".to_vec()));
        assert_eq!((dump(&mut con, "k"), pexpiretime(&mut con, "k")), before, "untouched");
        assert_eq!(claimed_count(&s), 3, "the claim, its retry and the retry with EXTEND");

        // Only the direct predecessor is remembered: after msg-1 -> run-a -> run-c, msg-1 is
        // just another lease.
        let c = claim(&mut con, "k", "run-a", "run-c").unwrap();
        assert!(c.token > won.token);
        let e = query_err(&mut con, &[b"PYLOCK.CONFIRM", b"k", b"msg-1"]);
        assert!(e.starts_with("NOTOWNED "), "{e}");
        let e = query_err(&mut con, &[b"PYLOCK.CONFIRM", b"k", b"run-a"]);
        assert!(e.starts_with("CLAIMED "), "{e}");
        assert_eq!(claim(&mut con, "k", "msg-1", "run-c").unwrap_err().code(), Some("NOTOWNED"));

        // The claimant releases; the key is gone.
        assert_eq!(query(&mut con, &[b"PYLOCK.RELEASE", b"k", b"run-c"]), redis::Value::Int(1));
        assert_eq!(dbsize(&mut con), 0);
        assert_eq!(claim(&mut con, "k", "run-c", "x").unwrap_err().code(), Some("NOTHELD"));
    }

    fn a_claim_of_an_expired_or_foreign_lease_is_refused(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        take(&mut con, "short", "50", "old");
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(claim(&mut con, "short", "old", "new").unwrap_err().code(), Some("NOTHELD"));
        take(&mut con, "k", "60000", "theirs");
        let before = dump(&mut con, "k");
        assert_eq!(claim(&mut con, "k", "mine", "new").unwrap_err().code(), Some("NOTOWNED"));
        assert_eq!(dump(&mut con, "k"), before);
        // Bad CLAIM ids change nothing either.
        for bad in [&b""[..], b"theirs", &[b'x'; 129]] {
            let e = query_err(&mut con, &[b"PYLOCK.CONFIRM", b"k", b"theirs", b"CLAIM", bad]);
            assert_eq!(e, "ERR invalid lease id");
        }
        assert_eq!(dump(&mut con, "k"), before);
        let mut other = s.conn();
        redis::cmd("SET").arg("str").arg("v").query::<()>(&mut other).unwrap();
        let e = query_err(&mut con, &[b"PYLOCK.CONFIRM", b"str", b"a", b"CLAIM", b"b"]);
        assert!(e.starts_with("WRONGTYPE"), "{e}");
        assert_eq!(claimed_count(&s), 0);
    }

    fn a_claim_never_frees_the_lock_for_waiters(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        take(&mut con, "k", "60000", "msg");
        let port = s.port();
        let waiter = std::thread::spawn(move || {
            let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap()
                .get_connection().unwrap();
            redis::cmd("PYLOCK.ACQUIRE").arg("k").arg(1000).arg("BLOCK").arg(400)
                .query::<redis::Value>(&mut c).unwrap()
        });
        testkit::wait_until(Duration::from_secs(5), || holder(&mut con, "k").unwrap().waiters == 1).unwrap();
        claim(&mut con, "k", "msg", "run").unwrap();
        // The waiter times out: the claim never let the lock go.
        assert_eq!(waiter.join().unwrap(), redis::Value::Nil);
        assert_eq!(holder(&mut con, "k").unwrap().lease.id, b"run");
        // Released by the claimant, the lock passes to the next waiter as usual.
        let port = s.port();
        let waiter = std::thread::spawn(move || {
            let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap()
                .get_connection().unwrap();
            redis::cmd("PYLOCK.ACQUIRE").arg("k").arg(1000).arg("LEASE").arg("next").arg("BLOCK").arg(5000)
                .query::<redis::Value>(&mut c).unwrap()
        });
        testkit::wait_until(Duration::from_secs(5), || holder(&mut con, "k").unwrap().waiters == 1).unwrap();
        query(&mut con, &[b"PYLOCK.RELEASE", b"k", b"run"]);
        assert_eq!(Lease::from_value(&waiter.join().unwrap()).id, b"next");
    }

    fn a_replica_and_restarts_keep_the_claim(kind: Kind) {
        let mut primary = Server::start_with(kind, &["--appendonly", "yes", "--appendfsync", "always"]);
        let replica = primary.start_replica(&[]);
        let mut p = primary.conn();
        take(&mut p, "k", "600000", "msg-9");
        let won = claim(&mut p, "k", "msg-9", "run-9").unwrap();
        let expiry = pexpiretime(&mut p, "k");
        let acked: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(&mut p).unwrap();
        assert_eq!(acked, 1);

        let check = |con: &mut redis::Connection, what: &str| {
            let h = holder(con, "k").unwrap_or_else(|| panic!("{what}: lock lost"));
            assert_eq!((h.lease.id.as_slice(), h.lease.token), (b"run-9".as_slice(), won.token), "{what}");
            assert_eq!(pexpiretime(con, "k"), expiry, "{what}: absolute expiry");
            // The claimed-from relation survived: the old id gets CLAIMED, not NOTOWNED.
            let e = redis::cmd("PYLOCK.CONFIRM").arg("k").arg("msg-9")
                .query::<redis::Value>(con).unwrap_err();
            assert_eq!(e.code(), Some("CLAIMED"), "{what}: {e}");
        };
        // On the replica, CONFIRM is refused as a write; promote it to ask.
        let mut r = replica.conn();
        let h = holder(&mut r, "k").unwrap();
        assert_eq!((h.lease.id.as_slice(), h.lease.token), (b"run-9".as_slice(), won.token), "replica");
        redis::cmd("REPLICAOF").arg("NO").arg("ONE").query::<()>(&mut r).unwrap();
        check(&mut r, "promoted replica");
        assert!(high_water(&replica) >= won.token);

        redis::cmd("DEBUG").arg("RELOAD").query::<()>(&mut p).unwrap();
        check(&mut p, "DEBUG RELOAD");
        primary.restart_with(&["--appendonly", "yes"]);
        let mut p = primary.conn();
        check(&mut p, "AOF restart");
        redis::cmd("BGREWRITEAOF").query::<()>(&mut p).unwrap();
        primary.wait_aof_rewrite_done();
        primary.restart_with(&["--appendonly", "yes", "--aof-use-rdb-preamble", "no"]);
        let mut p = primary.conn();
        redis::cmd("BGREWRITEAOF").query::<()>(&mut p).unwrap();
        primary.wait_aof_rewrite_done();
        primary.restart_with(&["--appendonly", "yes", "--aof-use-rdb-preamble", "no"]);
        let mut p = primary.conn();
        check(&mut p, "AOF rewritten without the RDB preamble");
        redis::cmd("SAVE").query::<()>(&mut p).unwrap();
        primary.restart_with(&["--appendonly", "no"]);
        let mut p = primary.conn();
        check(&mut p, "RDB restart");
        let next = claim(&mut p, "k", "run-9", "run-10").unwrap();
        assert!(next.token > won.token, "tokens go on above the claim's");
    }
}
