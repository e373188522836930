//! What the commands declare to the server (`RM_SetCommandInfo`): exact arities that the server
//! checks before the module runs, flags, key specs that ACL applies (read-only for PYLOCK.INFO
//! and PYLOCK.WATCH, read-write for the others), and `COMMAND DOCS` with summary, since,
//! complexity and arguments (what `redis-cli` shows as hints), for all seven commands.
//!
//! PYLOCK.WATCH changes nothing, yet is flagged `write`: so that a read-only replica refuses it
//! with `READONLY` as it does the other lease commands (a replica learns that a lease ended
//! from its primary's stream, which does not say why). Its key spec is `RO ACCESS`, so an ACL
//! user with read permission on the key may watch.

use testkit::redis::{self, Value};
use testkit::{acquire, holder, query, query_err, server_tests, Server};

mod common;
use common::{as_user, code};

/// A bulk or simple string as text.
fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Okay => "OK".to_string(),
        Value::VerbatimString { text, .. } => text.clone(),
        other => panic!("not a string: {other:?}"),
    }
}

/// The value of `name` in a reply that is a map (RESP3) or a flat array of pairs (RESP2).
fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    match v {
        Value::Map(pairs) => pairs.iter().find(|(k, _)| text(k) == name).map(|(_, v)| v),
        Value::Array(items) => items
            .chunks(2)
            .find(|pair| pair.len() == 2 && text(&pair[0]) == name)
            .map(|pair| &pair[1]),
        _ => None,
    }
}

fn items(v: &Value) -> &[Value] {
    match v {
        Value::Array(items) | Value::Set(items) => items,
        other => panic!("not an array: {other:?}"),
    }
}

fn command_info(con: &mut redis::Connection, name: &str) -> Vec<Value> {
    let v: Value = redis::cmd("COMMAND")
        .arg("INFO")
        .arg(name)
        .query(con)
        .unwrap();
    items(&items(&v)[0]).to_vec()
}

/// `COMMAND GETKEYSANDFLAGS` for `args`: each key with its flags, lowercased.
fn keys_and_flags(con: &mut redis::Connection, args: &[&str]) -> Vec<(String, Vec<String>)> {
    let v: Value = redis::cmd("COMMAND")
        .arg("GETKEYSANDFLAGS")
        .arg(args)
        .query(con)
        .unwrap();
    items(&v)
        .iter()
        .map(|k| {
            let k = items(k);
            let flags = items(&k[1])
                .iter()
                .map(|f| text(f).to_lowercase())
                .collect();
            (text(&k[0]), flags)
        })
        .collect()
}

server_tests! {
    fn arities_are_exact_and_checked_by_the_server(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        for (name, arity) in [
            ("pylock.acquire", -3),
            ("pylock.confirm", -3),
            ("pylock.release", 3),
            ("pylock.info", 2),
            ("pylock.watch", -3),
            ("pylock.restore", -4),
        ] {
            let info = command_info(&mut con, name);
            assert_eq!(text(&info[0]), name);
            assert_eq!(info[1], Value::Int(arity), "{name}");
        }
        // The server answers a wrong count itself, in the contract's words and with the name
        // as registered, whatever case the client typed; it counts the call as rejected, and
        // the module never sees it.
        let held = acquire(&mut con, "held", 60_000).unwrap();
        let cases: [(Vec<&[u8]>, &str); 6] = [
            (vec![b"PyLock.Acquire", b"k"], "pylock.acquire"),
            (vec![b"PYLOCK.CONFIRM", b"held"], "pylock.confirm"),
            (vec![b"pylock.release", b"held", &held.id, b"x"], "pylock.release"),
            (vec![b"PYLOCK.INFO", b"held", b"x"], "pylock.info"),
            (vec![b"PyLock.Watch", b"held"], "pylock.watch"),
            (vec![b"PYLOCK.RESTORE", b"k", b"id"], "pylock.restore"),
        ];
        for (args, name) in &cases {
            let err = query_err(&mut con, args);
            assert_eq!(err, format!("ERR wrong number of arguments for '{name}' command"));
            let stats = s.info("commandstats", &format!("cmdstat_{name}")).unwrap_or_default();
            assert!(stats.contains("rejected_calls=1,"), "{name}: {stats}");
        }
        let stats = s.info("commandstats", "cmdstat_pylock.release").unwrap();
        assert!(stats.starts_with("calls=0,"), "the module never ran: {stats}");
        // The module did not count or block the short WATCH either.
        assert_eq!(s.info("pylock", "pylock_watching").as_deref(), Some("0"));
        // Inside MULTI the count is checked when the command is queued, as for any command.
        redis::cmd("MULTI").query::<()>(&mut con).unwrap();
        let err = query_err(&mut con, &[b"PYLOCK.RELEASE", b"held"]);
        assert_eq!(err, "ERR wrong number of arguments for 'pylock.release' command");
        let err = redis::cmd("EXEC").query::<Value>(&mut con).unwrap_err();
        assert_eq!(err.code(), Some("EXECABORT"), "{err}");
        assert_eq!(holder(&mut con, "held").unwrap().lease.id, held.id);
    }

    fn key_specs_say_read_for_info_and_watch_and_read_write_for_the_others(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let read = vec![("k".to_string(), vec!["ro".to_string(), "access".to_string()])];
        let write = vec![("k".to_string(), vec!["rw".to_string(), "update".to_string()])];
        for args in [
            vec!["PYLOCK.INFO", "k"],
            vec!["PYLOCK.WATCH", "k", "x"],
            vec!["PYLOCK.WATCH", "k", "x", "TIMEOUT", "5"],
        ] {
            assert_eq!(keys_and_flags(&mut con, &args), read, "{args:?}");
        }
        for args in [
            vec!["PYLOCK.ACQUIRE", "k", "100", "LEASE", "x", "BLOCK", "5"],
            vec!["PYLOCK.CONFIRM", "k", "x", "EXTEND", "5"],
            vec!["PYLOCK.CONFIRM", "k", "x", "CLAIM", "y"],
            vec!["PYLOCK.CONFIRM", "k", "x", "CLAIM", "y", "EXTEND", "5"],
            vec!["PYLOCK.RELEASE", "k", "x"],
        ] {
            assert_eq!(keys_and_flags(&mut con, &args), write, "{args:?}");
        }
        let ow = vec![("k".to_string(), vec!["ow".to_string(), "update".to_string()])];
        for args in [
            vec!["PYLOCK.RESTORE", "k", "x", "1", "PXAT", "5"],
            vec!["PYLOCK.RESTORE", "k", "x", "1", "FROM", "w", "PXAT", "5"],
        ] {
            assert_eq!(keys_and_flags(&mut con, &args), ow, "{args:?}");
        }
        // The legacy key positions stay (first 1, last 1, step 1).
        for name in ["pylock.acquire", "pylock.confirm", "pylock.release", "pylock.info", "pylock.watch", "pylock.restore"] {
            let info = command_info(&mut con, name);
            assert_eq!(&info[3..6], &[Value::Int(1), Value::Int(1), Value::Int(1)], "{name}");
        }
    }

    /// The flags each command registers, exactly, and that the module has these seven commands
    /// and no others. WATCH blocks, so it is not `fast`; it is `write` (see the file's docs).
    fn flags_are_exact_and_the_module_has_seven_commands(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        for (name, flags) in [
            ("pylock.acquire", vec!["write", "denyoom", "module", "fast"]),
            ("pylock.confirm", vec!["write", "module", "fast"]),
            ("pylock.release", vec!["write", "module", "fast"]),
            ("pylock.info", vec!["readonly", "module", "fast"]),
            ("pylock.watch", vec!["write", "module"]),
            ("pylock.restore", vec!["write", "module", "fast"]),
            ("pylock.drop", vec!["write", "module", "fast"]),
        ] {
            let info = command_info(&mut con, name);
            let got: Vec<String> = items(&info[2]).iter().map(text).collect();
            assert_eq!(got, flags, "{name}");
        }
        let v: Value = redis::cmd("COMMAND").arg("LIST").arg("FILTERBY").arg("MODULE").arg("pylock").query(&mut con).unwrap();
        let mut names: Vec<String> = items(&v).iter().map(text).collect();
        names.sort();
        assert_eq!(
            names,
            ["pylock.acquire", "pylock.confirm", "pylock.drop", "pylock.info", "pylock.release", "pylock.restore", "pylock.watch"]
        );
    }

    /// A read-only replica refuses WATCH with `READONLY`, as it does the lease commands that
    /// write: that is what its `write` flag is for.
    fn a_read_only_replica_refuses_watch(kind: Kind) {
        let s = Server::start(kind);
        let r = s.start_replica(&[]);
        let mut con = r.conn();
        for args in [
            vec!["PYLOCK.WATCH", "k", "x", "TIMEOUT", "1"],
            vec!["PYLOCK.CONFIRM", "k", "x", "CLAIM", "y"],
        ] {
            let mut c = redis::cmd(args[0]);
            c.arg(&args[1..]);
            assert_eq!(code(c.query(&mut con)), "READONLY", "{args:?}");
        }
        // INFO, a read, answers there.
        assert_eq!(query(&mut con, &[b"PYLOCK.INFO", b"k"]), Value::Nil);
    }

    fn an_acl_reader_may_run_info_but_not_the_writes(kind: Kind) {
        let s = Server::start(kind);
        let mut admin = s.conn();
        let held = acquire(&mut admin, "lock:a", 60_000).unwrap();
        let grants = ["+pylock.acquire", "+pylock.confirm", "+pylock.release", "+pylock.info", "+pylock.watch"];
        let mut reader = vec!["SETUSER", "reader", "on", ">pw", "%R~*"];
        reader.extend(grants);
        redis::cmd("ACL").arg(&reader).query::<()>(&mut admin).unwrap();

        // ACL DRYRUN tells without running anything.
        let dry = |admin: &mut redis::Connection, args: &[&str]| -> String {
            let v: Value = redis::cmd("ACL").arg("DRYRUN").arg("reader").arg(args).query(admin).unwrap();
            text(&v)
        };
        assert_eq!(dry(&mut admin, &["PYLOCK.INFO", "lock:a"]), "OK");
        // WATCH only reads the key (RO ACCESS): a reader may watch.
        assert_eq!(dry(&mut admin, &["PYLOCK.WATCH", "lock:a", held.id_str(), "TIMEOUT", "1"]), "OK");
        for args in [
            vec!["PYLOCK.ACQUIRE", "lock:a", "1000"],
            vec!["PYLOCK.CONFIRM", "lock:a", held.id_str()],
            vec!["PYLOCK.CONFIRM", "lock:a", held.id_str(), "CLAIM", "new-id"],
            vec!["PYLOCK.RELEASE", "lock:a", held.id_str()],
        ] {
            let why = dry(&mut admin, &args);
            assert!(why.contains("lock:a"), "{args:?}: {why}");
        }

        // And for real, after AUTH.
        let mut r = as_user(&s, "reader");
        let h = holder(&mut r, "lock:a").expect("INFO answers a read-only user");
        assert_eq!(h.lease.id, held.id);
        assert_eq!(query(&mut r, &[b"PYLOCK.INFO", b"lock:free"]), Value::Nil);
        // A reader's WATCH runs: it answers at once for an id that does not hold the lock,
        // and times out (nil) on the holder's.
        let v = query(&mut r, &[b"PYLOCK.WATCH", b"lock:a", b"not-the-holder"]);
        assert_eq!(v, Value::BulkString(b"notowned".to_vec()));
        let v = query(&mut r, &[b"PYLOCK.WATCH", b"lock:a", &held.id, b"TIMEOUT", b"20"]);
        assert_eq!(v, Value::Nil);
        for args in [
            vec!["PYLOCK.ACQUIRE", "lock:b", "1000"],
            vec!["PYLOCK.ACQUIRE", "lock:a", "1000", "LEASE", held.id_str()],
            vec!["PYLOCK.CONFIRM", "lock:a", held.id_str(), "EXTEND", "5000"],
            vec!["PYLOCK.CONFIRM", "lock:a", held.id_str(), "CLAIM", "new-id"],
            vec!["PYLOCK.RELEASE", "lock:a", held.id_str()],
        ] {
            let mut c = redis::cmd(args[0]);
            c.arg(&args[1..]);
            assert_eq!(code(c.query(&mut r)), "NOPERM", "{args:?}");
        }
        let n: i64 = redis::cmd("EXISTS").arg("lock:b").query(&mut admin).unwrap();
        assert_eq!(n, 0);
        let h = holder(&mut admin, "lock:a").unwrap();
        assert_eq!((h.lease.id, h.lease.token), (held.id.clone(), held.token), "untouched");

        // Read and write permission on the key runs everything.
        let mut both = vec!["SETUSER", "both", "on", ">pw", "%RW~lock:*"];
        both.extend(grants);
        redis::cmd("ACL").arg(&both).query::<()>(&mut admin).unwrap();
        let mut b = as_user(&s, "both");
        let lease = acquire(&mut b, "lock:b", 10_000).expect("read-write user acquires");
        assert!(holder(&mut b, "lock:b").is_some());
        assert_eq!(query(&mut b, &[b"PYLOCK.RELEASE", b"lock:b", &lease.id]), Value::Int(1));
    }

    fn command_docs_describe_every_command_exactly(kind: Kind) {
        let s = Server::start(kind);
        // (name, summary, since, complexity, [(argument, type, token, optional, summary)])
        type Arg = (&'static str, &'static str, Option<&'static str>, bool, &'static str);
        let hand_off = "O(1); a hand-off to waiters is O(N) in the lock's waiters";
        let commands: [(&str, &str, &str, &str, Vec<Arg>); 7] = [
            ("pylock.acquire", "Takes the lock at key for ttl-ms, or waits for it in FIFO order with BLOCK", "0.1.0", hand_off, vec![
                ("key", "key", None, false, ""),
                ("ttl-ms", "integer", None, false, "lease time in milliseconds"),
                ("lease-id", "string", Some("LEASE"), true, "the lease's id (1 to 128 bytes) instead of a server-made UUID"),
                ("timeout-ms", "integer", Some("BLOCK"), true, "wait up to this long for a held lock (0: forever)"),
                ("n", "integer", Some("LIMIT"), true, "admit up to n leases at once (a semaphore; 1 to 100000, default 1)"),
            ]),
            ("pylock.confirm", "Checks that lease-id holds the lock at key; EXTEND resets its TTL, CLAIM passes it to a new id", "0.1.0", "O(1)", vec![
                ("key", "key", None, false, ""),
                ("lease-id", "string", None, false, "the lease to check"),
                ("ttl-ms", "integer", Some("EXTEND"), true, "set the TTL to this many milliseconds from now"),
                ("new-lease-id", "string", Some("CLAIM"), true, "take the lease over under this new id, with a new fencing token"),
            ]),
            ("pylock.release", "Releases the lock at key if lease-id holds it, passing it to the longest waiter", "0.1.0", hand_off, vec![
                ("key", "key", None, false, ""),
                ("lease-id", "string", None, false, "the lease to release"),
            ]),
            ("pylock.info", "Shows the lease that holds the lock at key: id, token, TTL and waiters", "0.1.0", "O(1)", vec![
                ("key", "key", None, false, ""),
            ]),
            ("pylock.watch", "Waits until lease-id stops holding the lock at key, and answers why", "0.2.0", "O(1)", vec![
                ("key", "key", None, false, ""),
                ("lease-id", "string", None, false, "the lease to watch"),
                ("timeout-ms", "integer", Some("TIMEOUT"), true, "answer nil if the lease still holds after this long (0: wait forever)"),
            ]),
            ("pylock.restore", "Internal: stores exactly the given lease (replication and AOF loading only)", "0.1.0", "O(1)", vec![
                ("key", "key", None, false, ""),
                ("lease-id", "string", None, false, ""),
                ("token", "integer", None, false, "the lease's fencing token"),
                ("unix-time-milliseconds", "unix-time", Some("PXAT"), true, "the lease's absolute deadline"),
                ("claimed-from", "string", Some("FROM"), true, "the lease id this lease was claimed from"),
                ("n", "integer", Some("LIMIT"), true, "the semaphore's n: store this lease beside the key's others"),
            ]),
            ("pylock.drop", "Internal: removes one lease of a semaphore (replication and AOF loading only)", "0.3.0", "O(log N) in the key's leases", vec![
                ("key", "key", None, false, ""),
                ("lease-id", "string", None, false, ""),
            ]),
        ];
        for resp3 in [false, true] {
            let mut con = if resp3 { s.conn_resp3() } else { s.conn() };
            for (name, summary, since, complexity, want) in &commands {
                let v: Value = redis::cmd("COMMAND").arg("DOCS").arg(*name).query(&mut con).unwrap();
                let docs = field(&v, name).unwrap_or_else(|| panic!("{v:?}"));
                assert_eq!(text(field(docs, "summary").expect("summary")), *summary, "{name}");
                assert_eq!(text(field(docs, "since").expect("since")), *since, "{name}");
                assert_eq!(text(field(docs, "complexity").expect("complexity")), *complexity, "{name}");
                assert_eq!(text(field(docs, "module").expect("module")), "pylock", "{name}");
                let args = items(field(docs, "arguments").expect("arguments"));
                let described: Vec<(String, String, Option<String>, bool, String)> = args
                    .iter()
                    .map(|a| {
                        let optional = field(a, "flags")
                            .is_some_and(|f| items(f).iter().any(|x| text(x) == "optional"));
                        (
                            text(field(a, "name").unwrap()),
                            text(field(a, "type").unwrap()),
                            field(a, "token").map(text),
                            optional,
                            field(a, "summary").map(text).unwrap_or_default(),
                        )
                    })
                    .collect();
                assert_eq!(described.len(), want.len(), "{name}: {described:?}");
                for (got, want) in described.iter().zip(want) {
                    let (n, t, tok, opt, sum) = want;
                    assert_eq!(
                        (got.0.as_str(), got.1.as_str(), got.2.as_deref(), got.3),
                        (*n, *t, *tok, *opt),
                        "{name} resp3 {resp3}"
                    );
                    assert_eq!(got.4, *sum, "{name} {n}");
                }
            }
        }
    }
}
