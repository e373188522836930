//! A loader that never aborts. `RESTORE` of lock payloads that were truncated or mutated and
//! then given a valid CRC64 (so they pass Redis's checksum and reach the module's `rdb_load`),
//! `MIGRATE` between two module servers, and a corrupt RDB file at start-up.
//!
//! Every payload must either restore a well-formed lock (`PYLOCK.INFO` reads it) or get
//! `ERR Bad data format` and create no key; the server must answer `PING` afterwards and its
//! log must show no crash. Before the module set `REDISMODULE_OPTIONS_HANDLE_IO_ERRORS`, the
//! 20-byte payload of `the_reported_payload_is_refused` aborted Redis with SIGABRT.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use pylock_check::payload::{self, Dump, Layout, Verdict};
use testkit::redis::{self, Value};
use testkit::{acquire, holder, server_tests, Kind, Server};

mod common;

/// Random mutations per server on top of the edge cases; `scripts/fuzz-commands` sends more.
fn count() -> u64 {
    std::env::var("PYLOCK_PAYLOAD_COUNT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000)
}

/// A held lock's `DUMP`, taken apart and checked against our own CRC64.
fn real_dump(s: &Server, key: &str, id: Option<&[u8]>) -> (Vec<u8>, Dump, Layout) {
    let payload = payload::dump_lock(&mut s.conn(), key, id);
    let dump = Dump::parse(&payload).unwrap_or_else(|e| panic!("{e}: {payload:02x?}"));
    let layout = Layout::of(&dump.body).unwrap_or_else(|| panic!("{:02x?}", dump.body));
    (payload, dump, layout)
}

/// The same lock as [`real_dump`] gives, as encoding version 0 (what the module wrote before
/// CLAIM): token and id.
fn v0_dump(s: &Server, key: &str, id: Option<&[u8]>) -> (Dump, Layout) {
    let (_, dump, l) = real_dump(s, key, id);
    let id = match id {
        Some(id) => id.to_vec(),
        None => holder(&mut s.conn(), key).expect("held").lease.id,
    };
    let body = payload::as_version_0(&dump.body, &l, &id).expect("a version 0 body");
    let layout = Layout::of(&body).expect("parses");
    assert_eq!(layout.encver, 0);
    (
        Dump {
            body,
            version: dump.version,
        },
        layout,
    )
}

/// A version 1 dump and its version 0 twin, for tests that hold for both.
fn both_versions(s: &Server, key: &str) -> Vec<(Dump, Layout)> {
    let (_, dump, l) = real_dump(s, &format!("{key}:v1"), None);
    assert_eq!(l.encver, 2, "the module writes encoding version 2");
    vec![(dump, l), v0_dump(s, &format!("{key}:v0"), None)]
}

fn dbsize(con: &mut redis::Connection) -> i64 {
    redis::cmd("DBSIZE").query(con).unwrap()
}

/// Restores each body (sealed with `dump`'s version and a fresh CRC) and expects `want`, or any
/// sound outcome when `want` is `None`. Returns the verdicts.
fn restore_all(
    s: &Server,
    dump: &Dump,
    cases: &[(String, Vec<u8>)],
    want: Option<&Verdict>,
) -> Vec<Verdict> {
    let mut con = s.conn();
    let keys = dbsize(&mut con);
    let mut out = Vec::new();
    for (name, body) in cases {
        let got = payload::restore(&mut con, &dump.seal(body), keys)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        if let Some(want) = want {
            assert_eq!(&got, want, "{name}");
        }
        out.push(got);
    }
    assert_no_crash(s);
    out
}

fn assert_no_crash(s: &Server) {
    let lines = payload::crash_lines(&payload::server_log(s));
    assert!(lines.is_empty(), "crash lines in the log: {lines:#?}");
}

fn cases_named(body: &[u8], l: &Layout, prefix: &str) -> Vec<(String, Vec<u8>)> {
    payload::edge_cases(body, l)
        .into_iter()
        .filter(|(name, _)| name.starts_with(prefix))
        .collect()
}

server_tests! {
    /// Our CRC64 is Redis's: it reproduces a real `DUMP`'s footer, and a restored dump keeps the
    /// lease's id and token.
    fn a_real_dump_checks_out_and_restores_unchanged(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        for (key, id) in [("k:uuid", None), ("k:num", Some(&b"12345"[..])), ("k:lzf", Some(&[b'a'; 128][..]))] {
            let (payload, dump, _) = real_dump(&s, key, id);
            assert_eq!(dump.seal(&dump.body), payload, "{key}");
            let before = holder(&mut con, key).expect("held");
            let _: i64 = redis::cmd("DEL").arg(key).query(&mut con).unwrap();
            let _: () = redis::cmd("RESTORE").arg(key).arg(0).arg(&payload).query(&mut con).unwrap();
            let after = holder(&mut con, key).expect("restored");
            assert_eq!((after.lease.id, after.lease.token), (before.lease.id, before.lease.token));
        }
        assert_no_crash(&s);
    }

    /// Compatibility: a `DUMP` of encoding version 0, taken from Redis 7.0.15 (RDB version 10)
    /// with this module on 2 December 2026, restores with its id and token on both servers. A
    /// change of the encoding that broke existing payloads fails here.
    fn a_payload_of_encoding_version_0_still_loads(kind: Kind) {
        let hex = "0781a72968724fa590000281000661a0ebc8c1400511636f6d7061742d6c656173652d30303031000a00bab4b67b883ceba6";
        let payload: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let s = Server::start(kind);
        let mut con = s.conn();
        let _: () = redis::cmd("RESTORE").arg("lock:old").arg(0).arg(&payload).query(&mut con).unwrap();
        let h = holder(&mut con, "lock:old").expect("restored");
        assert_eq!((h.lease.id_str(), h.lease.token), ("compat-lease-0001", 1_796_193_638_728_000));
        let high: i64 = s.info("pylock", "pylock_token_high_water").unwrap().parse().unwrap();
        assert!(high >= h.lease.token);
    }

    /// The payload of the crash report: type and module id, nothing after them.
    fn the_reported_payload_is_refused(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        for (dump, _) in both_versions(&s, "k") {
            let sealed = dump.seal(&dump.body[..10]);
            if dump.version == [0x0a, 0x00] && dump.body[9] == 0 {
                // Redis 7.0 writes RDB version 10: the same bytes as the report.
                let hex: String = sealed.iter().map(|b| format!("{b:02x}")).collect();
                assert_eq!(hex, "0781a72968724fa590000a00b09fa06abd686483");
            }
            let keys = dbsize(&mut con);
            assert_eq!(payload::restore(&mut con, &sealed, keys), Ok(Verdict::Refused));
        }
        assert_no_crash(&s);
    }

    /// Every prefix of a lock's body. `RESTORE` reads the value from the whole payload, footer
    /// included, so a body cut by a few bytes is completed by the RDB version and CRC bytes:
    /// that may load as a well-formed lock with other id bytes (the footer of Redis 7.0 starts
    /// `0a 00`, so a lock cut before its last id byte loads with `\n` as that byte), which is
    /// sound. A prefix with no token cannot load.
    fn every_truncation_is_refused_or_loads_a_well_formed_lock(kind: Kind) {
        let s = Server::start(kind);
        for (i, id) in [None, Some(&b"12345"[..]), Some(&[b'a'; 128][..])].into_iter().enumerate() {
            let (_, v1, l1) = real_dump(&s, &format!("k{i}"), id);
            for (dump, l) in [(v1, l1), v0_dump(&s, &format!("k{i}:v0"), id)] {
            let cases = cases_named(&dump.body, &l, "truncated");
            assert_eq!(cases.len(), dump.body.len());
            let got = restore_all(&s, &dump, &cases, None);
            for (n, v) in got.iter().enumerate().take(l.token_opcode + 1) {
                assert_eq!(v, &Verdict::Refused, "truncated to {n}");
            }
            let restored = got.iter().filter(|v| **v != Verdict::Refused).count();
            println!("{}: {} truncations of a {}-byte version {} body, {restored} completed by the footer", kind.name(), got.len(), dump.body.len(), l.encver);
            }
        }
    }

    /// Id lengths of 2^32-1, 2^40, 2^62 and 2^64-1 (with and without bytes after them), 129
    /// and 0; and a length of 200 with 2 bytes present.
    fn huge_and_short_id_lengths_are_refused(kind: Kind) {
        let s = Server::start(kind);
        for (dump, l) in both_versions(&s, "k") {
            let cases = cases_named(&dump.body, &l, "id length");
            assert_eq!(cases.len(), 13);
            restore_all(&s, &dump, &cases, Some(&Verdict::Refused));
            let cases = cases_named(&dump.body, &l, "id of 129 bytes");
            restore_all(&s, &dump, &cases, Some(&Verdict::Refused));
        }
    }

    /// Version 1: a claimed-from id over 128 bytes, equal to the lease's own id, or with a
    /// length of 2^32-1 up to 2^64-1 (with and without bytes after it) or 200 with 2 bytes
    /// present, is refused; one of 128 bytes loads.
    fn bad_claimed_from_ids_are_refused(kind: Kind) {
        let s = Server::start(kind);
        let (_, dump, l) = real_dump(&s, "k", Some(b"lease-a"));
        let cases = cases_named(&dump.body, &l, "claimed-from");
        assert_eq!(cases.len(), 11, "{:?}", cases.iter().map(|c| &c.0).collect::<Vec<_>>());
        restore_all(&s, &dump, &cases, Some(&Verdict::Refused));
        let ok = payload::valid_v1_cases(&dump.body, &l);
        let got = restore_all(&s, &dump, &ok[..1], None);
        assert!(matches!(&got[0], Verdict::Restored { id, ttl, .. } if id == b"lease-a" && *ttl > 0), "{got:?}");
        // A claimed lock's own dump keeps the relation: restored, its predecessor is CLAIMED.
        let mut con = s.conn();
        let claimed = payload::dump_claimed_lock(&mut con, "c", b"old", b"new");
        let _: i64 = redis::cmd("DEL").arg("c").query(&mut con).unwrap();
        let _: () = redis::cmd("RESTORE").arg("c").arg(0).arg(&claimed).query(&mut con).unwrap();
        let err = redis::cmd("PYLOCK.CONFIRM").arg("c").arg("old").query::<Value>(&mut con).unwrap_err();
        assert_eq!(err.code(), Some("CLAIMED"), "{err}");
        assert_eq!(holder(&mut con, "c").expect("restored").lease.id_str(), "new");
    }

    /// Version 1: a deadline below -1 (-2, -1000, i64::MIN), a short or specially encoded one,
    /// is refused. -1 (no deadline of its own) and a far one load.
    fn bad_deadlines_are_refused(kind: Kind) {
        let s = Server::start(kind);
        let (_, dump, l) = real_dump(&s, "k", None);
        let (cases, encoded): (Vec<_>, Vec<_>) = cases_named(&dump.body, &l, "deadline")
            .into_iter()
            .partition(|(name, _)| name != "deadline special encoding 0xc0");
        assert_eq!(cases.len(), 4);
        restore_all(&s, &dump, &cases, Some(&Verdict::Refused));
        // Redis reads a length byte of special encoding as the value 0 (it ignores the flag
        // for module values): a deadline of 0, long past, so the lease has ended.
        restore_all(&s, &dump, &encoded, Some(&Verdict::Expired));
        let ok = payload::valid_v1_cases(&dump.body, &l);
        let got = restore_all(&s, &dump, &ok[1..], None);
        assert!(matches!(got[0], Verdict::Restored { ttl: -1, .. }), "{got:?}");
        assert!(matches!(got[1], Verdict::Restored { ttl, .. } if ttl > 900 * 365 * 86_400_000), "{got:?}");
        // A deadline already past restores a lease that has ended: the key does not stay.
        let mut past = dump.body.clone();
        let (_, range) = l.deadline.clone().unwrap();
        past.splice(range, payload::rdb_len_bytes(1_000));
        let got = restore_all(&s, &dump, &[("deadline 1000".into(), past)], None);
        assert_eq!(got, vec![Verdict::Expired]);
    }

    /// A wrong opcode before the token, before the id, or instead of EOF; a missing token; an
    /// encoding version this module does not know; a module type name nobody registered.
    fn wrong_opcodes_and_versions_are_refused(kind: Kind) {
        let s = Server::start(kind);
        for (dump, l) in both_versions(&s, "k") {
            let mut cases = cases_named(&dump.body, &l, "opcode");
            // Version 1 adds the opcodes before the deadline and the claimed-from id.
            assert_eq!(cases.len(), if l.encver == 0 { 24 } else { 38 });
            cases.extend(cases_named(&dump.body, &l, "no "));
            cases.extend(cases_named(&dump.body, &l, "encoding version"));
            cases.extend(cases_named(&dump.body, &l, "another module type"));
            restore_all(&s, &dump, &cases, Some(&Verdict::Refused));
        }
    }

    /// Tokens no grant makes are refused: not positive, or beyond the plausible range (the
    /// clock floor plus 100 years), `i64::MAX` among them. So one payload cannot exhaust the
    /// token sequence: the server grants afterwards, with tokens above what it held.
    fn bad_tokens_are_refused(kind: Kind) {
        let s = Server::start(kind);
        for (dump, l) in both_versions(&s, "k") {
            let bad = cases_named(&dump.body, &l, "token");
            assert_eq!(bad.len(), 6);
            restore_all(&s, &dump, &bad, Some(&Verdict::Refused));
        }
        // At the default log level a refused RESTORE writes nothing (see the verbose test).
        let log = payload::server_log(&s);
        assert!(!log.contains("refusing a stored lock"), "{log}");
        let high_water_before = common::high_water(&s);
        assert!(high_water_before < i64::MAX / 2, "{high_water_before}");
        let mut con = s.conn();
        let granted = acquire(&mut con, "after", 10_000).expect("ACQUIRE still grants");
        assert!(granted.token > high_water_before - 1);
    }

    /// A refused `RESTORE` says why in the log at `verbose` (as Redis logs its own bad payloads),
    /// so a client cannot flood a log at the default level.
    fn a_refused_restore_says_why_at_verbose(kind: Kind) {
        let s = Server::start_with(kind, &["--loglevel", "verbose"]);
        let (_, dump, l) = real_dump(&s, "k", None);
        let cases = cases_named(&dump.body, &l, "token 0");
        restore_all(&s, &dump, &cases, Some(&Verdict::Refused));
        let log = payload::server_log(&s);
        assert!(
            log.contains("pylock: refusing a stored lock: fencing token 0 is not positive"),
            "{log}"
        );
    }

    /// Other string encodings of the id: an int8 or int16 is a valid id ("5", "-300"); the
    /// rest are refused, except a short int32 that the footer completes.
    fn other_id_encodings_load_or_are_refused(kind: Kind) {
        let s = Server::start(kind);
        for (dump, l) in both_versions(&s, "k") {
        let cases = cases_named(&dump.body, &l, "id as");
        let got = restore_all(&s, &dump, &cases, None);
        for ((name, _), v) in cases.iter().zip(&got) {
            match name.as_str() {
                "id as int8 5" => assert!(matches!(v, Verdict::Restored { id, .. } if id == b"5"), "{name}: {v:?}"),
                "id as int16 -300" => assert!(matches!(v, Verdict::Restored { id, .. } if id == b"-300"), "{name}: {v:?}"),
                // The two missing bytes come from the footer (see the truncation test).
                "id as int32, 2 bytes" => {}
                _ => assert_eq!(v, &Verdict::Refused, "{name}"),
            }
        }
        }
    }

    /// The edge cases of locks of every id shape, then seeded random mutations: truncations,
    /// byte flips, replaced length fields and opcodes, inserted and removed bytes.
    fn mutated_payloads_never_crash_the_server(kind: Kind) {
        let s = Server::start(kind);
        let seed = 0x09a7_10ad + (kind == Kind::Valkey) as u64;
        let report = payload::run(&s, count(), seed);
        let summary = report.summary();
        println!("{} / seed {seed}:\n{summary}", kind.name());
        assert!(report.violations.is_empty(), "{summary}");
        assert!(report.sent > count(), "{summary}");
        assert!(report.refused > 0 && report.restored > 0, "{summary}");
        let pong: String = redis::cmd("PING").query(&mut s.conn()).unwrap();
        assert_eq!(pong, "PONG");
    }

    /// `MIGRATE` sends a `DUMP` payload that the receiving server's loader reads: the lock
    /// arrives with its id, token and deadline, and raises that server's token high-water mark.
    fn migrate_carries_a_lock_between_module_servers(kind: Kind) {
        let a = Server::start(kind);
        let b = Server::start(kind);
        let mut ca = a.conn();
        let mut cb = b.conn();
        let lease = acquire(&mut ca, "lock:m", 60_000).expect("free");
        let deadline = testkit::pexpiretime(&mut ca, "lock:m");
        let reply: String = redis::cmd("MIGRATE")
            .arg("127.0.0.1")
            .arg(b.port())
            .arg("lock:m")
            .arg(0)
            .arg(5000)
            .query(&mut ca)
            .unwrap();
        assert_eq!(reply, "OK");
        assert!(holder(&mut ca, "lock:m").is_none());
        let moved = holder(&mut cb, "lock:m").expect("migrated");
        assert_eq!((moved.lease.id, moved.lease.token), (lease.id.clone(), lease.token));
        // MIGRATE sends the TTL relative to its own clock reading: allow the transfer's time.
        let there = testkit::pexpiretime(&mut cb, "lock:m");
        assert!((there - deadline).abs() < 1000, "{there} vs {deadline}");
        let high: i64 = b.info("pylock", "pylock_token_high_water").unwrap().parse().unwrap();
        assert!(high >= lease.token);
        // The lock works there: its holder confirms and releases it.
        let v: Value = redis::cmd("PYLOCK.RELEASE").arg("lock:m").arg(&lease.id).query(&mut cb).unwrap();
        assert_eq!(v, Value::Int(1));
        assert_no_crash(&a);
        assert_no_crash(&b);
    }

    /// A `PYLOCK.RESTORE` line in the AOF whose token no grant makes: the command refuses it
    /// while loading. Redis 7.0 and Valkey 9 log the error reply as `== CRITICAL ==` and go on
    /// loading the rest of the file: the server starts without that lock.
    fn a_bad_pylock_restore_line_in_the_aof(kind: Kind) {
        let mut s = Server::start_with(
            kind,
            &["--appendonly", "yes", "--appendfsync", "always", "--aof-use-rdb-preamble", "no"],
        );
        s.wait_aof_rewrite_done();
        let mut con = s.conn();
        let bad = acquire(&mut con, "lock:bad", 600_000).expect("free");
        let good = acquire(&mut con, "lock:good", 600_000).expect("free");
        s.kill();
        let dir = s.dir().join("appendonlydir");
        let incr = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with(".incr.aof"))
            .expect("an incr AOF");
        let aof = std::fs::read(&incr).unwrap();
        let token = bad.token.to_string();
        let from = format!("$8\r\nlock:bad\r\n${}\r\n{}\r\n${}\r\n{token}\r\n", bad.id.len(), bad.id_str(), token.len());
        let to = format!("$8\r\nlock:bad\r\n${}\r\n{}\r\n$1\r\n0\r\n", bad.id.len(), bad.id_str());
        let text = String::from_utf8(aof).unwrap();
        assert!(text.contains(&from), "{text}");
        std::fs::write(&incr, text.replace(&from, &to)).unwrap();
        s.restart_with(&[]);
        let mut con = s.conn();
        let log = payload::server_log(&s);
        println!("--- {}:\n{log}", kind.name());
        assert!(payload::crash_lines(&log).is_empty(), "{log}");
        assert!(
            log.contains("sending an error to its AOF-loading-client: '-ERR invalid fencing token' after processing the command 'pylock.restore'"),
            "{log}"
        );
        // The refused line stored nothing; the rest of the file loaded.
        assert!(holder(&mut con, "lock:bad").is_none());
        let kept = holder(&mut con, "lock:good").expect("the good lease");
        assert_eq!((kept.lease.id, kept.lease.token), (good.id, good.token));
    }

    /// A corrupt lock in `dump.rdb` at start-up: Redis refuses to start, exits with status 1
    /// and says why in its log; it does not abort or crash. Redis stops at the first value it
    /// cannot load (it has no way to skip one), so this is the best a module can give.
    fn a_corrupt_rdb_stops_the_server_with_a_clear_log_line(kind: Kind) {
        let mut s = Server::start(kind);
        let (_, dump, l) = real_dump(&s, "k", None);
        let _: () = redis::cmd("SAVE").query(&mut s.conn()).unwrap();
        let dir = s.dir().to_path_buf();
        s.kill();
        let rdb = std::fs::read(dir.join("dump.rdb")).unwrap();
        // In the file the lock's type byte comes before its key name, the rest of its body
        // (from the 0x81 before the module id) right after it. The module id also appears in
        // the aux field, which comes before the keys.
        let at = find_last(&rdb, &dump.body[l.module_id.clone()]).expect("module id in the RDB");
        let base = at - l.module_id.start; // file offset of body index k, for k >= 1
        let token_opcode = base + l.token_opcode;
        assert_eq!(rdb[token_opcode], 2, "token opcode in the file");
        // (case, a line the log must hold)
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("truncated inside the lock", rdb[..token_opcode + 3].to_vec(), "Short read"),
            ("wrong opcode before the token", {
                let mut r = rdb.clone();
                r[token_opcode] = 5;
                r
            }, "pylock"),
            ("unknown encoding version", {
                let mut r = rdb.clone();
                r[base + l.module_id.end - 1] ^= 1;
                r
            }, "pylock: refusing a stored lock: lock encoding version 3 is unknown to this module"),
            ("empty id", {
                let id_opcode = base + l.id_opcode;
                let mut r = rdb[..id_opcode + 1].to_vec();
                r.push(0);
                r.extend_from_slice(&rdb[id_opcode + 1 + (l.id_data.end - l.id_header.start)..]);
                r
            }, "pylock: refusing a stored lock: lease id of 0 bytes is outside 1..=128"),
            ("deadline -2", {
                let (opcode, range) = l.deadline.clone().expect("version 1");
                let mut r = rdb[..base + opcode + 1].to_vec();
                r.push(0x81);
                r.extend_from_slice(&(-2i64).to_be_bytes());
                r.extend_from_slice(&rdb[base + range.end..]);
                r
            }, "pylock: refusing a stored lock: lease deadline -2 is negative"),
        ];
        for (name, file, line) in cases {
            let (status, log) = start_on_rdb(kind, &file);
            println!("--- {} / {name}: {status}\n{log}", kind.name());
            assert_eq!(status.code(), Some(1), "{name}: {status}\n{log}");
            assert!(payload::crash_lines(&log).is_empty(), "{name}: {log}");
            assert!(log.contains(line), "{name}: no line {line:?}:\n{log}");
        }
    }
}

fn find_last(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

/// Starts a server of `kind` on a directory holding `rdb` as `dump.rdb` and waits (up to 10 s)
/// for it to exit. Returns its exit status and log.
fn start_on_rdb(kind: Kind, rdb: &[u8]) -> (std::process::ExitStatus, String) {
    let dir = std::env::temp_dir().join(format!(
        "pylock-corrupt-rdb-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("dump.rdb"), rdb).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let mut child = Command::new(kind.binary())
        .current_dir(&dir)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--dir"])
        .arg(&dir)
        .arg("--loadmodule")
        .arg(testkit::module_path())
        .args([
            "--save",
            "",
            "--appendonly",
            "no",
            "--logfile",
            "server.log",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let Some(status) = testkit::wait_child(&mut child, Duration::from_secs(10)) else {
        panic!("the server started on a corrupt RDB:\n{}", read_log(&dir));
    };
    let log = read_log(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    (status, log)
}

static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn read_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
}
