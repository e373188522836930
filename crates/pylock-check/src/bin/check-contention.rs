//! The contention checker at a large size: `scripts/check-contention`.
//!
//! Starts its own server(s) with the module, runs `pylock_check::checker` for a bounded time with
//! faults injected, and prints the history summary and the verdict. Exits 1 on any violation.
//!
//! Options: `--seconds N` (60), `--server redis|valkey|both` (both), `--workers N` (16),
//! `--keys N` (4), `--faults none|stop|reload|all` (all), `--seed N`, `--watch-limit-ms N`
//! (50: how late a watcher may be answered), `--claim-percent N` (30), `--watch-percent N`
//! (50), `--limit N` (1: a lock; above 1 every key is a semaphore of N).

use std::time::Duration;

use pylock_check::checker::{self, Config, FaultKind};
use testkit::{redis, Kind, Server};

use pylock_check::cli_arg as arg;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |name: &str, default: u64| {
        arg(&args, name).map_or(default, |v| {
            v.parse().unwrap_or_else(|_| panic!("{name} {v}"))
        })
    };
    let seconds = num("--seconds", 60);
    let faults = arg(&args, "--faults").unwrap_or_else(|| "all".into());
    let kinds = Kind::from_option(arg(&args, "--server").as_deref());
    let mut failed = false;
    for kind in kinds {
        let cfg = Config {
            workers: num("--workers", 16) as usize,
            keys: num("--keys", 4) as usize,
            duration: Duration::from_secs(seconds),
            seed: num("--seed", 0x5eed) + (kind == Kind::Valkey) as u64,
            watch_limit: Duration::from_millis(num("--watch-limit-ms", 50)),
            claim_percent: num("--claim-percent", 30),
            watch_percent: num("--watch-percent", 50),
            limit: num("--limit", 1),
            ..Config::small(0)
        };
        let s = Server::start_with(kind, &["--appendonly", "yes", "--appendfsync", "always"]);
        s.wait_aof_rewrite_done();
        let (mut stops, mut reloads, mut loadaofs) = (0, 0, 0);
        let history = checker::run(&s, &cfg, |log| {
            if faults == "none" {
                return;
            }
            let mut con = s.conn();
            let mut turn = 0u64;
            while log.sleep(400) {
                turn += 1;
                let which = match faults.as_str() {
                    "stop" => 0,
                    "reload" => 1 + turn % 2,
                    _ => turn % 3,
                };
                match which {
                    0 => {
                        log.inject(FaultKind::Stop, || {
                            s.signal("STOP");
                            std::thread::sleep(Duration::from_millis(50 + turn % 4 * 100));
                            s.signal("CONT");
                        });
                        stops += 1;
                    }
                    1 => {
                        log.inject(FaultKind::Reload, || {
                            redis::cmd("DEBUG")
                                .arg("RELOAD")
                                .query::<()>(&mut con)
                                .expect("DEBUG RELOAD")
                        });
                        reloads += 1;
                    }
                    _ => {
                        log.inject(FaultKind::Reload, || {
                            redis::cmd("DEBUG")
                                .arg("LOADAOF")
                                .query::<()>(&mut con)
                                .expect("DEBUG LOADAOF")
                        });
                        loadaofs += 1;
                    }
                }
            }
        });
        let report = checker::check(&s, &cfg, &history);
        println!(
            "== {} (seed {}, {} workers, {} keys, limit {}): faults injected: {stops} SIGSTOP/SIGCONT, {reloads} DEBUG RELOAD, {loadaofs} DEBUG LOADAOF",
            kind.name(),
            cfg.seed,
            cfg.workers,
            cfg.keys,
            cfg.limit
        );
        println!("{}", report.summary());
        failed |= !report.passed();
    }
    std::process::exit(i32::from(failed));
}
