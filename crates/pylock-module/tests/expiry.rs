//! A lease that expires: the lock is free, the old lease gets `NOTHELD` and then `NOTOWNED`, and
//! the next grant has a larger token and is left intact.

use std::time::Duration;

use testkit::{acquire, holder, query_err, server_tests, Server};

server_tests! {
    fn expired_lease_frees_the_lock(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let old = acquire(&mut con, "k", 50).unwrap();
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(holder(&mut con, "k"), None);
        let err = query_err(&mut con, &[b"PYLOCK.CONFIRM", b"k", &old.id]);
        assert!(err.starts_with("NOTHELD "), "{err}");
        let new = acquire(&mut con, "k", 50).unwrap();
        assert!(new.token > old.token);
        // The old holder's lease is gone: a late release is refused and the new one is intact.
        let err = query_err(&mut con, &[b"PYLOCK.RELEASE", b"k", &old.id]);
        assert!(err.starts_with("NOTOWNED "), "{err}");
        assert_eq!(holder(&mut con, "k").unwrap().lease.id, new.id);
    }
}
