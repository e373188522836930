//! Malformed commands and mutated payloads at a large count: `scripts/fuzz-commands`.
//!
//! Starts its own server(s). Sends `--count` generated commands (`pylock_check::malformed`) and
//! checks every reply against the contract's model and that no key changed. Then, on a fresh
//! server, `RESTORE`s the edge-case payloads and `--payloads` random mutations of real lock
//! dumps (encoding version 1, and each as version 0) with a recomputed CRC64
//! (`pylock_check::payload`): each must load a well-formed lock
//! or get `ERR Bad data format`, and the server must stay up with no crash in its log. Exits 1
//! on any violation. Options: `--count N` (100000), `--payloads N` (100000),
//! `--server redis|valkey|both` (both), `--seed N`.

use pylock_check::{malformed, payload};
use testkit::{Kind, Server};

use pylock_check::cli_arg as arg;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let count: u64 = arg(&args, "--count").map_or(100_000, |v| v.parse().expect("--count"));
    let payloads: u64 =
        arg(&args, "--payloads").map_or(100_000, |v| v.parse().expect("--payloads"));
    let seed: u64 = arg(&args, "--seed").map_or(0xf022, |v| v.parse().expect("--seed"));
    let kinds = Kind::from_option(arg(&args, "--server").as_deref());
    let mut failed = false;
    for kind in kinds {
        if count > 0 {
            let mut s = Server::start(kind);
            let report = malformed::run(&s, count, seed);
            println!("== {} commands (seed {seed})", kind.name());
            println!("{}", report.summary());
            if !s.is_running() {
                println!("the server is gone");
                failed = true;
            }
            failed |= !report.violations.is_empty();
        }
        if payloads > 0 {
            let mut s = Server::start(kind);
            let report = payload::run(&s, payloads, seed);
            println!("== {} payloads (seed {seed})", kind.name());
            println!("{}", report.summary());
            if !s.is_running() {
                println!("the server is gone");
                failed = true;
            }
            failed |= !report.violations.is_empty();
        }
    }
    std::process::exit(i32::from(failed));
}
