//! Malformed commands at a large count: `scripts/fuzz-commands`.
//!
//! Starts its own server(s), sends `--count` generated commands (`pylock_check::malformed`) and
//! checks every reply against the contract's model and that no key changed. Exits 1 on any
//! violation. Options: `--count N` (100000), `--server redis|valkey|both` (both), `--seed N`.

use pylock_check::malformed;
use testkit::{Kind, Server};

use pylock_check::cli_arg as arg;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let count: u64 = arg(&args, "--count").map_or(100_000, |v| v.parse().expect("--count"));
    let seed: u64 = arg(&args, "--seed").map_or(0xf022, |v| v.parse().expect("--seed"));
    let kinds = Kind::from_option(arg(&args, "--server").as_deref());
    let mut failed = false;
    for kind in kinds {
        let mut s = Server::start(kind);
        let report = malformed::run(&s, count, seed);
        println!("== {} (seed {seed})", kind.name());
        println!("{}", report.summary());
        if !s.is_running() {
            println!("the server is gone");
            failed = true;
        }
        failed |= !report.violations.is_empty();
    }
    std::process::exit(i32::from(failed));
}
