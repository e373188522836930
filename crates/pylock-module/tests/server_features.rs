//! The commands inside the server's own machinery: `COMMAND GETKEYS` and the `COMMAND INFO`
//! flags, RESP3 replies, `MULTI`/`EXEC`, `WATCH` (broken only by changes), and Lua scripts.

use testkit::redis::{self, Value};
use testkit::{acquire, holder, query, query_err, server_tests, Lease, Server};

server_tests! {
    fn resp3_replies_match_resp2(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn_resp3();
        let v = query(&mut con, &[b"PYLOCK.ACQUIRE", b"k", b"5000", b"LEASE", b"r3"]);
        let l = Lease::from_value(&v);
        assert_eq!((l.id.as_slice(), l.ttl_ms), (b"r3".as_slice(), 5000));
        assert_eq!(query(&mut con, &[b"PYLOCK.ACQUIRE", b"k", b"5000"]), Value::Nil);
        let h = holder(&mut con, "k").unwrap();
        assert_eq!(h.lease.token, l.token);
        assert_eq!(query(&mut con, &[b"PYLOCK.INFO", b"free"]), Value::Nil);
        assert_eq!(query(&mut con, &[b"PYLOCK.RELEASE", b"k", b"r3"]), Value::Int(1));
        let err = query_err(&mut con, &[b"PYLOCK.RELEASE", b"k", b"r3"]);
        assert!(err.starts_with("NOTHELD "));
    }

    fn command_getkeys_reports_the_key(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        for args in [
            vec!["PYLOCK.ACQUIRE", "the-key", "100", "LEASE", "x"],
            vec!["PYLOCK.CONFIRM", "the-key", "x", "EXTEND", "5"],
            vec!["PYLOCK.RELEASE", "the-key", "x"],
            vec!["PYLOCK.INFO", "the-key"],
        ] {
            let keys: Vec<String> =
                redis::cmd("COMMAND").arg("GETKEYS").arg(&args).query(&mut con).unwrap();
            assert_eq!(keys, vec!["the-key"], "{args:?}");
        }
    }

    fn command_flags(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let flags = |con: &mut redis::Connection, name: &str| -> Vec<String> {
            let v: Value = redis::cmd("COMMAND").arg("INFO").arg(name).query(con).unwrap();
            let Value::Array(outer) = v else { panic!("{v:?}") };
            let Some(Value::Array(info)) = outer.first() else { panic!("{outer:?}") };
            match &info[2] {
                Value::Array(f) | Value::Set(f) => f
                    .iter()
                    .map(|x| match x {
                        Value::SimpleString(s) => s.clone(),
                        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                        other => panic!("{other:?}"),
                    })
                    .collect(),
                other => panic!("{other:?}"),
            }
        };
        let has = |f: &[String], x: &str| f.iter().any(|s| s == x);
        let a = flags(&mut con, "pylock.acquire");
        assert!(has(&a, "write") && has(&a, "denyoom") && has(&a, "fast"), "{a:?}");
        for name in ["pylock.confirm", "pylock.release"] {
            let f = flags(&mut con, name);
            assert!(has(&f, "write") && has(&f, "fast") && !has(&f, "denyoom"), "{name}: {f:?}");
        }
        let i = flags(&mut con, "pylock.info");
        assert!(has(&i, "readonly") && has(&i, "fast") && !has(&i, "write"), "{i:?}");
        let modules: Value = redis::cmd("MODULE").arg("LIST").query(&mut con).unwrap();
        assert!(format!("{modules:?}").contains("pylock"), "{modules:?}");
    }

    fn multi_exec_runs_commands_in_order(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let replies: Vec<Value> = redis::pipe()
            .atomic()
            .cmd("PYLOCK.ACQUIRE").arg("k").arg(10_000).arg("LEASE").arg("m1")
            .cmd("PYLOCK.ACQUIRE").arg("k").arg(10_000)
            .cmd("PYLOCK.INFO").arg("k")
            .query(&mut con)
            .unwrap();
        assert_eq!(Lease::from_value(&replies[0]).id, b"m1");
        assert_eq!(replies[1], Value::Nil);
        assert_ne!(replies[2], Value::Nil);
    }

    fn watch_is_broken_only_by_changes(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let mut other = s.conn();
        let lease = acquire(&mut con, "k", 60_000).unwrap();
        // Calls that change nothing must not abort a transaction watching the key.
        let unchanged: [Vec<&[u8]>; 4] = [
            vec![b"PYLOCK.ACQUIRE", b"k", b"1000"],
            vec![b"PYLOCK.CONFIRM", b"k", &lease.id],
            vec![b"PYLOCK.INFO", b"k"],
            vec![b"PYLOCK.ACQUIRE", b"k", b"1000", b"LEASE", b"intruder"],
        ];
        for args in &unchanged {
            redis::cmd("WATCH").arg("k").query::<()>(&mut con).unwrap();
            query(&mut other, args);
            let r: Option<Vec<i64>> = redis::pipe().atomic().cmd("PING").ignore().cmd("DBSIZE").query(&mut con).unwrap();
            assert!(r.is_some(), "{args:?} aborted a WATCH");
        }
        let changed: [Vec<&[u8]>; 2] = [
            vec![b"PYLOCK.CONFIRM", b"k", &lease.id, b"EXTEND", b"5000"],
            vec![b"PYLOCK.RELEASE", b"k", &lease.id],
        ];
        for args in &changed {
            redis::cmd("WATCH").arg("k").query::<()>(&mut con).unwrap();
            query(&mut other, args);
            let r: Option<Vec<i64>> = redis::pipe().atomic().cmd("DBSIZE").query(&mut con).unwrap();
            assert!(r.is_none(), "{args:?} did not abort a WATCH");
        }
        redis::cmd("WATCH").arg("k").query::<()>(&mut con).unwrap();
        acquire(&mut other, "k", 1000).unwrap();
        let r: Option<Vec<i64>> = redis::pipe().atomic().cmd("DBSIZE").query(&mut con).unwrap();
        assert!(r.is_none(), "a grant did not abort a WATCH");
    }

    fn scripts_get_nil_on_contention_and_go_on(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let script = r#"
            local first = redis.call('PYLOCK.ACQUIRE', KEYS[1], 10000)
            local second = redis.call('PYLOCK.ACQUIRE', KEYS[1], 10000)
            local ok = redis.call('PYLOCK.RELEASE', KEYS[1], first[1])
            local third = redis.call('PYLOCK.ACQUIRE', KEYS[1], 10000, 'LEASE', 'from-lua')
            return {first[1], tostring(second), ok, third[1], third[2] > first[2] and 1 or 0}
        "#;
        let v: Value = redis::cmd("EVAL").arg(script).arg(1).arg("k").query(&mut con).unwrap();
        let Value::Array(items) = v else { panic!("{v:?}") };
        assert_eq!(items[1], Value::BulkString(b"false".to_vec()), "nil is false in Lua");
        assert_eq!(items[2], Value::Int(1));
        assert_eq!(items[3], Value::BulkString(b"from-lua".to_vec()));
        assert_eq!(items[4], Value::Int(1), "token increased inside the script");
        // An error reply raised inside a script aborts it, as for any Redis command.
        let err = redis::cmd("EVAL")
            .arg("return redis.call('PYLOCK.CONFIRM', KEYS[1], 'nope')")
            .arg(1).arg("k")
            .query::<Value>(&mut con)
            .unwrap_err();
        assert!(testkit::error_text(&err).contains("NOTOWNED"), "{err}");
    }
}
