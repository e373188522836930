//! What the commands declare to the server (`RM_SetCommandInfo`): exact arities that the server
//! checks before the module runs, key specs that ACL applies (read-only for PYLOCK.INFO,
//! read-write for the others), and `COMMAND DOCS` with summary, since, complexity and
//! arguments (what `redis-cli` shows as hints).

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
        let cases: [(Vec<&[u8]>, &str); 5] = [
            (vec![b"PyLock.Acquire", b"k"], "pylock.acquire"),
            (vec![b"PYLOCK.CONFIRM", b"held"], "pylock.confirm"),
            (vec![b"pylock.release", b"held", &held.id, b"x"], "pylock.release"),
            (vec![b"PYLOCK.INFO", b"held", b"x"], "pylock.info"),
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
        // Inside MULTI the count is checked when the command is queued, as for any command.
        redis::cmd("MULTI").query::<()>(&mut con).unwrap();
        let err = query_err(&mut con, &[b"PYLOCK.RELEASE", b"held"]);
        assert_eq!(err, "ERR wrong number of arguments for 'pylock.release' command");
        let err = redis::cmd("EXEC").query::<Value>(&mut con).unwrap_err();
        assert_eq!(err.code(), Some("EXECABORT"), "{err}");
        assert_eq!(holder(&mut con, "held").unwrap().lease.id, held.id);
    }

    fn key_specs_say_read_for_info_and_read_write_for_the_others(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let read = vec![("k".to_string(), vec!["ro".to_string(), "access".to_string()])];
        let write = vec![("k".to_string(), vec!["rw".to_string(), "update".to_string()])];
        assert_eq!(keys_and_flags(&mut con, &["PYLOCK.INFO", "k"]), read);
        for args in [
            vec!["PYLOCK.ACQUIRE", "k", "100", "LEASE", "x", "BLOCK", "5"],
            vec!["PYLOCK.CONFIRM", "k", "x", "EXTEND", "5"],
            vec!["PYLOCK.RELEASE", "k", "x"],
        ] {
            assert_eq!(keys_and_flags(&mut con, &args), write, "{args:?}");
        }
        let restore = keys_and_flags(&mut con, &["PYLOCK.RESTORE", "k", "x", "1", "PXAT", "5"]);
        assert_eq!(restore, vec![("k".to_string(), vec!["ow".to_string(), "update".to_string()])]);
        // The legacy key positions stay (first 1, last 1, step 1).
        for name in ["pylock.acquire", "pylock.confirm", "pylock.release", "pylock.info"] {
            let info = command_info(&mut con, name);
            assert_eq!(&info[3..6], &[Value::Int(1), Value::Int(1), Value::Int(1)], "{name}");
        }
    }

    fn an_acl_reader_may_run_info_but_not_the_writes(kind: Kind) {
        let s = Server::start(kind);
        let mut admin = s.conn();
        let held = acquire(&mut admin, "lock:a", 60_000).unwrap();
        let grants = ["+pylock.acquire", "+pylock.confirm", "+pylock.release", "+pylock.info"];
        let mut reader = vec!["SETUSER", "reader", "on", ">pw", "%R~*"];
        reader.extend(grants);
        redis::cmd("ACL").arg(&reader).query::<()>(&mut admin).unwrap();

        // ACL DRYRUN tells without running anything.
        let dry = |admin: &mut redis::Connection, args: &[&str]| -> String {
            let v: Value = redis::cmd("ACL").arg("DRYRUN").arg("reader").arg(args).query(admin).unwrap();
            text(&v)
        };
        assert_eq!(dry(&mut admin, &["PYLOCK.INFO", "lock:a"]), "OK");
        for args in [
            vec!["PYLOCK.ACQUIRE", "lock:a", "1000"],
            vec!["PYLOCK.CONFIRM", "lock:a", held.id_str()],
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
        for args in [
            vec!["PYLOCK.ACQUIRE", "lock:b", "1000"],
            vec!["PYLOCK.ACQUIRE", "lock:a", "1000", "LEASE", held.id_str()],
            vec!["PYLOCK.CONFIRM", "lock:a", held.id_str(), "EXTEND", "5000"],
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

    fn command_docs_describe_every_command(kind: Kind) {
        let s = Server::start(kind);
        for resp3 in [false, true] {
            let mut con = if resp3 { s.conn_resp3() } else { s.conn() };
            let v: Value = redis::cmd("COMMAND").arg("DOCS").arg("pylock.acquire").query(&mut con).unwrap();
            let docs = field(&v, "pylock.acquire").unwrap_or_else(|| panic!("{v:?}"));
            let summary = text(field(docs, "summary").expect("summary"));
            assert!(summary.starts_with("Takes the lock at key"), "{summary}");
            assert_eq!(text(field(docs, "since").expect("since")), "0.1.0");
            assert!(text(field(docs, "complexity").expect("complexity")).starts_with("O(1)"));
            assert_eq!(text(field(docs, "module").expect("module")), "pylock");
            let args = items(field(docs, "arguments").expect("arguments"));
            let described: Vec<(String, String, Option<String>, bool)> = args
                .iter()
                .map(|a| {
                    let optional = field(a, "flags")
                        .is_some_and(|f| items(f).iter().any(|x| text(x) == "optional"));
                    (
                        text(field(a, "name").unwrap()),
                        text(field(a, "type").unwrap()),
                        field(a, "token").map(text),
                        optional,
                    )
                })
                .collect();
            let want = |n: &str, t: &str, tok: Option<&str>, opt: bool| {
                (n.to_string(), t.to_string(), tok.map(str::to_string), opt)
            };
            assert_eq!(
                described,
                vec![
                    want("key", "key", None, false),
                    want("ttl-ms", "integer", None, false),
                    want("lease-id", "string", Some("LEASE"), true),
                    want("timeout-ms", "integer", Some("BLOCK"), true),
                ],
                "resp3 {resp3}"
            );
        }
        let mut con = s.conn();
        for (name, summary, arg_names) in [
            ("pylock.confirm", "Checks that lease-id holds", vec!["key", "lease-id", "ttl-ms"]),
            ("pylock.release", "Releases the lock", vec!["key", "lease-id"]),
            ("pylock.info", "Shows the lease", vec!["key"]),
            ("pylock.restore", "Internal:", vec!["key", "lease-id", "token", "unix-time-milliseconds"]),
        ] {
            let v: Value = redis::cmd("COMMAND").arg("DOCS").arg(name).query(&mut con).unwrap();
            let docs = field(&v, name).unwrap_or_else(|| panic!("{v:?}"));
            let got = text(field(docs, "summary").unwrap());
            assert!(got.starts_with(summary), "{name}: {got}");
            let names: Vec<String> = items(field(docs, "arguments").unwrap())
                .iter()
                .map(|a| text(field(a, "name").unwrap()))
                .collect();
            assert_eq!(names, arg_names, "{name}");
        }
    }
}
