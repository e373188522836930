//! Restarts from RDB, from AOF (with and without the RDB preamble, before and after a rewrite)
//! and `DEBUG RELOAD`: leases keep their id, token and absolute expiry, expired leases are
//! gone, and fencing tokens continue above everything granted before.

mod common;

use std::time::Duration;

use common::high_water;
use testkit::redis;
use testkit::{acquire, holder, pexpiretime, query, server_tests, Kind, Lease, Server};

/// What the scenario left behind, to compare after the restart.
struct Before {
    long: Lease,
    long_expiry: i64,
    custom: Lease,
    custom_expiry: i64,
    max_token: i64,
}

/// Grants a long lease, a custom-id lease, a short lease that will expire while the server is
/// down, and a lease that is released (its token must still not be reissued).
fn populate(s: &Server) -> Before {
    let mut con = s.conn();
    let long = acquire(&mut con, "long", 600_000).unwrap();
    let custom = Lease::from_value(&query(
        &mut con,
        &[
            b"PYLOCK.ACQUIRE",
            b"custom",
            b"300000",
            b"LEASE",
            b"job\x00\xff-17",
        ],
    ));
    let short = acquire(&mut con, "short", 300).unwrap();
    let released = acquire(&mut con, "released", 600_000).unwrap();
    query(&mut con, &[b"PYLOCK.RELEASE", b"released", &released.id]);
    let max_token = long
        .token
        .max(custom.token)
        .max(short.token)
        .max(released.token);
    assert_eq!(high_water(s), max_token);
    Before {
        long_expiry: pexpiretime(&mut con, "long"),
        custom_expiry: pexpiretime(&mut con, "custom"),
        long,
        custom,
        max_token,
    }
}

fn check(s: &Server, before: &Before, what: &str) {
    let mut con = s.conn();
    for (key, lease, expiry) in [
        ("long", &before.long, before.long_expiry),
        ("custom", &before.custom, before.custom_expiry),
    ] {
        let h = holder(&mut con, key).unwrap_or_else(|| panic!("{what}: {key} lost"));
        assert_eq!(h.lease.id, lease.id, "{what}: {key} lease id");
        assert_eq!(h.lease.token, lease.token, "{what}: {key} token");
        assert_eq!(
            pexpiretime(&mut con, key),
            expiry,
            "{what}: {key} absolute expiry"
        );
    }
    assert_eq!(
        holder(&mut con, "short"),
        None,
        "{what}: expired lease still held"
    );
    let exists: i64 = redis::cmd("EXISTS").arg("short").query(&mut con).unwrap();
    assert_eq!(exists, 0, "{what}: expired key still present");
    assert!(
        high_water(s) >= before.max_token,
        "{what}: high water {} < {}",
        high_water(s),
        before.max_token
    );
    let next = acquire(&mut con, "released", 1000).unwrap();
    assert!(
        next.token > before.max_token,
        "{what}: token {} reissued",
        next.token
    );
}

/// Lets the short lease's deadline pass while the server is down.
fn outlive_short_lease() {
    std::thread::sleep(Duration::from_millis(400));
}

fn aof_text(s: &Server) -> String {
    let dir = s.dir().join("appendonlydir");
    let mut text = String::new();
    for entry in std::fs::read_dir(&dir).expect("appendonlydir").flatten() {
        text.push_str(&String::from_utf8_lossy(
            &std::fs::read(entry.path()).unwrap(),
        ));
    }
    text
}

server_tests! {
    fn rdb_restart_keeps_leases(kind: Kind) {
        let mut s = Server::start(kind);
        let before = populate(&s);
        redis::cmd("SAVE").query::<()>(&mut s.conn()).unwrap();
        s.kill();
        outlive_short_lease();
        s.restart_with(&[]);
        check(&s, &before, "RDB");
    }

    fn rdb_restores_the_token_high_water_with_no_locks_left(kind: Kind) {
        let mut s = Server::start(kind);
        let mut con = s.conn();
        let l = acquire(&mut con, "k", 60_000).unwrap();
        query(&mut con, &[b"PYLOCK.RELEASE", b"k", &l.id]);
        redis::cmd("SAVE").query::<()>(&mut con).unwrap();
        s.kill();
        s.restart_with(&[]);
        // Nothing is left in the keyspace: only the RDB's aux field carries the sequence.
        assert_eq!(high_water(&s), l.token);
    }

    fn aof_restart_keeps_leases(kind: Kind) {
        let mut s = Server::start_with(kind, &["--appendonly", "yes", "--appendfsync", "always"]);
        s.wait_aof_rewrite_done();
        let before = populate(&s);
        s.kill();
        outlive_short_lease();
        s.restart_with(&[]);
        check(&s, &before, "AOF");
    }

    fn aof_holds_effects_not_commands(kind: Kind) {
        let s = Server::start_with(kind, &["--appendonly", "yes", "--appendfsync", "always"]);
        s.wait_aof_rewrite_done();
        let before = populate(&s);
        let mut con = s.conn();
        query(&mut con, &[b"PYLOCK.CONFIRM", b"long", &before.long.id, b"EXTEND", b"700000"]);
        let text = aof_text(&s);
        assert!(!text.contains("PYLOCK.ACQUIRE") && !text.contains("PYLOCK.CONFIRM"), "{text}");
        assert!(text.contains("PYLOCK.RESTORE") && text.contains("DEL"), "{text}");
        // A renewal is the whole lease again with its new absolute deadline, not PEXPIREAT.
        assert!(!text.contains("PEXPIREAT"), "{text}");
        // The replayed deadline is the absolute one, not a fresh relative TTL.
        let expiry = pexpiretime(&mut con, "long").to_string();
        assert!(text.contains(&expiry), "{expiry} missing from\n{text}");
    }

    fn aof_rewrite_with_rdb_preamble_keeps_leases(kind: Kind) {
        aof_rewrite_scenario(kind, "yes");
    }

    fn aof_rewrite_without_rdb_preamble_keeps_leases(kind: Kind) {
        aof_rewrite_scenario(kind, "no");
    }

    fn debug_reload_keeps_leases(kind: Kind) {
        let s = Server::start(kind);
        let before = populate(&s);
        outlive_short_lease();
        redis::cmd("DEBUG").arg("RELOAD").query::<()>(&mut s.conn()).unwrap();
        check(&s, &before, "DEBUG RELOAD");
    }

    fn debug_loadaof_keeps_leases(kind: Kind) {
        let s = Server::start_with(kind, &["--appendonly", "yes", "--appendfsync", "always"]);
        s.wait_aof_rewrite_done();
        let before = populate(&s);
        outlive_short_lease();
        redis::cmd("DEBUG").arg("LOADAOF").query::<()>(&mut s.conn()).unwrap();
        check(&s, &before, "DEBUG LOADAOF");
    }
}

/// Leases before a BGREWRITEAOF (into the base file) and after it (into the incr file).
fn aof_rewrite_scenario(kind: Kind, preamble: &str) {
    let mut s = Server::start_with(
        kind,
        &[
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--aof-use-rdb-preamble",
            preamble,
        ],
    );
    s.wait_aof_rewrite_done();
    let mut con = s.conn();
    let early = acquire(&mut con, "early", 600_000).unwrap();
    redis::cmd("BGREWRITEAOF")
        .query::<String>(&mut con)
        .unwrap();
    s.wait_aof_rewrite_done();
    let base_is_rdb = std::fs::read_dir(s.dir().join("appendonlydir"))
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().ends_with(".base.rdb"));
    assert_eq!(base_is_rdb, preamble == "yes", "base file format");
    if preamble == "no" {
        let text = aof_text(&s);
        assert!(
            text.contains("PYLOCK.RESTORE"),
            "rewrite emitted no PYLOCK.RESTORE:\n{text}"
        );
    }
    let before = populate(&s);
    let early_expiry = pexpiretime(&mut con, "early");
    s.kill();
    outlive_short_lease();
    s.restart_with(&[]);
    check(
        &s,
        &before,
        if preamble == "yes" {
            "AOF+preamble"
        } else {
            "AOF rewrite"
        },
    );
    let mut con = s.conn();
    let h = holder(&mut con, "early").expect("lease from the rewritten base survived");
    assert_eq!((h.lease.id, h.lease.token), (early.id, early.token));
    assert_eq!(pexpiretime(&mut con, "early"), early_expiry);
}
