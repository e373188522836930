//! Locks and the server's other types: every PYLOCK command on a string, hash, list, set, sorted
//! set or stream gets `WRONGTYPE` and changes nothing, `GET` on a lock gets `WRONGTYPE`, and
//! `COPY` of a lock is refused (a lease must not be duplicated).

mod common;

use common::{dbsize, dump};
use testkit::redis::{self, Value};
use testkit::{acquire, pexpiretime, query_err, server_tests, Server};

server_tests! {
    fn wrong_type_keys_are_refused_and_untouched(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let setup: [&[&str]; 6] = [
            &["SET", "string", "v"],
            &["HSET", "hash", "lease", "x", "token", "1"],
            &["RPUSH", "list", "a"],
            &["SADD", "set", "a"],
            &["ZADD", "zset", "1", "a"],
            &["XADD", "stream", "*", "f", "v"],
        ];
        for cmd in setup {
            let mut c = redis::cmd(cmd[0]);
            c.arg(&cmd[1..]);
            c.query::<Value>(&mut con).unwrap();
        }
        redis::cmd("PEXPIRE").arg("string").arg(100_000).query::<i64>(&mut con).unwrap();
        let wrongtype = "WRONGTYPE Operation against a key holding the wrong kind of value";
        for key in ["string", "hash", "list", "set", "zset", "stream"] {
            let before = (dump(&mut con, key), pexpiretime(&mut con, key));
            let k = key.as_bytes();
            for args in [
                vec![b"PYLOCK.ACQUIRE".as_slice(), k, b"1000"],
                vec![b"PYLOCK.ACQUIRE", k, b"1000", b"LEASE", b"x"],
                vec![b"PYLOCK.CONFIRM", k, b"x"],
                vec![b"PYLOCK.CONFIRM", k, b"x", b"EXTEND", b"10"],
                vec![b"PYLOCK.RELEASE", k, b"x"],
                vec![b"PYLOCK.INFO", k],
            ] {
                assert_eq!(query_err(&mut con, &args), wrongtype, "{key}");
            }
            assert_eq!((dump(&mut con, key), pexpiretime(&mut con, key)), before, "{key} changed");
        }
        // And the other way round: a lock is not a string.
        acquire(&mut con, "lock", 10_000).unwrap();
        let err = redis::cmd("GET").arg("lock").query::<Value>(&mut con).unwrap_err();
        assert_eq!(testkit::error_text(&err), wrongtype);
    }

    fn copy_of_a_lock_is_refused(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        acquire(&mut con, "k", 10_000).unwrap();
        let r = redis::cmd("COPY").arg("k").arg("k2").query::<Value>(&mut con);
        assert!(r.is_err(), "COPY must not duplicate a lease: {r:?}");
        assert_eq!(dbsize(&mut con), 1);
    }
}
