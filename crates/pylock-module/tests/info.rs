//! `PYLOCK.INFO` on a free lock (nil, no key made), and the server's `INFO pylock` section,
//! which counts each outcome of each command.

mod common;

use common::dbsize;
use testkit::redis::{self, Value};
use testkit::{acquire, query, query_err, server_tests, Server};

server_tests! {
    fn info_on_free_lock_is_nil(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        assert_eq!(query(&mut con, &[b"PYLOCK.INFO", b"nothing"]), Value::Nil);
        assert_eq!(dbsize(&mut con), 0);
    }

    fn info_section_counts_each_outcome(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let a = acquire(&mut con, "k", 60_000).unwrap();
        acquire(&mut con, "k", 60_000);
        acquire(&mut con, "k", 60_000);
        query(&mut con, &[b"PYLOCK.CONFIRM", b"k", &a.id]);
        query(&mut con, &[b"PYLOCK.CONFIRM", b"k", &a.id, b"EXTEND", b"1000"]);
        query_err(&mut con, &[b"PYLOCK.CONFIRM", b"k", b"nope"]);
        query_err(&mut con, &[b"PYLOCK.RELEASE", b"k", b"nope"]);
        query_err(&mut con, &[b"PYLOCK.RELEASE", b"free", b"nope"]);
        query_err(&mut con, &[b"PYLOCK.ACQUIRE", b"k", b"0"]);
        query(&mut con, &[b"PYLOCK.RELEASE", b"k", &a.id]);
        let text: String = redis::cmd("INFO").arg("pylock").query(&mut con).unwrap();
        assert!(text.contains("# pylock"), "{text}");
        // Redis prefixes every module INFO field with the module name.
        let field = |name: &str| testkit::info_field(&text, &format!("pylock_{name}"));
        let want = [
            ("acquired", "1"),
            ("contended", "2"),
            ("released", "1"),
            ("confirmed", "1"),
            ("extended", "1"),
            ("notheld", "1"),
            ("notowned", "2"),
            ("waiting", "0"),
        ];
        for (name, value) in want {
            assert_eq!(field(name).as_deref(), Some(value), "{name} in\n{text}");
        }
    }
}
