//! Upgrades: files and payloads written by earlier modules load in this one with every lease
//! intact. `tests/fixtures/encoding-0/` was written by the module before encoding version 1
//! (commit 24a0434: token and id), `tests/fixtures/encoding-1/` by the module before encoding
//! version 2 (commit 438fde3: token, deadline, id, claimed-from id; one lock claimed), both on
//! Redis 7.0.15 (see the README in each); each test loads them on Redis 7.0 and on Valkey.
//!
//! For every lock: the exact id and token, a live deadline (they were taken for ~100 years),
//! tokens granted afterwards above the stored high-water mark, and a `DEBUG RELOAD` that
//! writes them again in the current encoding and holds the same leases.

use std::path::{Path, PathBuf};

use pylock_check::payload::{Dump, Layout, LockBody};
use testkit::redis::{self, Value};
use testkit::{acquire, holder, server_tests, Kind, Server};

mod common;

/// 90 years in ms: every fixture lock was taken for 100, so it has at least this long left.
const NINETY_YEARS_MS: i64 = 90 * 365 * 86_400_000;

/// The encoding this module writes (`DUMP` after `DEBUG RELOAD` says so).
const CURRENT_ENCODING: u16 = 2;

/// The fixtures of encoding `enc` (0 or 1).
fn fixtures(enc: u16) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/encoding-{enc}"))
}

/// A fixture lock: key, lease id, token, and the id it was claimed from (empty if none).
type FixtureLock = (String, Vec<u8>, i64, Vec<u8>);

/// The locks the fixtures of `enc` hold, from `locks.tsv`, and the high-water mark the module
/// had when it wrote them.
fn manifest(enc: u16) -> (Vec<FixtureLock>, i64) {
    let text = std::fs::read_to_string(fixtures(enc).join("locks.tsv")).unwrap();
    let mut locks = Vec::new();
    let mut high = None;
    let hex = |id: &str| -> Vec<u8> {
        (0..id.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&id[i..i + 2], 16).unwrap())
            .collect()
    };
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = line.split('\t').collect();
        match f.as_slice() {
            ["lock", key, id, token] => {
                locks.push((key.to_string(), hex(id), token.parse().unwrap(), Vec::new()));
            }
            ["lock", key, id, token, from] => locks.push((
                key.to_string(),
                hex(id),
                token.parse().unwrap(),
                from.as_bytes().to_vec(),
            )),
            ["high_water", t] => high = Some(t.parse().unwrap()),
            other => panic!("locks.tsv: {other:?}"),
        }
    }
    assert_eq!(locks.len(), if enc == 0 { 5 } else { 6 });
    (locks, high.expect("high_water in locks.tsv"))
}

/// Every fixture lock is held with its id and token and at least `min_ttl` ms left (`-1`: no
/// deadline at all), and nothing else is in the database but `extra` keys.
fn assert_locks(con: &mut redis::Connection, enc: u16, min_ttl: i64, extra: i64) {
    let (locks, _) = manifest(enc);
    for (key, id, token, from) in &locks {
        let h = holder(con, key).unwrap_or_else(|| panic!("{key} is not held"));
        assert_eq!((&h.lease.id, h.lease.token), (id, *token), "{key}");
        if min_ttl < 0 {
            assert_eq!(h.lease.ttl_ms, -1, "{key}");
        } else {
            assert!(h.lease.ttl_ms >= min_ttl, "{key}: ttl {}", h.lease.ttl_ms);
        }
        assert_eq!(h.waiters, 0);
        // The holder confirms it; another id does not.
        let v: Value = redis::cmd("PYLOCK.CONFIRM")
            .arg(key)
            .arg(id)
            .query(con)
            .unwrap();
        assert!(
            matches!(&v, Value::Array(a) if a.get(1) == Some(&Value::Int(*token))),
            "{key}: {v:?}"
        );
        let err = redis::cmd("PYLOCK.CONFIRM")
            .arg(key)
            .arg("someone-else")
            .query::<Value>(con)
            .unwrap_err();
        assert_eq!(err.code(), Some("NOTOWNED"), "{key}");
        if !from.is_empty() {
            // The id it was claimed from is remembered.
            let err = redis::cmd("PYLOCK.CONFIRM")
                .arg(key)
                .arg(from)
                .query::<Value>(con)
                .unwrap_err();
            assert_eq!(err.code(), Some("CLAIMED"), "{key}");
        }
    }
    assert_eq!(common::dbsize(con), locks.len() as i64 + extra);
}

/// A new grant's token is above `floor` (the high-water mark the file carried, or the largest
/// token it held); the key is released again.
fn assert_tokens_continue_above(s: &Server, floor: i64) {
    assert!(
        common::high_water(s) >= floor,
        "{} < {floor}",
        common::high_water(s)
    );
    let mut con = s.conn();
    let lease = acquire(&mut con, "after-upgrade", 10_000).expect("free");
    assert!(lease.token > floor, "{} <= {floor}", lease.token);
    let v: Value = redis::cmd("PYLOCK.RELEASE")
        .arg("after-upgrade")
        .arg(&lease.id)
        .query(&mut con)
        .unwrap();
    assert_eq!(v, Value::Int(1));
}

/// `DEBUG RELOAD` saves and loads an RDB of this module: every lock is then written in the
/// current encoding (its `DUMP` says so) and still held as before, claimed only if it was.
/// Returns each lock's deadline as its body holds it, with the key's expiry (where the id is
/// stored raw).
fn assert_reload_writes_current(s: &Server, enc: u16) -> Vec<(String, i64, i64)> {
    let mut deadlines = Vec::new();
    let mut con = s.conn();
    redis::cmd("DEBUG")
        .arg("RELOAD")
        .query::<()>(&mut con)
        .unwrap();
    assert_locks(&mut con, enc, NINETY_YEARS_MS, 0);
    let (locks, _) = manifest(enc);
    for (key, id, token, from) in &locks {
        let payload: Vec<u8> = redis::cmd("DUMP").arg(key).query(&mut con).unwrap();
        let dump = Dump::parse(&payload).unwrap();
        let l = Layout::of(&dump.body).unwrap_or_else(|| panic!("{key}: {:02x?}", dump.body));
        assert_eq!(l.encver, CURRENT_ENCODING, "{key}");
        let expiry = testkit::pexpiretime(&mut con, key);
        assert!(
            expiry > common::now_ms() + NINETY_YEARS_MS,
            "{key}: {expiry}"
        );
        if let Some(body) = LockBody::read(&dump.body, &l) {
            assert_eq!((&body.id, body.token), (id, *token), "{key}");
            assert_eq!(&body.from, from, "{key}: claimed from");
            deadlines.push((key.clone(), body.deadline, expiry));
        }
    }
    assert!(deadlines.len() >= 2, "{deadlines:?}");
    assert_no_crash(s);
    deadlines
}

fn assert_no_crash(s: &Server) {
    let log = pylock_check::payload::server_log(s);
    let lines = pylock_check::payload::crash_lines(&log);
    assert!(lines.is_empty(), "{lines:#?}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// A server of `kind` started on a copy of the fixture `what` (`dump.rdb`, or an
/// `appendonlydir`).
fn start_on(kind: Kind, enc: u16, what: &str) -> Server {
    let mut s = Server::start(kind);
    s.kill();
    let src = fixtures(enc).join(what);
    if what == "dump.rdb" {
        std::fs::copy(&src, s.dir().join("dump.rdb")).unwrap();
        s.restart_with(&[]);
    } else {
        copy_dir(&src, &s.dir().join("appendonlydir"));
        s.restart_with(&["--appendonly", "yes"]);
    }
    s
}

server_tests! {
    /// The RDB of the old module, with its aux field (the token high-water mark).
    fn an_rdb_of_encoding_0_loads_every_lease(kind: Kind) {
        let s = start_on(kind, 0, "dump.rdb");
        assert_locks(&mut s.conn(), 0, NINETY_YEARS_MS, 0);
        let (_, high) = manifest(0);
        assert_tokens_continue_above(&s, high);
        assert_reload_writes_current(&s, 0);
    }

    /// An AOF whose base is an RDB preamble of the old module (aux field included).
    fn an_aof_with_an_rdb_preamble_of_encoding_0_loads_every_lease(kind: Kind) {
        let s = start_on(kind, 0, "aof-preamble");
        assert_locks(&mut s.conn(), 0, NINETY_YEARS_MS, 0);
        let (_, high) = manifest(0);
        assert_tokens_continue_above(&s, high);
        assert_reload_writes_current(&s, 0);
    }

    /// An AOF rewritten without a preamble: the old module's `PYLOCK.RESTORE key id token`
    /// and `PEXPIREAT` lines. It carries no high-water mark, so tokens continue above the
    /// largest token it holds.
    fn a_plain_aof_of_encoding_0_loads_every_lease(kind: Kind) {
        let s = start_on(kind, 0, "aof-plain");
        assert_locks(&mut s.conn(), 0, NINETY_YEARS_MS, 0);
        let (locks, _) = manifest(0);
        let max = locks.iter().map(|l| l.2).max().unwrap();
        assert_tokens_continue_above(&s, max);
        assert_reload_writes_current(&s, 0);
    }

    /// `DUMP` payloads of the old module: `RESTORE` with a TTL gives the lease that deadline;
    /// the payload's own bytes say encoding 0.
    fn dump_payloads_of_encoding_0_restore_every_lease(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let (locks, _) = manifest(0);
        for (key, ..) in &locks {
            let payload = std::fs::read(fixtures(0).join(format!("{}.dump", key.replace(':', "-")))).unwrap();
            let dump = Dump::parse(&payload).unwrap();
            let l = Layout::of(&dump.body).unwrap_or_else(|| panic!("{key}: {:02x?}", dump.body));
            assert_eq!((l.encver, dump.version), (0, [0x0a, 0x00]), "{key}: Redis 7.0, encoding 0");
            let ttl = 100 * 365 * 86_400_000i64;
            let _: () = redis::cmd("RESTORE").arg(key).arg(ttl).arg(&payload).query(&mut con).unwrap();
        }
        assert_locks(&mut con, 0, NINETY_YEARS_MS, 0);
        let max = locks.iter().map(|l| l.2).max().unwrap();
        assert_tokens_continue_above(&s, max);
        assert_reload_writes_current(&s, 0);
    }

    /// A lease loaded from encoding 0 (RDB, AOF preamble, plain AOF) takes its key's expiry as
    /// its own deadline when loading ends, so the next save writes it, not `-1`. (Failed at
    /// ceaa20e, before the end-of-loading scan.)
    fn a_lease_from_encoding_0_takes_its_key_expiry_as_its_deadline(kind: Kind) {
        for what in ["dump.rdb", "aof-preamble", "aof-plain"] {
            let s = start_on(kind, 0, what);
            for (key, deadline, expiry) in assert_reload_writes_current(&s, 0) {
                assert_eq!(deadline, expiry, "{what} / {key}: the lease's own deadline after DEBUG RELOAD");
            }
        }
    }

    /// PERSIST never extends a lease, loaded from encoding 0 or not: a holder that died does not
    /// hold it forever. (Failed at ceaa20e: the lease had no deadline of its own.)
    fn persist_does_not_make_a_lease_from_encoding_0_eternal(kind: Kind) {
        let s = start_on(kind, 0, "dump.rdb");
        let mut con = s.conn();
        let before = holder(&mut con, "lock:client-id").expect("held").lease.ttl_ms;
        let n: i64 = redis::cmd("PERSIST").arg("lock:client-id").query(&mut con).unwrap();
        assert_eq!(n, 1);
        let after = holder(&mut con, "lock:client-id").expect("held").lease.ttl_ms;
        assert!(after > 0 && after <= before, "PERSIST made the lease's TTL {after} (was {before})");
    }

    /// The RDB of the module of encoding 1, with its aux field, a claimed lock among them.
    fn an_rdb_of_encoding_1_loads_every_lease(kind: Kind) {
        let s = start_on(kind, 1, "dump.rdb");
        assert_locks(&mut s.conn(), 1, NINETY_YEARS_MS, 0);
        let (_, high) = manifest(1);
        assert_tokens_continue_above(&s, high);
        assert_reload_writes_current(&s, 1);
    }

    /// An AOF of encoding 1 whose base is an RDB preamble.
    fn an_aof_with_an_rdb_preamble_of_encoding_1_loads_every_lease(kind: Kind) {
        let s = start_on(kind, 1, "aof-preamble");
        assert_locks(&mut s.conn(), 1, NINETY_YEARS_MS, 0);
        let (_, high) = manifest(1);
        assert_tokens_continue_above(&s, high);
        assert_reload_writes_current(&s, 1);
    }

    /// An AOF of encoding 1 rewritten without a preamble: `PYLOCK.RESTORE key id token PXAT
    /// deadline [FROM id]` and `PEXPIREAT` lines.
    fn a_plain_aof_of_encoding_1_loads_every_lease(kind: Kind) {
        let s = start_on(kind, 1, "aof-plain");
        assert_locks(&mut s.conn(), 1, NINETY_YEARS_MS, 0);
        let (locks, _) = manifest(1);
        let max = locks.iter().map(|l| l.2).max().unwrap();
        assert_tokens_continue_above(&s, max);
        assert_reload_writes_current(&s, 1);
    }

    /// `DUMP` payloads of encoding 1 restore every lease, the claimed-from id included.
    fn dump_payloads_of_encoding_1_restore_every_lease(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let (locks, _) = manifest(1);
        for (key, ..) in &locks {
            let payload = std::fs::read(fixtures(1).join(format!("{}.dump", key.replace(':', "-")))).unwrap();
            let dump = Dump::parse(&payload).unwrap();
            let l = Layout::of(&dump.body).unwrap_or_else(|| panic!("{key}: {:02x?}", dump.body));
            assert_eq!((l.encver, dump.version), (1, [0x0a, 0x00]), "{key}: Redis 7.0, encoding 1");
            let ttl = 100 * 365 * 86_400_000i64;
            let _: () = redis::cmd("RESTORE").arg(key).arg(ttl).arg(&payload).query(&mut con).unwrap();
        }
        assert_locks(&mut con, 1, NINETY_YEARS_MS, 0);
        let max = locks.iter().map(|l| l.2).max().unwrap();
        assert_tokens_continue_above(&s, max);
        assert_reload_writes_current(&s, 1);
    }
}
