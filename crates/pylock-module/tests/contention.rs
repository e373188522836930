//! The contention checker (`pylock_check::checker`) at a small size on real servers: plain, and
//! through SIGSTOP/SIGCONT, `DEBUG RELOAD` and `DEBUG LOADAOF` during the load; on locks, and
//! on semaphores of 3 (`LIMIT 3`). Each run takes a few seconds; `scripts/check-contention`
//! runs the same workload for longer.

use std::time::Duration;

use pylock_check::checker::{self, Config, FaultKind, Report};
use testkit::redis;
use testkit::{server_tests, Kind, Server};

/// The run's seed: fixed per test so a failure replays, or `PYLOCK_CHECK_SEED`.
fn config(kind: Kind, salt: u64) -> Config {
    let seed = std::env::var("PYLOCK_CHECK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0000 + salt * 2 + (kind == Kind::Valkey) as u64);
    let mut cfg = Config::small(seed);
    // The suite checks every watcher's reason, and that each is answered within a bound a
    // loaded 2-core CI machine keeps (a run beside other builds answered two 53 and 71 ms
    // late). The 50 ms target itself is measured by `scripts/check-contention`, whose figures
    // are in docs/RELIABILITY.md; a late wake-up has its own test in `watch.rs`.
    cfg.watch_limit = Duration::from_millis(1000);
    cfg
}

fn verdict(kind: Kind, what: &str, cfg: &Config, report: &Report) {
    let summary = report.summary();
    println!("{} / {what} / seed {}:\n{summary}", kind.name(), cfg.seed);
    assert!(report.passed(), "{summary}");
    let c = &report.counts;
    // The run must have exercised what it claims to check, even on a loaded machine.
    assert!(
        c.grants >= 20,
        "too few grants to mean anything:\n{summary}"
    );
    assert!(
        c.blocking_acquires > 0 && c.stale_calls > 0 && c.ghost_calls > 0,
        "{summary}"
    );
    assert!(report.confirmed_sections >= 5, "{summary}");
    // Claims, their retries and races, the losers' fenced writes and the watchers ran too.
    assert!(
        c.claims_won > 0 && c.claim_retries_won > 0 && c.claim_races > 0 && c.fence_probes > 0,
        "{summary}"
    );
    assert!(
        report.raced_leases > 0 && report.watches_checked >= 5,
        "{summary}"
    );
    // The FIFO check had waiters seen queued, and later callers to hold against them.
    assert!(
        report.waiters_seen_queued > 0 && report.fifo_pairs > 0,
        "{summary}"
    );
}

/// A semaphore run: 3 places per key, 10 workers on 2 keys, so places run out and waiters
/// queue; the run must have had more than one lease proven valid at once.
fn semaphore_config(kind: Kind, salt: u64) -> Config {
    Config {
        limit: 3,
        workers: 10,
        keys: 2,
        ..config(kind, salt)
    }
}

fn semaphore_verdict(kind: Kind, what: &str, cfg: &Config, report: &Report) {
    verdict(kind, what, cfg, report);
    assert!(
        report.peak_proven_concurrency >= 2,
        "no two leases of one key were proven valid at once:\n{}",
        report.summary()
    );
    assert!(report.counts.contended > 0, "{}", report.summary());
}

/// One SIGSTOP/SIGCONT of `s`, `ms` apart, recorded as a fault.
fn stop(faults: &checker::Faults, s: &Server, ms: u64) {
    faults.inject(FaultKind::Stop, || {
        s.signal("STOP");
        std::thread::sleep(Duration::from_millis(ms));
        s.signal("CONT");
    });
}

/// One `DEBUG RELOAD` or `DEBUG LOADAOF` (`what`), recorded as a fault.
fn reload(faults: &checker::Faults, con: &mut redis::Connection, what: &str) {
    faults.inject(FaultKind::Reload, || {
        redis::cmd("DEBUG")
            .arg(what)
            .query::<()>(con)
            .unwrap_or_else(|e| panic!("DEBUG {what}: {e}"))
    });
}

server_tests! {
    fn no_lock_is_granted_twice_under_contention(kind: Kind) {
        let s = Server::start(kind);
        let cfg = config(kind, 1);
        let history = checker::run(&s, &cfg, |_| {});
        let report = checker::check(&s, &cfg, &history);
        verdict(kind, "plain", &cfg, &report);
        // Short TTLs and long work: some leases must have lapsed mid-work.
        assert!(report.counts.own_lease_lost > 0, "{}", report.summary());
    }

    fn sigstop_and_sigcont_during_load_break_nothing(kind: Kind) {
        let s = Server::start(kind);
        let cfg = config(kind, 2);
        let mut stops = 0;
        let history = checker::run(&s, &cfg, |faults| {
            while faults.sleep(300) {
                stop(faults, &s, 200);
                stops += 1;
            }
        });
        let report = checker::check(&s, &cfg, &history);
        println!("{stops} SIGSTOP/SIGCONT pairs");
        verdict(kind, "SIGSTOP/SIGCONT", &cfg, &report);
        assert!(stops >= 2, "only {stops} stops");
    }

    fn debug_reload_during_load_breaks_nothing(kind: Kind) {
        let s = Server::start(kind);
        let cfg = config(kind, 3);
        let mut reloads = 0;
        let history = checker::run(&s, &cfg, |faults| {
            let mut con = s.conn();
            while faults.sleep(250) {
                reload(faults, &mut con, "RELOAD");
                reloads += 1;
            }
        });
        let report = checker::check(&s, &cfg, &history);
        println!("{reloads} DEBUG RELOADs");
        verdict(kind, "DEBUG RELOAD", &cfg, &report);
        assert!(reloads >= 2, "only {reloads} reloads");
    }

    fn debug_loadaof_during_load_breaks_nothing(kind: Kind) {
        let s = Server::start_with(kind, &["--appendonly", "yes", "--appendfsync", "always"]);
        s.wait_aof_rewrite_done();
        let cfg = config(kind, 4);
        let mut loads = 0;
        let history = checker::run(&s, &cfg, |faults| {
            let mut con = s.conn();
            while faults.sleep(250) {
                reload(faults, &mut con, "LOADAOF");
                loads += 1;
            }
        });
        let report = checker::check(&s, &cfg, &history);
        println!("{loads} DEBUG LOADAOFs");
        verdict(kind, "DEBUG LOADAOF", &cfg, &report);
        assert!(loads >= 2, "only {loads} loads");
    }

    fn a_semaphore_of_three_never_has_four_holders_and_skips_no_waiter(kind: Kind) {
        let s = Server::start(kind);
        let cfg = semaphore_config(kind, 5);
        let history = checker::run(&s, &cfg, |_| {});
        let report = checker::check(&s, &cfg, &history);
        semaphore_verdict(kind, "LIMIT 3", &cfg, &report);
        assert!(report.counts.own_lease_lost > 0, "{}", report.summary());
    }

    fn a_semaphore_of_three_survives_stops_reloads_and_aof_loads(kind: Kind) {
        let s = Server::start_with(kind, &["--appendonly", "yes", "--appendfsync", "always"]);
        s.wait_aof_rewrite_done();
        let cfg = semaphore_config(kind, 6);
        let (mut stops, mut reloads, mut loads) = (0, 0, 0);
        let history = checker::run(&s, &cfg, |faults| {
            let mut con = s.conn();
            let mut turn = 0;
            while faults.sleep(250) {
                turn += 1;
                match turn % 3 {
                    0 => {
                        stop(faults, &s, 150);
                        stops += 1;
                    }
                    1 => {
                        reload(faults, &mut con, "RELOAD");
                        reloads += 1;
                    }
                    _ => {
                        reload(faults, &mut con, "LOADAOF");
                        loads += 1;
                    }
                }
            }
        });
        let report = checker::check(&s, &cfg, &history);
        println!("{stops} SIGSTOP/SIGCONT, {reloads} DEBUG RELOAD, {loads} DEBUG LOADAOF");
        semaphore_verdict(kind, "LIMIT 3 with faults", &cfg, &report);
        assert!(stops >= 1 && reloads >= 1 && loads >= 1, "{stops} {reloads} {loads}");
    }
}
