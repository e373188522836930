//! Runs `pylocks-demo` (a producer and three worker processes) against a real server and checks
//! its totals independently, from Redis.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use testkit::redis;
use testkit::{server_tests, Server};

const PEOPLE: u64 = 4;
const TASKS: u64 = 60;
const EXPIRED: u64 = 3;

/// The demo's plan, restated: task t adds to person (t / 2) % K; with s = M / E, pattern-2
/// task t gets an expiring lease when t % s == s / 2 (at most E); those add 1000, others 1.
fn person_of(t: u64) -> u64 {
    (t / 2) % PEOPLE
}

fn planned_expired() -> BTreeSet<u64> {
    let stride = TASKS / EXPIRED;
    (0..TASKS)
        .filter(|t| t % stride == stride / 2)
        .take(EXPIRED as usize)
        .collect()
}

fn members(con: &mut redis::Connection, key: &str) -> BTreeSet<u64> {
    redis::cmd("SMEMBERS").arg(key).query(con).unwrap()
}

fn counter(con: &mut redis::Connection, pattern: u8, person: u64) -> i64 {
    let v: Option<i64> = redis::cmd("GET")
        .arg(format!("demo:p{pattern}:person:{person}"))
        .query(con)
        .unwrap();
    v.unwrap_or(0)
}

server_tests! {
    fn both_patterns_give_exact_totals_across_worker_processes(kind: Kind) {
        let s = Server::start(kind);
        let mut child = Command::new(env!("CARGO_BIN_EXE_pylocks-demo"))
            .args(["run", "--url", &s.url(), "--namespace", "demo", "--workers", "3"])
            .args(["--people", &PEOPLE.to_string(), "--tasks", &TASKS.to_string()])
            .args(["--expired", &EXPIRED.to_string(), "--short-ttl-ms", "100", "--delay-ms", "300"])
            .args(["--timeout-s", "15"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start pylocks-demo");
        // Read the output as it comes, so a full pipe can never stall the demo.
        let mut pipe = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut pipe, &mut text).map(|_| text)
        });
        let Some(status) = testkit::wait_child(&mut child, Duration::from_secs(20)) else {
            panic!("pylocks-demo did not finish in 20 s");
        };
        let stdout = reader.join().unwrap().unwrap();
        println!("{stdout}");
        assert!(status.success(), "pylocks-demo failed: {status}");
        assert!(stdout.contains("pattern 1 counters") && stdout.contains("pattern 2 counters"));

        let mut con = s.conn();
        // Pattern 1: every task applied, except any that ran out of tries (recorded as failed).
        let failed = members(&mut con, "demo:p1:failed");
        assert!(failed.len() < 3, "almost every task gets its lock eventually: {failed:?}");
        for p in 0..PEOPLE {
            let want = (0..TASKS).filter(|t| person_of(*t) == p && !failed.contains(t)).count() as i64;
            assert_eq!(counter(&mut con, 1, p), want, "pattern 1, person {p}");
        }
        // Pattern 2: exactly the planned tasks were refused, and none of their 1000s landed.
        let expired = planned_expired();
        assert_eq!(expired.len() as u64, EXPIRED);
        assert_eq!(members(&mut con, "demo:p2:refused"), expired);
        for p in 0..PEOPLE {
            let want = (0..TASKS).filter(|t| person_of(*t) == p && !expired.contains(t)).count() as i64;
            assert_eq!(counter(&mut con, 2, p), want, "pattern 2, person {p}");
        }
        // Every lock was given back.
        for p in 0..PEOPLE {
            assert!(testkit::holder(&mut con, &format!("demo:person:{p}")).is_none());
        }
        let queue: i64 = redis::cmd("LLEN").arg("demo:queue").query(&mut con).unwrap();
        assert_eq!(queue, 0, "the workers took every stop message");
    }
}
