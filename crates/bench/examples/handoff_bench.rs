//! Hand-off latency of `PYLOCK.ACQUIRE … BLOCK` against a polling client, side by side.
//!
//! Starts its own redis-server (or valkey-server with `--valkey`) with the module and measures,
//! on loopback:
//!
//! - release → waiter's reply: a blocked waiter (BLOCK) versus a poller that retries a plain
//!   ACQUIRE every 100 ms, as redis-py's Lock does;
//! - lease deadline → waiter's reply, for both.
//!
//! Run with `scripts/bench-handoff`. Prints medians, p99 and max, and the polling/blocking ratio.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use testkit::redis::{self, Value};
use testkit::{acquire, pexpiretime, query, Kind, Server};

const POLL_INTERVAL: Duration = Duration::from_millis(100);

fn unix_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Waits for the lock at `key` in another thread, either blocking server-side or polling.
/// The thread reports the instant and the Unix µs at which it got the lock.
fn waiter(s: &Server, key: &str, polling: bool, phase: Duration) -> mpsc::Receiver<(Instant, i64)> {
    let mut con = s.conn();
    let key = key.to_string();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || loop {
        thread::sleep(phase);
        let v = if polling {
            query(&mut con, &[b"PYLOCK.ACQUIRE", key.as_bytes(), b"60000"])
        } else {
            query(
                &mut con,
                &[
                    b"PYLOCK.ACQUIRE",
                    key.as_bytes(),
                    b"60000",
                    b"BLOCK",
                    b"30000",
                ],
            )
        };
        if v != Value::Nil {
            let _ = tx.send((Instant::now(), unix_us()));
            return;
        }
        if !polling {
            return; // timed out: the sender is dropped and the sample is lost
        }
        thread::sleep(POLL_INTERVAL - phase);
    });
    rx
}

fn waiters(con: &mut redis::Connection, key: &str) -> i64 {
    testkit::holder(con, key).map_or(0, |h| h.waiters)
}

/// Microseconds from a RELEASE to the waiter holding the lock.
fn after_release(s: &Server, polling: bool, samples: usize) -> Vec<f64> {
    let mut con = s.conn();
    let mut out = Vec::with_capacity(samples);
    for i in 0..samples {
        let key = format!("rel:{polling}:{i}");
        let held = acquire(&mut con, &key, 60_000).expect("free");
        let rx = waiter(s, &key, polling, Duration::ZERO);
        if polling {
            // Release at a spread of points in the poller's sleep.
            thread::sleep(Duration::from_millis(5 + (i as u64 * 37) % 90));
        } else {
            while waiters(&mut con, &key) == 0 {
                thread::sleep(Duration::from_micros(200));
            }
        }
        let t0 = Instant::now();
        query(&mut con, &[b"PYLOCK.RELEASE", key.as_bytes(), &held.id]);
        if let Ok((t1, _)) = rx.recv_timeout(Duration::from_secs(5)) {
            out.push(t1.duration_since(t0).as_secs_f64() * 1e6);
        }
    }
    out
}

/// Microseconds from a lease's deadline to the waiter holding the lock.
fn after_expiry(s: &Server, polling: bool, samples: usize) -> Vec<f64> {
    let mut con = s.conn();
    let mut out = Vec::with_capacity(samples);
    for i in 0..samples {
        let key = format!("exp:{polling}:{i}");
        acquire(&mut con, &key, 200).expect("free");
        let deadline_us = pexpiretime(&mut con, &key) * 1000;
        // The poller's first try comes at a spread of points in its 100 ms period.
        let phase = if polling {
            Duration::from_millis((i as u64 * 37) % 100)
        } else {
            Duration::ZERO
        };
        let rx = waiter(s, &key, polling, phase);
        if let Ok((_, at_us)) = rx.recv_timeout(Duration::from_secs(5)) {
            out.push((at_us - deadline_us) as f64);
        }
    }
    out
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(name: &str, mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let (p50, p99, max) = (pct(&v, 0.5), pct(&v, 0.99), pct(&v, 1.0));
    println!(
        "| {name:<34} | {:>5} | {:>10.3} | {:>10.3} | {:>10.3} |",
        v.len(),
        p50 / 1000.0,
        p99 / 1000.0,
        max / 1000.0
    );
    p50
}

fn main() {
    let kind = if std::env::args().any(|a| a == "--valkey") {
        Kind::Valkey
    } else {
        Kind::Redis
    };
    let s = Server::start(kind);
    let version: String = redis::cmd("INFO")
        .arg("server")
        .query(&mut s.conn())
        .unwrap_or_default();
    let version = testkit::info_field(&version, "redis_version").unwrap_or_default();
    println!(
        "server: {} {version} on 127.0.0.1:{}",
        kind.name(),
        s.port()
    );
    println!(
        "| {:<34} | {:>5} | {:>10} | {:>10} | {:>10} |",
        "measure", "n", "p50 ms", "p99 ms", "max ms"
    );
    println!(
        "|{}|{}|{}|{}|{}|",
        "-".repeat(36),
        "-".repeat(7),
        "-".repeat(12),
        "-".repeat(12),
        "-".repeat(12)
    );
    let b_rel = summary("release -> reply, BLOCK", after_release(&s, false, 500));
    let p_rel = summary(
        "release -> reply, polling 100 ms",
        after_release(&s, true, 40),
    );
    let b_exp = summary("deadline -> reply, BLOCK", after_expiry(&s, false, 100));
    let p_exp = summary(
        "deadline -> reply, polling 100 ms",
        after_expiry(&s, true, 40),
    );
    println!();
    println!(
        "median ratio polling/BLOCK after release: {:.0}x",
        p_rel / b_rel
    );
    println!(
        "median ratio polling/BLOCK after expiry:  {:.0}x",
        p_exp / b_exp.max(1.0)
    );
}
