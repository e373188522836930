//! `PYLOCK.RELEASE` against real servers: 1 and the key gone, `NOTOWNED` with the lock intact,
//! and `NOTHELD` (from `CONFIRM` too) once it is released.

mod common;

use common::{dbsize, dump};
use testkit::redis::Value;
use testkit::{acquire, holder, query, query_err, server_tests, Server};

server_tests! {
    fn release_replies_and_errors(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let lease = acquire(&mut con, "k", 60_000).unwrap();
        let before = dump(&mut con, "k");
        let err = query_err(&mut con, &[b"PYLOCK.RELEASE", b"k", b"someone-else"]);
        assert!(err.starts_with("NOTOWNED "), "{err}");
        assert_eq!(dump(&mut con, "k"), before);
        assert_eq!(query(&mut con, &[b"PYLOCK.RELEASE", b"k", &lease.id]), Value::Int(1));
        assert_eq!(dbsize(&mut con), 0);
        assert_eq!(holder(&mut con, "k"), None);
        let err = query_err(&mut con, &[b"PYLOCK.RELEASE", b"k", &lease.id]);
        assert!(err.starts_with("NOTHELD "), "{err}");
        let err = query_err(&mut con, &[b"PYLOCK.CONFIRM", b"k", &lease.id]);
        assert!(err.starts_with("NOTHELD "), "{err}");
    }
}
