//! Every reply and error of the PYLOCK contract, against real servers.

use std::time::Duration;

use testkit::redis::{self, Value};
use testkit::{acquire, holder, pexpiretime, query, query_err, server_tests, Lease, Server};

fn is_uuid_v4(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && [8, 13, 18, 23].iter().all(|&i| b[i] == b'-')
        && b[14] == b'4'
        && matches!(b[19], b'8' | b'9' | b'a' | b'b')
        && s.chars()
            .filter(|c| *c != '-')
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
}

fn dbsize(con: &mut redis::Connection) -> i64 {
    redis::cmd("DBSIZE").query(con).unwrap()
}

fn dump(con: &mut redis::Connection, key: &str) -> Value {
    redis::cmd("DUMP").arg(key).query(con).unwrap()
}

server_tests! {
    fn acquire_free_lock_grants_a_uuid_lease(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let lease = acquire(&mut con, "lock:a", 60_000).expect("granted");
        assert!(is_uuid_v4(lease.id_str()), "{:?}", lease.id_str());
        assert!(lease.token > 0);
        assert_eq!(lease.ttl_ms, 60_000, "a fresh grant reports its full ttl");
        let held = holder(&mut con, "lock:a").expect("held");
        assert_eq!(held.lease.id, lease.id);
        assert_eq!(held.lease.token, lease.token);
        assert!(held.lease.ttl_ms > 59_000 && held.lease.ttl_ms <= 60_000);
        assert_eq!(held.waiters, 0);
        let left = pexpiretime(&mut con, "lock:a") - now_ms();
        assert!((59_000..=60_000).contains(&left), "absolute expiry is set: {left}");
        let t: String = redis::cmd("TYPE").arg("lock:a").query(&mut con).unwrap();
        assert_eq!(t, "pylock-lk");
    }

    fn server_lease_ids_differ(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let mut ids = std::collections::HashSet::new();
        for i in 0..200 {
            let l = acquire(&mut con, &format!("k{i}"), 10_000).unwrap();
            assert!(ids.insert(l.id));
        }
    }

    fn acquire_held_lock_is_nil_and_changes_nothing(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let first = acquire(&mut con, "k", 60_000).unwrap();
        let before = (dump(&mut con, "k"), pexpiretime(&mut con, "k"));
        assert_eq!(acquire(&mut con, "k", 90_000), None);
        let v = query(&mut con, &[b"PYLOCK.ACQUIRE", b"k", b"90000", b"LEASE", b"other"]);
        assert_eq!(v, Value::Nil);
        assert_eq!((dump(&mut con, "k"), pexpiretime(&mut con, "k")), before);
        assert_eq!(holder(&mut con, "k").unwrap().lease.id, first.id);
    }

    fn acquire_with_own_lease_is_idempotent(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let v = query(&mut con, &[b"PYLOCK.ACQUIRE", b"k", b"1000", b"LEASE", b"job-17"]);
        let first = Lease::from_value(&v);
        assert_eq!(first.id, b"job-17");
        assert_eq!(first.ttl_ms, 1000);
        // A retry after a lost reply: same lease, same token, TTL set to the new value.
        let v = query(&mut con, &[b"pylock.acquire", b"k", b"50000", b"lease", b"job-17"]);
        let again = Lease::from_value(&v);
        assert_eq!(again.id, first.id);
        assert_eq!(again.token, first.token);
        assert_eq!(again.ttl_ms, 50_000);
        let left = pexpiretime(&mut con, "k") - now_ms();
        assert!(left > 49_000, "ttl reset to 50 s, got {left}");
        // Shorter is allowed too: the TTL is set, not only extended.
        let v = query(&mut con, &[b"PYLOCK.ACQUIRE", b"k", b"2000", b"LEASE", b"job-17"]);
        assert_eq!(Lease::from_value(&v).ttl_ms, 2000);
        assert!(pexpiretime(&mut con, "k") - now_ms() <= 2000);
    }

    fn lease_ids_are_binary_safe_up_to_128_bytes(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let id: Vec<u8> = (0..128u8).map(|i| i.wrapping_mul(37)).collect();
        let v = query(&mut con, &[b"PYLOCK.ACQUIRE", b"bin", b"10000", b"LEASE", &id]);
        let lease = Lease::from_value(&v);
        assert_eq!(lease.id, id);
        let v = query(&mut con, &[b"PYLOCK.CONFIRM", b"bin", &id]);
        assert_eq!(Lease::from_value(&v).id, id);
        let v = query(&mut con, &[b"PYLOCK.RELEASE", b"bin", &id]);
        assert_eq!(v, Value::Int(1));
    }

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

    fn info_on_free_lock_is_nil(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        assert_eq!(query(&mut con, &[b"PYLOCK.INFO", b"nothing"]), Value::Nil);
        assert_eq!(dbsize(&mut con), 0);
    }

    fn tokens_increase_across_release_and_expiry(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let mut last = 0;
        for round in 0..20 {
            let l = acquire(&mut con, "k", 30).unwrap();
            assert!(l.token > last, "round {round}: {} <= {last}", l.token);
            last = l.token;
            if round % 2 == 0 {
                query(&mut con, &[b"PYLOCK.RELEASE", b"k", &l.id]);
            } else {
                std::thread::sleep(Duration::from_millis(40));
            }
        }
    }

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

    fn bad_input_gets_the_contract_errors_and_changes_nothing(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let held = acquire(&mut con, "held", 60_000).unwrap();
        let state = |con: &mut redis::Connection| {
            (dump(con, "held"), pexpiretime(con, "held"), dbsize(con))
        };
        let before = state(&mut con);
        let long = vec![b'x'; 129];
        let huge = (i64::MAX - 1000).to_string();
        let acq_expire = "ERR invalid expire time in 'pylock.acquire' command";
        let conf_expire = "ERR invalid expire time in 'pylock.confirm' command";
        let not_int = "ERR value is not an integer or out of range";
        let syntax = "ERR syntax error";
        let cases: Vec<(Vec<&[u8]>, &str)> = vec![
            (vec![b"PYLOCK.ACQUIRE"], "ERR wrong number of arguments for 'pylock.acquire' command"),
            (vec![b"PYLOCK.ACQUIRE", b"new"], "ERR wrong number of arguments for 'pylock.acquire' command"),
            (vec![b"PYLOCK.CONFIRM", b"held"], "ERR wrong number of arguments for 'pylock.confirm' command"),
            (vec![b"PYLOCK.RELEASE", b"held"], "ERR wrong number of arguments for 'pylock.release' command"),
            (vec![b"PYLOCK.RELEASE", b"held", &held.id, b"x"], "ERR wrong number of arguments for 'pylock.release' command"),
            (vec![b"PYLOCK.INFO"], "ERR wrong number of arguments for 'pylock.info' command"),
            (vec![b"PYLOCK.INFO", b"held", b"x"], "ERR wrong number of arguments for 'pylock.info' command"),
            (vec![b"PYLOCK.ACQUIRE", b"new", b"abc"], not_int),
            (vec![b"PYLOCK.ACQUIRE", b"new", b"1.5"], not_int),
            (vec![b"PYLOCK.ACQUIRE", b"new", b"99999999999999999999"], not_int),
            (vec![b"PYLOCK.ACQUIRE", b"new", b"0"], acq_expire),
            (vec![b"PYLOCK.ACQUIRE", b"new", b"-1"], acq_expire),
            (vec![b"PYLOCK.ACQUIRE", b"new", huge.as_bytes()], acq_expire),
            (vec![b"PYLOCK.ACQUIRE", b"held", b"0"], acq_expire),
            (vec![b"PYLOCK.ACQUIRE", b"new", b"100", b"LEASE", b""], "ERR invalid lease id"),
            (vec![b"PYLOCK.ACQUIRE", b"new", b"100", b"LEASE", &long], "ERR invalid lease id"),
            (vec![b"PYLOCK.ACQUIRE", b"new", b"100", b"LEASE"], syntax),
            (vec![b"PYLOCK.ACQUIRE", b"new", b"100", b"LEASE", b"a", b"LEASE", b"b"], syntax),
            (vec![b"PYLOCK.ACQUIRE", b"new", b"100", b"NX"], syntax),
            (vec![b"PYLOCK.ACQUIRE", b"new", b"100", b"EXTEND", b"5"], syntax),
            (vec![b"PYLOCK.ACQUIRE", b"new", b"100", b"BLOCK"], syntax),
            (vec![b"PYLOCK.ACQUIRE", b"new", b"100", b"BLOCK", b"1", b"BLOCK", b"1"], syntax),
            (vec![b"PYLOCK.ACQUIRE", b"new", b"100", b"BLOCK", b"x"], not_int),
            (vec![b"PYLOCK.ACQUIRE", b"new", b"100", b"BLOCK", b"-1"], "ERR timeout is negative"),
            (vec![b"PYLOCK.ACQUIRE", b"held", b"100", b"BLOCK", b"-5"], "ERR timeout is negative"),
            (vec![b"PYLOCK.CONFIRM", b"held", &held.id, b"EXTEND"], syntax),
            (vec![b"PYLOCK.CONFIRM", b"held", &held.id, b"EXTEND", b"1", b"EXTEND", b"1"], syntax),
            (vec![b"PYLOCK.CONFIRM", b"held", &held.id, b"LEASE", b"1"], syntax),
            (vec![b"PYLOCK.CONFIRM", b"held", &held.id, b"EXTEND", b"x"], not_int),
            (vec![b"PYLOCK.CONFIRM", b"held", &held.id, b"EXTEND", b"0"], conf_expire),
            (vec![b"PYLOCK.CONFIRM", b"held", &held.id, b"EXTEND", huge.as_bytes()], conf_expire),
            (vec![b"PYLOCK.CONFIRM", b"held", b""], "ERR invalid lease id"),
            (vec![b"PYLOCK.CONFIRM", b"held", &long], "ERR invalid lease id"),
            (vec![b"PYLOCK.RELEASE", b"held", b""], "ERR invalid lease id"),
            (vec![b"PYLOCK.RELEASE", b"held", &long], "ERR invalid lease id"),
        ];
        for (args, want) in &cases {
            let got = query_err(&mut con, args);
            assert_eq!(&got, want, "{:?}", args.iter().map(|a| String::from_utf8_lossy(a)).collect::<Vec<_>>());
            assert_eq!(state(&mut con), before, "state changed by {args:?}");
        }
        let pong: String = redis::cmd("PING").query(&mut con).unwrap();
        assert_eq!(pong, "PONG");
    }

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

    fn options_are_case_insensitive_and_in_any_order(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let v = query(&mut con, &[b"pylock.acquire", b"k", b"5000", b"LeAsE", b"abc"]);
        assert_eq!(Lease::from_value(&v).id, b"abc");
        let v = query(&mut con, &[b"Pylock.Confirm", b"k", b"abc", b"eXtEnD", b"7000"]);
        assert_eq!(Lease::from_value(&v).ttl_ms, 7000);
    }

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

    fn restore_is_refused_from_clients(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let err = query_err(&mut con, &[b"PYLOCK.RESTORE", b"k", b"forged", b"999", b"PXAT", b"99999999999999"]);
        assert!(err.starts_with("ERR pylock.restore is internal"), "{err}");
        assert_eq!(dbsize(&mut con), 0);
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

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
