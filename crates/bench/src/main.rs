//! Side-by-side benchmarks of the pylock module against the Redis-native lock patterns.
//!
//! Run with `scripts/bench` (or `scripts/bench --quick` for a smoke run). It starts its own
//! redis-server with the module (through `testkit`) and measures, in one run, each figure
//! next to its baseline so that the ratios are fair on a noisy machine:
//!
//! - server time per call (`INFO commandstats`, reset before every phase) and pipelined
//!   throughput (`redis-benchmark -P 64`): ACQUIRE vs `SET key uuid NX PX`, CONFIRM … EXTEND vs
//!   the EVALSHA compare-and-pexpire, CONFIRM vs `GET`; RELEASE vs the EVALSHA
//!   compare-and-delete, driven from here because each lock can be released only once;
//! - a full client cycle (acquire, confirm with EXTEND, release; and acquire, release), its rate
//!   and its client and server CPU per cycle, with the `pylocks` client vs
//!   plain redis-rs with `SET NX PX` and the two Lua scripts;
//! - memory per held lock (`used_memory` delta / `DBSIZE`) vs plain `SET key uuid PX` keys;
//! - server CPU (`used_cpu_sys + used_cpu_user`) while all the keys expire;
//! - a semaphore with 1,000 and 10,000 live leases against a plain lock: server time of
//!   ACQUIRE, RELEASE, CONFIRM and CONFIRM … EXTEND, and memory per extra lease.
//!
//! Every measurement runs several times, the two sides interleaved, and the medians are
//! reported. Results go to stdout as tables, to a Markdown file and to a PNG plot of the ratios.
//!
//! The `handoff_bench` example (`scripts/bench-handoff`) measures the hand-off latency of
//! `PYLOCK.ACQUIRE … BLOCK` against a polling client.

mod plot;

use std::collections::HashMap;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use testkit::redis::{self, Value};
use testkit::{Kind, Server};

/// The lease id (and string value) used wherever a fixed one is needed: a UUID's 36 bytes.
const LEASE: &str = "0b6b9c3e-8c1f-4f57-9d55-2f0a2cbd6f0e";
const RELEASE_LUA: &str =
    "if redis.call('get',KEYS[1])==ARGV[1] then return redis.call('del',KEYS[1]) else return 0 end";
const EXTEND_LUA: &str = "if redis.call('get',KEYS[1])==ARGV[1] then return redis.call('pexpire',KEYS[1],ARGV[2]) else return 0 end";

/// Sizes of one run.
#[derive(Clone, Copy)]
struct Plan {
    reps: usize,
    /// Commands per redis-benchmark run.
    bench_n: usize,
    /// Random keyspace for ACQUIRE / SET NX (large, so nearly every key is new).
    acquire_keyspace: usize,
    /// Held locks (and string keys) that CONFIRM, EXTEND, GET and RELEASE work on.
    held: usize,
    /// Keys for the memory and expiry phases.
    population: usize,
    /// Seconds per side of the client-cycle phase.
    cycle_secs: f64,
    /// Client threads for the release driver and the client cycle.
    threads: usize,
}

impl Plan {
    fn full() -> Self {
        Self {
            reps: 5,
            bench_n: 500_000,
            acquire_keyspace: 100_000_000,
            held: 200_000,
            population: 1_000_000,
            cycle_secs: 3.0,
            threads: 4,
        }
    }
    fn quick() -> Self {
        Self {
            reps: 2,
            bench_n: 50_000,
            acquire_keyspace: 100_000_000,
            held: 20_000,
            population: 50_000,
            cycle_secs: 0.5,
            threads: 2,
        }
    }
}

struct Args {
    plan: Plan,
    quick: bool,
    plot: String,
    markdown: String,
    /// Phases to run (all when empty).
    only: Vec<String>,
    /// The server to measure (`--server redis|valkey`, Redis by default).
    kind: Kind,
}

const PHASES: [&str; 9] = [
    "acquire",
    "confirm",
    "release",
    "cycle",
    "memory",
    "expiry",
    "handoff",
    "watch",
    "semaphore",
];

fn parse_args() -> Result<Args, String> {
    let mut quick = false;
    let mut reps = None;
    let mut plot = "target/bench/ratios.png".to_string();
    let mut markdown = "target/bench/results.md".to_string();
    let mut only = Vec::new();
    let mut kind = Kind::Redis;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--reps" => reps = Some(it.next().and_then(|v| v.parse().ok()).ok_or("--reps N")?),
            "--plot" => plot = it.next().ok_or("--plot PATH")?,
            "--markdown" => markdown = it.next().ok_or("--markdown PATH")?,
            "--only" => {
                let phase = it.next().ok_or("--only PHASE")?;
                if !PHASES.contains(&phase.as_str()) {
                    return Err(format!(
                        "unknown phase {phase}; phases: {}",
                        PHASES.join(", ")
                    ));
                }
                only.push(phase);
            }
            "--server" => {
                kind = match it.next().as_deref() {
                    Some("redis") => Kind::Redis,
                    Some("valkey") => Kind::Valkey,
                    _ => return Err("--server redis|valkey".into()),
                }
            }
            "-h" | "--help" => {
                println!(
                    "usage: bench [--quick] [--reps N] [--plot PATH.png] [--markdown PATH.md] [--only PHASE]... \
                     [--server redis|valkey]\n\
                     Starts redis-server (or valkey-server) with the module and measures pylock against SET NX PX, \
                     the Lua scripts and BLPOP/RPUSH, side by side. Phases: {}.",
                    PHASES.join(", ")
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other} (try --help)")),
        }
    }
    let mut plan = if quick { Plan::quick() } else { Plan::full() };
    if let Some(r) = reps {
        plan.reps = r;
    }
    Ok(Args {
        plan,
        quick,
        plot,
        markdown,
        only,
        kind,
    })
}

/// `bench plot-tsv IN.tsv OUT.png CAPTION`: draws ratios computed elsewhere (scripts/bench-peers
/// writes them), one `label TAB ratio TAB none|atmost|atleast TAB target` line each.
fn plot_tsv(argv: &[String]) -> Result<(), String> {
    let [input, output, caption] = argv else {
        return Err("usage: bench plot-tsv IN.tsv OUT.png CAPTION".into());
    };
    let text = std::fs::read_to_string(input).map_err(|e| format!("{input}: {e}"))?;
    let mut ratios = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        let [label, ratio, kind, target] = f[..] else {
            return Err(format!("{input}: not 4 fields: {line}"));
        };
        let ratio: f64 = ratio
            .parse()
            .map_err(|_| format!("{input}: bad ratio in {line}"))?;
        let t: f64 = target
            .parse()
            .map_err(|_| format!("{input}: bad target in {line}"))?;
        let target = match kind {
            "atmost" => Some(Target::AtMost(t)),
            "atleast" => Some(Target::AtLeast(t)),
            _ => None,
        };
        ratios.push(Ratio {
            label: label.to_string(),
            ratio,
            target,
        });
    }
    plot::ratios(output, &ratios, caption)
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some("plot-tsv") {
        if let Err(e) = plot_tsv(&argv[1..]) {
            eprintln!("bench: {e}");
            std::process::exit(2);
        }
        return;
    }
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::exit(2);
        }
    };
    let started = Instant::now();
    let server = Server::start_with(args.kind, &[]);
    let mut b = Bench::new(&server, args.plan);
    // Valkey reports a Redis-compatible `redis_version`; its own is `valkey_version`.
    let version = match b.info("server", "valkey_version") {
        Some(v) => format!("Valkey {v}"),
        None => format!(
            "Redis {}",
            b.info("server", "redis_version").unwrap_or_default()
        ),
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default();
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "pylock benchmarks: {version}, {cores} cores ({cpu}), {} reps{}",
        args.plan.reps,
        if args.quick { ", --quick" } else { "" }
    );

    let mut report = Report::default();
    for phase in PHASES {
        if !args.only.is_empty() && !args.only.iter().any(|p| p == phase) {
            continue;
        }
        match phase {
            "acquire" => b.acquire_vs_set(&mut report),
            "confirm" => b.confirm_phases(&mut report),
            "release" => b.release_phase(&mut report),
            "cycle" => b.client_cycle(&mut report),
            "memory" => b.memory(&mut report),
            "expiry" => b.expiry(&mut report),
            "handoff" => b.handoff(&mut report),
            "semaphore" => b.semaphore(&mut report),
            _ => b.watch(&mut report),
        }
    }

    let header = format!(
        "{version}, {cores} cores ({cpu}); medians of {} runs{}; {:.0} s",
        args.plan.reps,
        if args.quick { " (--quick)" } else { "" },
        started.elapsed().as_secs_f64()
    );
    let md = report.markdown(&header);
    println!("\n{md}");
    for path in [&args.markdown, &args.plot] {
        if let Some(dir) = std::path::Path::new(path).parent() {
            let _ = std::fs::create_dir_all(dir);
        }
    }
    match std::fs::write(&args.markdown, &md) {
        Ok(()) => println!("tables written to {}", args.markdown),
        Err(e) => eprintln!("bench: writing {}: {e}", args.markdown),
    }
    match plot::ratios(&args.plot, &report.ratios(), &header) {
        Ok(()) => println!("plot written to {}", args.plot),
        Err(e) => eprintln!("bench: plot {}: {e}", args.plot),
    }
}

// ---- measurements ----------------------------------------------------------------------------

struct Bench<'a> {
    server: &'a Server,
    plan: Plan,
    con: redis::Connection,
    release_sha: String,
    extend_sha: String,
}

/// One side of a client-cycle run: cycles per second and CPU per cycle.
struct CycleCost {
    rate: f64,
    client_us: f64,
    server_us: f64,
}

/// CPU time of the calling thread, in seconds.
fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Key `i` as redis-benchmark's `__rand_int__` spells it (12 digits).
fn key(prefix: &str, i: usize) -> String {
    format!("{prefix}:{i:012}")
}

impl<'a> Bench<'a> {
    fn new(server: &'a Server, plan: Plan) -> Self {
        let mut con = server.conn();
        let release_sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(RELEASE_LUA)
            .query(&mut con)
            .expect("SCRIPT LOAD");
        let extend_sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(EXTEND_LUA)
            .query(&mut con)
            .expect("SCRIPT LOAD");
        Self {
            server,
            plan,
            con,
            release_sha,
            extend_sha,
        }
    }

    fn info_section(&mut self, section: &str) -> HashMap<String, String> {
        let text: String = redis::cmd("INFO")
            .arg(section)
            .query(&mut self.con)
            .expect("INFO");
        text.lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect()
    }

    fn info(&mut self, section: &str, field: &str) -> Option<String> {
        self.info_section(section).remove(field)
    }

    fn info_f64(&mut self, section: &str, field: &str) -> f64 {
        self.info(section, field)
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    }

    fn cmd(&mut self, args: &[&str]) -> Value {
        let mut c = redis::cmd(args[0]);
        for a in &args[1..] {
            c.arg(*a);
        }
        c.query(&mut self.con)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    fn flush(&mut self) {
        self.cmd(&["FLUSHALL", "SYNC"]);
    }

    fn reset_stats(&mut self) {
        self.cmd(&["CONFIG", "RESETSTAT"]);
    }

    fn dbsize(&mut self) -> usize {
        redis::cmd("DBSIZE").query(&mut self.con).unwrap_or(0)
    }

    /// `(calls, usec_per_call)` of one command from `INFO commandstats`.
    fn cmdstat(&mut self, name: &str) -> (u64, f64) {
        let stats = self.info_section("commandstats");
        let Some(line) = stats.get(&format!("cmdstat_{name}")) else {
            return (0, f64::NAN);
        };
        let fields: HashMap<&str, &str> =
            line.split(',').filter_map(|f| f.split_once('=')).collect();
        let calls = fields
            .get("calls")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let per = fields
            .get("usec_per_call")
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN);
        (calls, per)
    }

    /// Runs redis-benchmark (-P 64, 50 clients) and returns requests per second.
    fn redis_benchmark(&self, keyspace: usize, args: &[&str]) -> f64 {
        let out = Command::new("redis-benchmark")
            .args(["-h", "127.0.0.1", "-p", &self.server.port().to_string()])
            .args(["-P", "64", "-c", "50", "-n", &self.plan.bench_n.to_string()])
            .args(["-r", &keyspace.to_string(), "--csv"])
            .args(args)
            .output()
            .expect("run redis-benchmark (apt-get install redis-tools)");
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .nth(1)
            .and_then(|l| l.split(',').nth(1))
            .and_then(|v| v.trim_matches('"').parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "redis-benchmark {args:?} gave no figure: {text}{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })
    }

    /// One redis-benchmark phase: throughput and the command's server time per call.
    fn bench_phase(&mut self, stat: &str, keyspace: usize, args: &[&str]) -> (f64, f64) {
        self.reset_stats();
        let rps = self.redis_benchmark(keyspace, args);
        let (_, usec) = self.cmdstat(stat);
        (usec, rps)
    }

    /// Sends `n` commands made by `make(i)` in pipelines of `batch`, from one connection.
    fn pipeline(&mut self, n: usize, batch: usize, make: impl Fn(usize) -> redis::Cmd) {
        let mut i = 0;
        while i < n {
            let mut p = redis::pipe();
            for j in i..(i + batch).min(n) {
                p.add_command(make(j)).ignore();
            }
            p.query::<()>(&mut self.con).expect("pipeline");
            i += batch;
        }
    }

    fn populate_locks(&mut self, prefix: &str, n: usize, ttl_ms: i64, lease: Option<&str>) {
        self.pipeline(n, 1000, |i| {
            let mut c = redis::cmd("PYLOCK.ACQUIRE");
            c.arg(key(prefix, i)).arg(ttl_ms);
            if let Some(l) = lease {
                c.arg("LEASE").arg(l);
            }
            c
        });
    }

    fn populate_strings(&mut self, prefix: &str, n: usize, ttl_ms: i64, value: Option<&str>) {
        self.pipeline(n, 1000, |i| {
            let mut c = redis::cmd("SET");
            let v = match value {
                Some(v) => v.to_string(),
                None => uuid::Uuid::new_v4().to_string(),
            };
            c.arg(key(prefix, i)).arg(v).arg("PX").arg(ttl_ms);
            c
        });
    }

    // -- ACQUIRE vs SET NX PX --

    fn acquire_vs_set(&mut self, r: &mut Report) {
        println!("== ACQUIRE vs SET NX PX (redis-benchmark -P 64, random keys)");
        let ks = self.plan.acquire_keyspace;
        let (mut a, mut s) = (Vec::new(), Vec::new());
        for rep in 0..self.plan.reps {
            let run_a = |b: &mut Self| {
                b.flush();
                b.bench_phase(
                    "pylock.acquire",
                    ks,
                    &["PYLOCK.ACQUIRE", "key:__rand_int__", "60000"],
                )
            };
            let run_s = |b: &mut Self| {
                b.flush();
                b.bench_phase(
                    "set",
                    ks,
                    &["SET", "key:__rand_int__", LEASE, "NX", "PX", "60000"],
                )
            };
            // Alternate the order so neither side always runs on a warmer (or busier) machine.
            let (x, y) = if rep % 2 == 0 {
                let x = run_a(self);
                (x, run_s(self))
            } else {
                let y = run_s(self);
                (run_a(self), y)
            };
            println!(
                "  run {}: ACQUIRE {:.2} µs {:.0}/s | SET NX PX {:.2} µs {:.0}/s",
                rep + 1,
                x.0,
                x.1,
                y.0,
                y.1
            );
            a.push(x);
            s.push(y);
        }
        r.add_time_pair(
            "ACQUIRE",
            "SET key uuid NX PX",
            &a,
            &s,
            Some(Target::AtMost(1.1)),
        );
        r.add_rps_pair(
            "ACQUIRE",
            "SET key uuid NX PX",
            &a,
            &s,
            Some(Target::AtLeast(0.9)),
        );
        self.flush();
    }

    // -- CONFIRM EXTEND vs EVALSHA pexpire, CONFIRM vs GET --

    fn confirm_phases(&mut self, r: &mut Report) {
        println!(
            "== CONFIRM EXTEND vs EVALSHA compare-and-pexpire, CONFIRM vs GET ({} held locks, redis-benchmark -P 64)",
            self.plan.held
        );
        let held = self.plan.held;
        self.flush();
        self.populate_locks("lk", held, 3_600_000, Some(LEASE));
        self.populate_strings("st", held, 3_600_000, Some(LEASE));
        let ext_sha = self.extend_sha.clone();
        let (mut ce, mut le, mut c, mut g, mut inner) = (vec![], vec![], vec![], vec![], vec![]);
        for rep in 0..self.plan.reps {
            let x = self.bench_phase(
                "pylock.confirm",
                held,
                &[
                    "PYLOCK.CONFIRM",
                    "lk:__rand_int__",
                    LEASE,
                    "EXTEND",
                    "3600000",
                ],
            );
            let y = self.bench_phase(
                "evalsha",
                held,
                &[
                    "EVALSHA",
                    &ext_sha,
                    "1",
                    "st:__rand_int__",
                    LEASE,
                    "3600000",
                ],
            );
            let nested = self.cmdstat("get").1 + self.cmdstat("pexpire").1;
            let z = self.bench_phase(
                "pylock.confirm",
                held,
                &["PYLOCK.CONFIRM", "lk:__rand_int__", LEASE],
            );
            let w = self.bench_phase("get", held, &["GET", "st:__rand_int__"]);
            println!(
                "  run {}: CONFIRM EXTEND {:.2} µs {:.0}/s | EVALSHA extend {:.2} µs (inner GET+PEXPIRE {:.2}) {:.0}/s | CONFIRM {:.2} µs {:.0}/s | GET {:.2} µs {:.0}/s",
                rep + 1, x.0, x.1, y.0, nested, y.1, z.0, z.1, w.0, w.1
            );
            ce.push(x);
            le.push(y);
            inner.push(nested);
            c.push(z);
            g.push(w);
        }
        let n = self.dbsize();
        assert_eq!(n, 2 * held, "every lock and key must still be there");
        r.add_time_pair(
            "CONFIRM … EXTEND",
            "EVALSHA compare-and-pexpire",
            &ce,
            &le,
            Some(Target::AtMost(0.5)),
        );
        r.notes.push(format!(
            "EVALSHA compare-and-pexpire: its inner GET + PEXPIRE take {:.2} µs of its {:.2} µs \
             (Redis 7.0 times a script's nested commands inside the script's own call).",
            median(inner),
            median(le.iter().map(|x| x.0).collect())
        ));
        r.add_rps_pair(
            "CONFIRM … EXTEND",
            "EVALSHA compare-and-pexpire",
            &ce,
            &le,
            None,
        );
        r.add_time_pair("CONFIRM", "GET", &c, &g, Some(Target::AtMost(1.2)));
        r.add_rps_pair("CONFIRM", "GET", &c, &g, None);
        self.flush();
    }

    // -- RELEASE vs EVALSHA compare-and-delete --

    /// Releases every key of `prefix` once, from `threads` connections pipelining 64 each.
    /// Returns releases per second, checking that every one succeeded.
    fn drive_release(&self, prefix: &str, lua: bool) -> f64 {
        let held = self.plan.held;
        let threads = self.plan.threads;
        let sha = self.release_sha.clone();
        let start = Instant::now();
        let released: usize = thread::scope(|sc| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let mut con = self.server.conn();
                    let sha = sha.clone();
                    sc.spawn(move || {
                        let mut ok = 0;
                        let range: Vec<usize> = (t..held).step_by(threads).collect();
                        for chunk in range.chunks(64) {
                            let mut p = redis::pipe();
                            for &i in chunk {
                                let k = key(prefix, i);
                                if lua {
                                    p.cmd("EVALSHA").arg(&sha).arg(1).arg(k).arg(LEASE);
                                } else {
                                    p.cmd("PYLOCK.RELEASE").arg(k).arg(LEASE);
                                }
                            }
                            let out: Vec<i64> = p.query(&mut con).expect("release pipeline");
                            ok += out.iter().filter(|v| **v == 1).count();
                        }
                        ok
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
        });
        let rps = held as f64 / start.elapsed().as_secs_f64();
        assert_eq!(released, held, "every release must succeed");
        rps
    }

    fn release_phase(&mut self, r: &mut Report) {
        println!(
            "== RELEASE vs EVALSHA compare-and-delete ({} locks released once each, {} connections pipelining 64)",
            self.plan.held, self.plan.threads
        );
        let held = self.plan.held;
        let (mut rel, mut lua, mut inner) = (vec![], vec![], vec![]);
        for rep in 0..self.plan.reps {
            self.flush();
            self.populate_locks("lk", held, 3_600_000, Some(LEASE));
            self.populate_strings("st", held, 3_600_000, Some(LEASE));
            self.reset_stats();
            let (x, y) = if rep % 2 == 0 {
                let x = self.drive_release("lk", false);
                (x, self.drive_release("st", true))
            } else {
                let y = self.drive_release("st", true);
                (self.drive_release("lk", false), y)
            };
            let (_, rel_us) = self.cmdstat("pylock.release");
            let (_, lua_us) = self.cmdstat("evalsha");
            let nested = self.cmdstat("get").1 + self.cmdstat("del").1;
            println!(
                "  run {}: RELEASE {rel_us:.2} µs {x:.0}/s | EVALSHA release {lua_us:.2} µs (inner GET+DEL {nested:.2}) {y:.0}/s",
                rep + 1
            );
            rel.push((rel_us, x));
            lua.push((lua_us, y));
            inner.push(nested);
            assert_eq!(self.dbsize(), 0);
        }
        r.add_time_pair(
            "RELEASE",
            "EVALSHA compare-and-delete",
            &rel,
            &lua,
            Some(Target::AtMost(0.5)),
        );
        r.notes.push(format!(
            "EVALSHA compare-and-delete: its inner GET + DEL take {:.2} µs of its {:.2} µs.",
            median(inner),
            median(lua.iter().map(|x| x.0).collect())
        ));
        r.add_rps_pair(
            "RELEASE (driver)",
            "EVALSHA compare-and-delete (driver)",
            &rel,
            &lua,
            None,
        );
    }

    // -- full client cycle --

    /// One side of the client cycle for `plan.cycle_secs`: acquire, (extend,) release, from
    /// `plan.threads` threads with one connection each. The client's CPU is each thread's own
    /// (`CLOCK_THREAD_CPUTIME_ID`: the client library, its reply parsing and the socket
    /// calls, not the waiting); the server's is `used_cpu_sys + used_cpu_user` over the same
    /// span (its idle cron included: a few µs per second).
    fn cycles(&mut self, pylocks_client: bool, with_extend: bool) -> CycleCost {
        let threads = self.plan.threads;
        let dur = Duration::from_secs_f64(self.plan.cycle_secs);
        let factory = pylocks::LockFactory::builder("cycle", Duration::from_secs(60))
            .arity(1)
            .build()
            .expect("factory");
        let release = redis::Script::new(RELEASE_LUA);
        let extend = redis::Script::new(EXTEND_LUA);
        let conns: Vec<_> = (0..threads).map(|_| self.server.conn()).collect();
        let server_before = self.cpu_seconds();
        let start = Instant::now();
        let (total, client_cpu): (u64, f64) = thread::scope(|sc| {
            let handles: Vec<_> = conns
                .into_iter()
                .enumerate()
                .map(|(t, mut con)| {
                    let (factory, release, extend) = (&factory, &release, &extend);
                    sc.spawn(move || {
                        let cpu_before = thread_cpu_seconds();
                        let mut n = 0u64;
                        while start.elapsed() < dur {
                            let part = format!("{t}:{}", n % 1024);
                            if pylocks_client {
                                let mut h = factory.acquire(&mut con, [&part]).expect("acquire");
                                if with_extend {
                                    h.extend(&mut con, Duration::from_secs(60)).expect("extend");
                                }
                                h.release(&mut con).expect("release");
                            } else {
                                let k = format!("plain:{part}");
                                let id = uuid::Uuid::new_v4().to_string();
                                let ok: Option<String> = redis::cmd("SET")
                                    .arg(&k)
                                    .arg(&id)
                                    .arg("NX")
                                    .arg("PX")
                                    .arg(60_000)
                                    .query(&mut con)
                                    .expect("SET NX PX");
                                assert!(ok.is_some(), "key {k} was held");
                                if with_extend {
                                    let e: i64 = extend
                                        .key(&k)
                                        .arg(&id)
                                        .arg(60_000)
                                        .invoke(&mut con)
                                        .expect("extend");
                                    assert_eq!(e, 1);
                                }
                                let d: i64 =
                                    release.key(&k).arg(&id).invoke(&mut con).expect("release");
                                assert_eq!(d, 1);
                            }
                            n += 1;
                        }
                        (n, thread_cpu_seconds() - cpu_before)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or((0, 0.0)))
                .fold((0, 0.0), |(n, c), (m, d)| (n + m, c + d))
        });
        let secs = start.elapsed().as_secs_f64();
        let server_cpu = self.cpu_seconds() - server_before;
        let n = total.max(1) as f64;
        CycleCost {
            rate: total as f64 / secs,
            client_us: client_cpu * 1e6 / n,
            server_us: server_cpu * 1e6 / n,
        }
    }

    fn client_cycle(&mut self, r: &mut Report) {
        println!(
            "== full client cycle: acquire, (extend,) release ({} threads, one connection each, {} s per side)",
            self.plan.threads, self.plan.cycle_secs
        );
        for with_extend in [true, false] {
            let what = if with_extend {
                "acquire, extend, release"
            } else {
                "acquire, release"
            };
            let base = if with_extend {
                "redis-rs: SET NX PX, EVALSHA pexpire, EVALSHA del"
            } else {
                "redis-rs: SET NX PX, EVALSHA del"
            };
            self.flush();
            let (mut p, mut l) = (vec![], vec![]);
            for rep in 0..self.plan.reps {
                let (x, y) = if rep % 2 == 0 {
                    let x = self.cycles(true, with_extend);
                    (x, self.cycles(false, with_extend))
                } else {
                    let y = self.cycles(false, with_extend);
                    (self.cycles(true, with_extend), y)
                };
                println!(
                    "  run {} ({what}): pylocks {:.0} cycles/s, client {:.1} µs CPU, server {:.1} µs CPU | \
                     redis-rs + Lua {:.0} cycles/s, client {:.1} µs CPU, server {:.1} µs CPU",
                    rep + 1,
                    x.rate,
                    x.client_us,
                    x.server_us,
                    y.rate,
                    y.client_us,
                    y.server_us
                );
                p.push(x);
                l.push(y);
            }
            let med = |v: &[CycleCost], f: fn(&CycleCost) -> f64| median(v.iter().map(f).collect());
            for (label, unit, f) in [
                (
                    "",
                    "cycles/s",
                    (|c: &CycleCost| c.rate) as fn(&CycleCost) -> f64,
                ),
                (" (client CPU)", "client CPU µs/cycle", |c: &CycleCost| {
                    c.client_us
                }),
                (" (server CPU)", "server CPU µs/cycle", |c: &CycleCost| {
                    c.server_us
                }),
            ] {
                r.rows.push(Row {
                    section: Section::Cycle,
                    ours: format!("pylocks: {what}{label}"),
                    base: base.into(),
                    ours_v: med(&p, f),
                    base_v: med(&l, f),
                    unit,
                    target: None,
                });
            }
        }
        self.flush();
    }

    // -- memory per held lock --

    fn settle_used_memory(&mut self) -> f64 {
        thread::sleep(Duration::from_millis(200));
        self.info_f64("memory", "used_memory")
    }

    fn memory(&mut self, r: &mut Report) {
        let n = self.plan.population;
        println!("== memory per key at {n} keys (used_memory delta / DBSIZE)");
        let ttl = 3_600_000;
        let (mut srv, mut own, mut plain) = (vec![], vec![], vec![]);
        for rep in 0..self.plan.reps.min(3) {
            let measure = |b: &mut Self, what: usize| {
                b.flush();
                let before = b.settle_used_memory();
                match what {
                    0 => b.populate_locks("mem", n, ttl, None),
                    1 => {
                        // Client-made UUIDs as LEASE: the id arrives as 36 bytes of text.
                        b.pipeline(n, 1000, |i| {
                            let mut c = redis::cmd("PYLOCK.ACQUIRE");
                            c.arg(key("mem", i))
                                .arg(ttl)
                                .arg("LEASE")
                                .arg(uuid::Uuid::new_v4().to_string());
                            c
                        })
                    }
                    _ => b.populate_strings("mem", n, ttl, None),
                }
                let after = b.settle_used_memory();
                let keys = b.dbsize();
                assert_eq!(keys, n, "exactly {n} keys");
                (after - before) / keys as f64
            };
            let x = measure(self, 0);
            let y = measure(self, 1);
            let z = measure(self, 2);
            println!(
                "  run {}: ACQUIRE {x:.1} B | ACQUIRE LEASE uuid {y:.1} B | SET uuid PX {z:.1} B",
                rep + 1
            );
            srv.push(x);
            own.push(y);
            plain.push(z);
        }
        let plain = median(plain);
        r.rows.push(Row {
            section: Section::Memory,
            ours: "held lock (server-made id)".into(),
            base: "SET key uuid PX".into(),
            ours_v: median(srv),
            base_v: plain,
            unit: "bytes/key",
            target: Some(Target::AtMost(1.2)),
        });
        r.rows.push(Row {
            section: Section::Memory,
            ours: "held lock (LEASE uuid text)".into(),
            base: "SET key uuid PX".into(),
            ours_v: median(own),
            base_v: plain,
            unit: "bytes/key",
            target: None,
        });
        self.flush();
    }

    // -- semaphores: cost against n --

    /// ACQUIRE + RELEASE pairs (pipelines of 64 grants, then their 64 releases) and CONFIRM
    /// (plain and EXTEND) of random live leases, on one semaphore key holding `live` leases
    /// (`LIMIT 100000`) or on plain locks; server time per call from `INFO commandstats`.
    /// Returns `[acquire, release, confirm, extend]` as `(µs/call, calls/s)`.
    fn semaphore_side(&mut self, live: usize, sem: bool, ops: usize) -> [(f64, f64); 4] {
        let ttl = 3_600_000i64;
        let target = |i: usize| if sem { "sem".to_string() } else { key("pl", i) };
        let limit = |c: &mut redis::Cmd| {
            if sem {
                c.arg("LIMIT").arg(100_000);
            }
        };
        self.reset_stats();
        let started = Instant::now();
        let mut i = 0;
        while i < ops {
            let batch = (i..(i + 64).min(ops)).collect::<Vec<_>>();
            let mut p = redis::pipe();
            for j in &batch {
                let mut c = redis::cmd("PYLOCK.ACQUIRE");
                c.arg(target(*j)).arg(ttl).arg("LEASE").arg(format!("x{j}"));
                limit(&mut c);
                p.add_command(c).ignore();
            }
            for j in &batch {
                p.cmd("PYLOCK.RELEASE")
                    .arg(target(*j))
                    .arg(format!("x{j}"))
                    .ignore();
            }
            p.query::<()>(&mut self.con)
                .expect("acquire/release pipeline");
            i += 64;
        }
        let pairs_s = started.elapsed().as_secs_f64();
        let acq = self.cmdstat("pylock.acquire");
        let rel = self.cmdstat("pylock.release");
        let mut out = [
            (acq.1, ops as f64 / pairs_s),
            (rel.1, ops as f64 / pairs_s),
            (0.0, 0.0),
            (0.0, 0.0),
        ];
        for (slot, extend) in [(2, false), (3, true)] {
            self.reset_stats();
            let started = Instant::now();
            self.pipeline(ops, 64, |j| {
                let h = (j * 7919) % live;
                let mut c = redis::cmd("PYLOCK.CONFIRM");
                if sem {
                    c.arg("sem").arg(format!("h{h}"));
                } else {
                    c.arg(key("ph", h)).arg(LEASE);
                }
                if extend {
                    c.arg("EXTEND").arg(ttl);
                }
                c
            });
            let (_, us) = self.cmdstat("pylock.confirm");
            out[slot] = (us, ops as f64 / started.elapsed().as_secs_f64());
        }
        out
    }

    fn semaphore(&mut self, r: &mut Report) {
        let ops = if self.plan.reps <= 2 { 20_000 } else { 100_000 };
        let ttl = 3_600_000i64;
        for live in [1_000usize, 10_000] {
            println!("== semaphore with {live} live leases vs plain locks ({ops} calls per command, pipelines of 64)");
            self.flush();
            self.pipeline(live, 1000, |i| {
                let mut c = redis::cmd("PYLOCK.ACQUIRE");
                c.arg("sem")
                    .arg(ttl)
                    .arg("LEASE")
                    .arg(format!("h{i}"))
                    .arg("LIMIT")
                    .arg(100_000);
                c
            });
            self.populate_locks("ph", live, ttl, Some(LEASE));
            let (mut sem, mut plain) = (vec![], vec![]);
            for rep in 0..self.plan.reps {
                let (x, y) = if rep % 2 == 0 {
                    let x = self.semaphore_side(live, true, ops);
                    (x, self.semaphore_side(live, false, ops))
                } else {
                    let y = self.semaphore_side(live, false, ops);
                    (self.semaphore_side(live, true, ops), y)
                };
                println!(
                    "  run {}: semaphore ACQUIRE {:.2} RELEASE {:.2} CONFIRM {:.2} EXTEND {:.2} µs | lock {:.2} {:.2} {:.2} {:.2} µs",
                    rep + 1, x[0].0, x[1].0, x[2].0, x[3].0, y[0].0, y[1].0, y[2].0, y[3].0
                );
                sem.push(x);
                plain.push(y);
            }
            for (i, name) in ["ACQUIRE", "RELEASE", "CONFIRM", "CONFIRM … EXTEND"]
                .iter()
                .enumerate()
            {
                let a: Vec<(f64, f64)> = sem.iter().map(|x| x[i]).collect();
                let b: Vec<(f64, f64)> = plain.iter().map(|x| x[i]).collect();
                r.add_time_pair(
                    &format!("{name} on a semaphore of {live} leases"),
                    &format!("{name} on a plain lock"),
                    &a,
                    &b,
                    Some(Target::AtMost(2.0)),
                );
            }
        }
        // Memory: 10,000 leases with server-made ids on one key, against 10,000 plain locks.
        let n = 10_000;
        println!("== memory per extra semaphore lease ({n} leases) vs per plain lock ({n} keys)");
        let (mut per_lease, mut per_lock) = (vec![], vec![]);
        for _ in 0..self.plan.reps.min(3) {
            self.flush();
            let before = self.settle_used_memory();
            self.pipeline(n, 1000, |_| {
                let mut c = redis::cmd("PYLOCK.ACQUIRE");
                c.arg("sem").arg(ttl).arg("LIMIT").arg(100_000);
                c
            });
            let after = self.settle_used_memory();
            per_lease.push((after - before) / n as f64);
            self.flush();
            let before = self.settle_used_memory();
            self.populate_locks("mem", n, ttl, None);
            let after = self.settle_used_memory();
            per_lock.push((after - before) / n as f64);
            println!(
                "  semaphore {:.1} B/lease | plain lock {:.1} B/key",
                per_lease.last().unwrap(),
                per_lock.last().unwrap()
            );
        }
        r.rows.push(Row {
            section: Section::Memory,
            ours: format!("semaphore, per lease ({n} leases, server-made ids)"),
            base: "plain lock, per key (server-made id)".into(),
            ours_v: median(per_lease),
            base_v: median(per_lock),
            unit: "bytes",
            target: Some(Target::AtMost(1.0)),
        });
        self.flush();
    }

    // -- expiry cost --

    fn cpu_seconds(&mut self) -> f64 {
        let cpu = self.info_section("cpu");
        let get = |k: &str| {
            cpu.get(k)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(f64::NAN)
        };
        get("used_cpu_sys") + get("used_cpu_user")
    }

    /// Fills `n` keys that all expire at one instant, then returns the server CPU seconds and
    /// wall seconds from that instant until the last one is gone.
    fn expire_run(&mut self, locks: bool) -> (f64, f64) {
        let n = self.plan.population;
        self.flush();
        // All keys share one absolute deadline, far enough out for the fill to finish.
        let fill_ms = (n as i64 / 100).max(500) + 1000;
        let deadline = unix_ms() + fill_ms;
        if locks {
            self.pipeline(n, 1000, |i| {
                let mut c = redis::cmd("PYLOCK.ACQUIRE");
                c.arg(key("exp", i)).arg((deadline - unix_ms()).max(1));
                c
            });
        } else {
            self.pipeline(n, 1000, |i| {
                let mut c = redis::cmd("SET");
                c.arg(key("exp", i))
                    .arg(uuid::Uuid::new_v4().to_string())
                    .arg("PXAT")
                    .arg(deadline);
                c
            });
        }
        let filled = self.dbsize();
        let wait = deadline - unix_ms();
        assert!(
            wait > 0 && filled == n,
            "fill too slow ({filled} of {n} keys, {wait} ms before the deadline)"
        );
        thread::sleep(Duration::from_millis(wait as u64));
        let cpu0 = self.cpu_seconds();
        let t0 = Instant::now();
        while self.dbsize() > 0 {
            assert!(t0.elapsed() < Duration::from_secs(120), "expiry too slow");
            thread::sleep(Duration::from_millis(20));
        }
        (self.cpu_seconds() - cpu0, t0.elapsed().as_secs_f64())
    }

    fn expiry(&mut self, r: &mut Report) {
        let n = self.plan.population;
        println!("== expiry: server CPU while {n} keys expire (active expiry, hz 10)");
        let (mut l, mut s, mut lw, mut sw) = (vec![], vec![], vec![], vec![]);
        for rep in 0..self.plan.reps.min(3) {
            let (x, y) = if rep % 2 == 0 {
                let x = self.expire_run(true);
                (x, self.expire_run(false))
            } else {
                let y = self.expire_run(false);
                (self.expire_run(true), y)
            };
            println!(
                "  run {}: locks {:.2} s CPU in {:.2} s | SET PX keys {:.2} s CPU in {:.2} s",
                rep + 1,
                x.0,
                x.1,
                y.0,
                y.1
            );
            l.push(x.0 * 1e6 / n as f64);
            s.push(y.0 * 1e6 / n as f64);
            lw.push(x.1);
            sw.push(y.1);
        }
        r.rows.push(Row {
            section: Section::Expiry,
            ours: format!("{n} leases expire"),
            base: format!("{n} SET PX keys expire"),
            ours_v: median(l),
            base_v: median(s),
            unit: "CPU µs/key",
            target: None,
        });
        r.notes.push(format!(
            "Expiry wall time (deadline to DBSIZE 0): leases {:.2} s, plain keys {:.2} s.",
            median(lw),
            median(sw)
        ));
    }
}

impl Bench<'_> {
    // -- hand-off against BLPOP/RPUSH --

    /// Two clients pass one token back and forth `passes` times: each loops "wait for the
    /// token, then give it back". With locks the token is the lock (`ACQUIRE … BLOCK`, then
    /// `RELEASE`); with lists it is one element (`BLPOP`, then `RPUSH`). Every pass is one
    /// hand-off from a client to a blocked one. Returns (server CPU µs, wall µs) per pass.
    fn pass_token(&mut self, locks: bool, passes: usize, block_ms: i64) -> (f64, f64) {
        self.flush();
        let per_client = passes / 2;
        if !locks {
            let _: i64 = redis::cmd("RPUSH")
                .arg("handoff:list")
                .arg("token")
                .query(&mut self.con)
                .expect("RPUSH");
        }
        let cpu0 = self.cpu_seconds();
        let t0 = Instant::now();
        thread::scope(|s| {
            for c in 0..2 {
                let server = self.server;
                s.spawn(move || {
                    let mut con = server.conn();
                    let lease = format!("handoff-client-{c}");
                    let block_s = block_ms as f64 / 1000.0;
                    for _ in 0..per_client {
                        if locks {
                            let got: Value = redis::cmd("PYLOCK.ACQUIRE")
                                .arg("handoff:lock")
                                .arg(60_000)
                                .arg("LEASE")
                                .arg(&lease)
                                .arg("BLOCK")
                                .arg(block_ms)
                                .query(&mut con)
                                .expect("ACQUIRE");
                            assert!(matches!(got, Value::Array(_)), "ACQUIRE timed out: {got:?}");
                            let released: i64 = redis::cmd("PYLOCK.RELEASE")
                                .arg("handoff:lock")
                                .arg(&lease)
                                .query(&mut con)
                                .expect("RELEASE");
                            assert_eq!(released, 1);
                        } else {
                            let got: Option<(String, String)> = redis::cmd("BLPOP")
                                .arg("handoff:list")
                                .arg(block_s)
                                .query(&mut con)
                                .expect("BLPOP");
                            assert!(got.is_some(), "BLPOP timed out");
                            let _: i64 = redis::cmd("RPUSH")
                                .arg("handoff:list")
                                .arg("token")
                                .query(&mut con)
                                .expect("RPUSH");
                        }
                    }
                });
            }
        });
        let wall = t0.elapsed().as_secs_f64();
        let cpu = self.cpu_seconds() - cpu0;
        let n = (per_client * 2) as f64;
        (cpu * 1e6 / n, wall * 1e6 / n)
    }

    fn handoff(&mut self, r: &mut Report) {
        let passes = if self.plan.reps <= 2 { 20_000 } else { 60_000 };
        for block_ms in [0i64, 10_000] {
            println!(
                "== hand-off: 2 clients, {passes} passes per round, BLOCK/BLPOP timeout {}",
                if block_ms == 0 {
                    "0 (forever)".to_string()
                } else {
                    format!("{block_ms} ms")
                }
            );
            let (mut lc, mut lw, mut bc, mut bw) = (vec![], vec![], vec![], vec![]);
            for rep in 0..self.plan.reps {
                // Interleaved, the order alternating, so drift hits both sides alike.
                let (l, b) = if rep % 2 == 0 {
                    let l = self.pass_token(true, passes, block_ms);
                    (l, self.pass_token(false, passes, block_ms))
                } else {
                    let b = self.pass_token(false, passes, block_ms);
                    (self.pass_token(true, passes, block_ms), b)
                };
                println!(
                    "  round {}: lock {:.2} µs CPU, {:.2} µs wall | BLPOP {:.2} µs CPU, {:.2} µs wall | CPU {:.2}×, wall {:.2}×",
                    rep + 1,
                    l.0,
                    l.1,
                    b.0,
                    b.1,
                    l.0 / b.0,
                    l.1 / b.1
                );
                lc.push(l.0);
                lw.push(l.1);
                bc.push(b.0);
                bw.push(b.1);
            }
            for (ours, base, unit) in [(lc, bc, "CPU µs/pass"), (lw, bw, "µs/pass")] {
                r.rows.push(Row {
                    section: Section::HandOff,
                    ours: format!("ACQUIRE … BLOCK {block_ms} + RELEASE"),
                    base: format!("BLPOP {block_ms} + RPUSH"),
                    ours_v: median(ours),
                    base_v: median(base),
                    unit,
                    target: Some(Target::AtMost(1.0)),
                });
            }
        }
    }
}

impl Bench<'_> {
    // -- how fast a worker learns its lease ended: PYLOCK.WATCH against keyspace notifications --

    /// One lease ends `rounds` times, each a new key; a client blocked in `PYLOCK.WATCH` and a
    /// client subscribed to the key's keyspace notifications both learn of it. `expire`: the
    /// lease runs out (TTL `ttl_ms`) instead of being released by another client. Returns the
    /// latencies (ms) from the end (the RELEASE sent, or the deadline) to each one's answer.
    fn watch_round(&mut self, rounds: usize, expire: bool, ttl_ms: i64) -> (Vec<f64>, Vec<f64>) {
        self.flush();
        self.cmd(&["CONFIG", "SET", "notify-keyspace-events", "Kdx"]);
        let (to_watcher, jobs) = std::sync::mpsc::channel::<(String, String)>();
        let (answers, from_watcher) = std::sync::mpsc::channel::<(String, Instant)>();
        let (events_tx, events) = std::sync::mpsc::channel::<(String, String, Instant)>();
        let server: &Server = self.server;
        thread::scope(|scope| {
            let watcher = scope.spawn(move || {
                let mut con = server.conn();
                for (key, id) in jobs {
                    let v: Value = redis::cmd("PYLOCK.WATCH")
                        .arg(&key)
                        .arg(&id)
                        .arg("TIMEOUT")
                        .arg(10_000)
                        .query(&mut con)
                        .expect("WATCH");
                    let at = Instant::now();
                    let reason = match v {
                        Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
                        other => format!("{other:?}"),
                    };
                    if answers.send((reason, at)).is_err() {
                        break;
                    }
                }
            });
            let subscriber = scope.spawn(move || {
                let mut con = server.conn();
                let mut ps = con.as_pubsub();
                ps.psubscribe("__keyspace@0__:watch:*").expect("PSUBSCRIBE");
                ps.set_read_timeout(Some(Duration::from_secs(15)))
                    .expect("timeout");
                while let Ok(msg) = ps.get_message() {
                    let at = Instant::now();
                    let channel = msg.get_channel_name().to_string();
                    let event: String = msg.get_payload().unwrap_or_default();
                    if event == "stop" || events_tx.send((channel, event, at)).is_err() {
                        break;
                    }
                }
            });
            thread::sleep(Duration::from_millis(50)); // the subscription is in place
            let (mut watch_ms, mut event_ms) = (Vec::new(), Vec::new());
            let want = if expire {
                ("expired", "expired")
            } else {
                ("released", "pylock.release")
            };
            for i in 0..rounds {
                let key = key("watch", i);
                let id = format!("w{i}");
                let t_acquire = Instant::now();
                let ttl = if expire { ttl_ms } else { 60_000 };
                let v = self.cmd(&["PYLOCK.ACQUIRE", &key, &ttl.to_string(), "LEASE", &id]);
                assert!(matches!(v, Value::Array(_)), "ACQUIRE: {v:?}");
                to_watcher.send((key.clone(), id.clone())).expect("watcher");
                // Wait until the watcher is blocked, so the latency is the notification's alone.
                while self.info_f64("pylock", "pylock_watching") < 1.0 {
                    thread::sleep(Duration::from_micros(200));
                }
                let t_end = if expire {
                    t_acquire + Duration::from_millis(ttl_ms as u64)
                } else {
                    let t = Instant::now();
                    self.cmd(&["PYLOCK.RELEASE", &key, &id]);
                    t
                };
                let (reason, at) = from_watcher
                    .recv_timeout(Duration::from_secs(15))
                    .expect("watch answer");
                assert_eq!(reason, want.0, "watch reason");
                watch_ms.push(at.saturating_duration_since(t_end).as_secs_f64() * 1e3);
                let channel = format!("__keyspace@0__:{key}");
                loop {
                    let (ch, ev, at) = events.recv_timeout(Duration::from_secs(15)).expect("event");
                    if ch == channel && ev == want.1 {
                        event_ms.push(at.saturating_duration_since(t_end).as_secs_f64() * 1e3);
                        break;
                    }
                }
            }
            drop(to_watcher);
            let _ = watcher.join();
            self.cmd(&["PUBLISH", "__keyspace@0__:watch:end", "stop"]);
            let _ = subscriber.join();
            self.cmd(&["CONFIG", "SET", "notify-keyspace-events", ""]);
            (watch_ms, event_ms)
        })
    }

    fn watch(&mut self, r: &mut Report) {
        let quick = self.plan.reps <= 2;
        let (releases, expiries, ttl) = if quick { (100, 20, 30) } else { (500, 100, 30) };
        for expire in [false, true] {
            let rounds = if expire { expiries } else { releases };
            println!(
                "== watch: {rounds} leases {}, WATCH against a keyspace-notification subscriber",
                if expire {
                    "expiring (TTL 30 ms)"
                } else {
                    "released by another client"
                }
            );
            let (w, e) = self.watch_round(rounds, expire, ttl);
            let what = if expire { "expiry" } else { "RELEASE" };
            for (q, name) in [(0.5, "p50"), (0.99, "p99")] {
                let (wq, eq) = (quantile(&w, q), quantile(&e, q));
                println!("  {name}: WATCH {wq:.3} ms, keyspace notification {eq:.3} ms");
                r.rows.push(Row {
                    section: Section::Watch,
                    ours: format!("PYLOCK.WATCH answered after {what}, {name}"),
                    base: format!(
                        "keyspace notification ({}) after {what}, {name}",
                        if expire { "expired" } else { "pylock.release" }
                    ),
                    ours_v: wq,
                    base_v: eq,
                    unit: "ms",
                    target: None,
                });
            }
        }
    }
}

/// The `q` quantile of `v` (nearest rank).
fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    let i = ((s.len() as f64 * q).ceil() as usize).clamp(1, s.len()) - 1;
    s[i]
}

// ---- report ----------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    ServerTime,
    Throughput,
    Cycle,
    Memory,
    Expiry,
    HandOff,
    Watch,
}

impl Section {
    fn title(self) -> &'static str {
        match self {
            Section::ServerTime => "Server time per call (INFO commandstats usec_per_call)",
            Section::Throughput => "Pipelined throughput (redis-benchmark -P 64 -c 50; the RELEASE row: the Rust driver, one connection per thread, pipelines of 64)",
            Section::Cycle => "Full client cycle: cycles per second, and CPU per cycle (the client threads' own, the server's used_cpu_sys + used_cpu_user)",
            Section::Memory => "Memory per key (used_memory delta / DBSIZE)",
            Section::Expiry => "Expiry cost (server used_cpu_sys + used_cpu_user while all keys expire)",
            Section::HandOff => "Hand-off: two clients pass one lock (ACQUIRE … BLOCK, RELEASE) against two clients passing one list element (BLPOP, RPUSH)",
            Section::Watch => "Lease-end notification latency: a client in PYLOCK.WATCH against one subscribed to the key's keyspace notifications (time from the RELEASE sent, or the deadline, to the answer)",
        }
    }
}

/// A target on the ratio ours / baseline.
#[derive(Clone, Copy)]
pub enum Target {
    AtMost(f64),
    AtLeast(f64),
}

impl Target {
    fn met(self, ratio: f64) -> bool {
        match self {
            Target::AtMost(t) => ratio <= t,
            Target::AtLeast(t) => ratio >= t,
        }
    }
    fn text(self) -> String {
        match self {
            Target::AtMost(t) => format!("≤ {t:.2}×"),
            Target::AtLeast(t) => format!("≥ {t:.2}×"),
        }
    }
}

struct Row {
    section: Section,
    ours: String,
    base: String,
    ours_v: f64,
    base_v: f64,
    unit: &'static str,
    target: Option<Target>,
}

impl Row {
    fn ratio(&self) -> f64 {
        self.ours_v / self.base_v
    }
}

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
}

/// One bar of the plot.
pub struct Ratio {
    pub label: String,
    pub ratio: f64,
    pub target: Option<Target>,
}

impl Report {
    fn add_time_pair(
        &mut self,
        ours: &str,
        base: &str,
        a: &[(f64, f64)],
        b: &[(f64, f64)],
        target: Option<Target>,
    ) {
        self.rows.push(Row {
            section: Section::ServerTime,
            ours: ours.into(),
            base: base.into(),
            ours_v: median(a.iter().map(|x| x.0).collect()),
            base_v: median(b.iter().map(|x| x.0).collect()),
            unit: "µs/call",
            target,
        });
    }

    fn add_rps_pair(
        &mut self,
        ours: &str,
        base: &str,
        a: &[(f64, f64)],
        b: &[(f64, f64)],
        target: Option<Target>,
    ) {
        self.rows.push(Row {
            section: Section::Throughput,
            ours: ours.into(),
            base: base.into(),
            ours_v: median(a.iter().map(|x| x.1).collect()),
            base_v: median(b.iter().map(|x| x.1).collect()),
            unit: "ops/s",
            target,
        });
    }

    fn markdown(&self, header: &str) -> String {
        let mut out = format!("{header}\n");
        for section in [
            Section::ServerTime,
            Section::Throughput,
            Section::Cycle,
            Section::Memory,
            Section::Expiry,
            Section::HandOff,
            Section::Watch,
        ] {
            let rows: Vec<&Row> = self.rows.iter().filter(|r| r.section == section).collect();
            if rows.is_empty() {
                continue;
            }
            out += &format!("\n**{}**\n\n", section.title());
            out += "| pylock | value | baseline | value | ratio | target |\n";
            out += "| --- | --- | --- | --- | --- | --- |\n";
            for r in rows {
                let fmt = |v: f64| match r.unit {
                    "µs/call" => format!("{v:.2} µs"),
                    "CPU µs/key" => format!("{v:.2} µs CPU/key"),
                    "client CPU µs/cycle" | "server CPU µs/cycle" => {
                        format!("{v:.1} µs CPU/cycle")
                    }
                    "bytes/key" => format!("{v:.1} B"),
                    "CPU µs/pass" => format!("{v:.2} µs CPU/pass"),
                    "µs/pass" => format!("{v:.2} µs/pass"),
                    "ms" => format!("{v:.3} ms"),
                    _ => format!("{v:.0} {}", r.unit),
                };
                let target = match r.target {
                    Some(t) => format!(
                        "{} {}",
                        t.text(),
                        if t.met(r.ratio()) {
                            "met"
                        } else {
                            "**missed**"
                        }
                    ),
                    None => "–".into(),
                };
                out += &format!(
                    "| {} | {} | {} | {} | {:.2}× | {} |\n",
                    r.ours,
                    fmt(r.ours_v),
                    r.base,
                    fmt(r.base_v),
                    r.ratio(),
                    target
                );
            }
        }
        if !self.notes.is_empty() {
            out += "\n";
            for n in &self.notes {
                out += &format!("- {n}\n");
            }
        }
        out
    }

    fn ratios(&self) -> Vec<Ratio> {
        self.rows
            .iter()
            // Latencies of a different kind of thing, not a cost ratio: in the tables only.
            .filter(|r| r.section != Section::Watch)
            .map(|r| Ratio {
                label: match r.section {
                    Section::ServerTime => format!("{} time / {}", r.ours, r.base),
                    Section::Throughput => format!("{} ops/s / {}", r.ours, r.base),
                    Section::Cycle => format!(
                        "cycle {} / redis-rs + Lua",
                        r.ours.trim_start_matches("pylocks: ")
                    ),
                    Section::Memory => format!("memory: {} / {}", r.ours, r.base),
                    Section::Expiry => "expiry CPU: leases / plain keys".into(),
                    Section::HandOff => format!("hand-off {}: lock / BLPOP", r.unit),
                    Section::Watch => unreachable!("filtered out above"),
                },
                ratio: r.ratio(),
                target: r.target,
            })
            .collect()
    }
}
