//! Bad input: every arity, integer, expire-time, lease-id and syntax error of the contract,
//! each with nothing changed; options are case-insensitive and come in any order; the internal
//! `PYLOCK.RESTORE` is refused from clients.

mod common;

use common::{dbsize, dump};
use testkit::redis;
use testkit::{acquire, pexpiretime, query, query_err, server_tests, Lease, Server};

server_tests! {
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

    fn options_are_case_insensitive_and_in_any_order(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let v = query(&mut con, &[b"pylock.acquire", b"k", b"5000", b"LeAsE", b"abc"]);
        assert_eq!(Lease::from_value(&v).id, b"abc");
        let v = query(&mut con, &[b"Pylock.Confirm", b"k", b"abc", b"eXtEnD", b"7000"]);
        assert_eq!(Lease::from_value(&v).ttl_ms, 7000);
    }

    fn restore_is_refused_from_clients(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let err = query_err(&mut con, &[b"PYLOCK.RESTORE", b"k", b"forged", b"999", b"PXAT", b"99999999999999"]);
        assert!(err.starts_with("ERR pylock.restore is internal"), "{err}");
        assert_eq!(dbsize(&mut con), 0);
    }
}
