//! `PYLOCK.CONFIRM` against real servers: the lease reply, `EXTEND`, and `NOTOWNED` / `NOTHELD`
//! with nothing changed.

mod common;

use common::{dbsize, dump, now_ms};
use testkit::{acquire, pexpiretime, query, query_err, server_tests, Lease, Server};

server_tests! {
    fn confirm_replies_and_errors(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let lease = acquire(&mut con, "k", 60_000).unwrap();
        let id = lease.id.as_slice();
        let v = query(&mut con, &[b"PYLOCK.CONFIRM", b"k", id]);
        let c = Lease::from_value(&v);
        assert_eq!((c.id.as_slice(), c.token), (id, lease.token));
        assert!(c.ttl_ms > 59_000 && c.ttl_ms <= 60_000);

        let v = query(&mut con, &[b"PYLOCK.CONFIRM", b"k", id, b"EXTEND", b"120000"]);
        let e = Lease::from_value(&v);
        assert_eq!((e.token, e.ttl_ms), (lease.token, 120_000));
        assert!(pexpiretime(&mut con, "k") - now_ms() > 119_000);

        let before = (dump(&mut con, "k"), pexpiretime(&mut con, "k"));
        let err = query_err(&mut con, &[b"PYLOCK.CONFIRM", b"k", b"not-mine", b"EXTEND", b"5"]);
        assert!(err.starts_with("NOTOWNED "), "{err}");
        assert_eq!((dump(&mut con, "k"), pexpiretime(&mut con, "k")), before, "untouched");
        let err = query_err(&mut con, &[b"PYLOCK.CONFIRM", b"free", id]);
        assert!(err.starts_with("NOTHELD "), "{err}");
        assert_eq!(dbsize(&mut con), 1);
    }
}
