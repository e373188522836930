//! Test tools for the pylock module that go beyond one scenario per test. They drive real
//! servers started by `testkit`.
//!
//! - [`checker`]: the contention checker. Many clients hammer a few locks, claim leases
//!   (retried, and raced by duplicates) and watch them, and the checker proves from the server's
//!   own answers that no lock was ever held by two leases at once, that each lease had at most
//!   one successful claimant, that no fenced write was lost, and that every watcher was told
//!   why its lease ended, in time.
//! - [`malformed`]: a generator of malformed PYLOCK commands and a model of the wire contract
//!   that says which replies each may get.
//! - [`payload`]: mutated `DUMP` payloads of locks with a recomputed CRC64, for `RESTORE`, and
//!   the check that each restores a well-formed lock or is refused without a crash.
//!
//! The module's suites use them at a small size (`crates/pylock-module/tests/contention.rs`,
//! `cluster.rs`, `malformed.rs`, `restore_payloads.rs`; `faults.rs` borrows the checker's
//! seeded [`checker::Rng`]). This crate's binaries run them at a large size: `check-contention`
//! (`scripts/check-contention`) and `fuzz-commands` (`scripts/fuzz-commands`, commands and
//! payloads).

pub mod checker;
pub mod malformed;
pub mod payload;

/// The value after `name` on a command line (`--count 10` → `Some("10")`), for the binaries.
pub fn cli_arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// Appends a run's verdict line, and up to 30 of its violations, to a report.
pub(crate) fn write_verdict(out: &mut String, violations: &[String]) {
    use std::fmt::Write as _;
    if violations.is_empty() {
        let _ = writeln!(out, "verdict: PASS, 0 violations");
    } else {
        let _ = writeln!(out, "verdict: FAIL, {} violations:", violations.len());
        for v in violations.iter().take(30) {
            let _ = writeln!(out, "  - {v}");
        }
    }
}
