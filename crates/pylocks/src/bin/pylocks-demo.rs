//! Runs the README's two worker patterns for real: one producer process and several worker
//! processes (this same binary, started with `worker`) around a task queue in Redis.
//!
//! The shared state is one counter per person, incremented by GET then SET: deliberately not
//! atomic, so only the lock keeps increments from being lost.
//!
//! - Pattern 1: the producer enqueues every task at once; the worker takes the person's lock
//!   inside the task. When the lock is already held it logs and fails the task, and puts it
//!   back on the queue for another try (up to `MAX_ATTEMPTS`; a task out of tries is recorded
//!   as failed, and its increment is expected to be missing).
//! - Pattern 2: the producer takes the person's lock before enqueuing (retrying while it is
//!   held) and passes the lease id with the task; the worker confirms the lease with
//!   `get_handle` before its read-modify-write, then releases. Some tasks get a short TTL and a
//!   worker delay longer than it: their lease has expired when they run, the worker refuses
//!   them (`NOTHELD`/`NOTOWNED`), and their increment (1000, where others add 1) is not applied.
//!
//! At the end the producer compares every counter with what its plan says it must be, prints
//! the comparison and exits 0 only if all are exact.

use std::collections::BTreeSet;
use std::process::{Child, Command, ExitCode};
use std::time::{Duration, Instant};

use pylocks::{Error, LockFactory};
use redis::Connection;

const USAGE: &str = "\
pylocks-demo: the two worker patterns, with worker processes around a Redis list

USAGE:
    pylocks-demo run [OPTIONS]       producer: spawns the workers, runs both patterns, checks totals
    pylocks-demo worker [OPTIONS]    one worker (started by `run`)

OPTIONS:
    --url URL          Redis with the pylock module [env REDIS_URL, default redis://127.0.0.1:6379/]
    --namespace NS     prefix of every key the demo uses [default pylocks_demo]; deleted at start
    --workers N        worker processes [default 3]
    --people K         people, i.e. counters and locks [default 4]
    --tasks M          increments per pattern; task t adds to person (t / 2) % K, so
                       tasks come in pairs for one person and workers contend [default 60]
    --expired E        pattern-2 tasks whose lease expires before they run [default 3]:
                       with s = M / E, task t is one of them when t % s == s / 2 (at most E)
    --short-ttl-ms MS  lease TTL of those tasks [default 100]
    --delay-ms MS      how long a worker waits before running them [default 300]
    --timeout-s S      give up (exit 1) after this long [default 60]
";

/// How many times a pattern-1 task is tried before it is recorded as failed.
const MAX_ATTEMPTS: u32 = 200;
/// A worker with nothing to do for this long assumes the producer is gone and exits.
const WORKER_IDLE_EXIT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone)]
struct Options {
    url: String,
    ns: String,
    workers: usize,
    people: u64,
    tasks: u64,
    expired: u64,
    short_ttl: Duration,
    delay: Duration,
    timeout: Duration,
    worker_id: usize,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        url: std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into()),
        ns: "pylocks_demo".into(),
        workers: 3,
        people: 4,
        tasks: 60,
        expired: 3,
        short_ttl: Duration::from_millis(100),
        delay: Duration::from_millis(300),
        timeout: Duration::from_secs(60),
        worker_id: 0,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{flag}: not a number: {value}"))
        };
        match flag.as_str() {
            "--url" => o.url = value.clone(),
            "--namespace" => o.ns = value.clone(),
            "--workers" => o.workers = num()? as usize,
            "--people" => o.people = num()?.max(1),
            "--tasks" => o.tasks = num()?,
            "--expired" => o.expired = num()?,
            "--short-ttl-ms" => o.short_ttl = Duration::from_millis(num()?),
            "--delay-ms" => o.delay = Duration::from_millis(num()?),
            "--timeout-s" => o.timeout = Duration::from_secs(num()?),
            "--id" => o.worker_id = num()? as usize,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(o)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, rest) = match args.split_first() {
        Some((c, rest)) => (c.as_str(), rest),
        None => ("--help", &[][..]),
    };
    let options = match command {
        "run" | "worker" => match parse(rest) {
            Ok(o) => o,
            Err(e) => {
                eprintln!("{e}\n\n{USAGE}");
                return ExitCode::from(2);
            }
        },
        _ => {
            print!("{USAGE}");
            return if command == "--help" || command == "-h" {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            };
        }
    };
    let outcome = if command == "run" {
        run(&options)
    } else {
        worker(&options)
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("pylocks-demo {command}: {e}");
            ExitCode::FAILURE
        }
    }
}

type AnyError = Box<dyn std::error::Error>;

fn connect(url: &str) -> Result<Connection, AnyError> {
    let con = redis::Client::open(url)?.get_connection_with_timeout(Duration::from_secs(5))?;
    con.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok(con)
}

/// The lock on one person, as in the original README: `<ns>:person:<id>`.
fn person_lock(o: &Options, ttl: Duration) -> Result<LockFactory, Error> {
    LockFactory::builder("person", ttl)
        .arity(1)
        .root_prefix(o.ns.clone())
        .build()
}

struct Keys {
    queue: String,
    results: String,
    contended: String,
}

impl Keys {
    fn new(ns: &str) -> Self {
        Keys {
            queue: format!("{ns}:queue"),
            results: format!("{ns}:results"),
            contended: format!("{ns}:p1:contended"),
        }
    }

    fn counter(ns: &str, pattern: u8, person: u64) -> String {
        format!("{ns}:p{pattern}:person:{person}")
    }
}

// ---------------------------------------------------------------------------------------------
// Worker

fn worker(o: &Options) -> Result<bool, AnyError> {
    let id = o.worker_id;
    let mut con = connect(&o.url)?;
    let keys = Keys::new(&o.ns);
    let locks = person_lock(o, Duration::from_secs(10))?;
    let mut idle_since = Instant::now();
    loop {
        let popped: Option<(String, String)> = redis::cmd("BLPOP")
            .arg(&keys.queue)
            .arg(1)
            .query(&mut con)?;
        let Some((_, task)) = popped else {
            if idle_since.elapsed() > WORKER_IDLE_EXIT {
                eprintln!("[worker {id}] idle for {WORKER_IDLE_EXIT:?}; exiting");
                return Ok(true);
            }
            continue;
        };
        idle_since = Instant::now();
        let fields: Vec<&str> = task.split(' ').collect();
        let result = match fields.as_slice() {
            ["stop"] => return Ok(true),
            ["p1", t, person, amount, attempt] => pattern1_task(
                o,
                &mut con,
                &keys,
                &locks,
                t,
                person.parse()?,
                amount.parse()?,
                attempt.parse()?,
            )?,
            ["p2", t, person, amount, lease, delay_ms] => {
                std::thread::sleep(Duration::from_millis(delay_ms.parse()?));
                pattern2_task(
                    o,
                    &mut con,
                    &locks,
                    t,
                    person.parse()?,
                    lease,
                    amount.parse()?,
                )
            }
            _ => {
                eprintln!("[worker {id}] ignoring malformed task {task:?}");
                continue;
            }
        };
        if let Some(result) = result {
            redis::cmd("RPUSH")
                .arg(&keys.results)
                .arg(result)
                .query::<()>(&mut con)?;
        }
    }
}

/// GET then SET, with a pause between them so that an unprotected update would be lost.
fn read_modify_write(con: &mut Connection, key: &str, amount: i64) -> redis::RedisResult<()> {
    let value: Option<i64> = redis::cmd("GET").arg(key).query(con)?;
    std::thread::sleep(Duration::from_millis(1));
    redis::cmd("SET")
        .arg(key)
        .arg(value.unwrap_or(0) + amount)
        .query(con)
}

/// Pattern 1: take the lock inside the task; fail the task when it is already held.
/// Returns the result line, or `None` when the task went back on the queue.
#[allow(clippy::too_many_arguments)]
fn pattern1_task(
    o: &Options,
    con: &mut Connection,
    keys: &Keys,
    locks: &LockFactory,
    task: &str,
    person: u64,
    amount: i64,
    attempt: u32,
) -> Result<Option<String>, AnyError> {
    let id = o.worker_id;
    let handle = match locks.acquire(con, [person]) {
        Ok(handle) => handle,
        Err(e @ Error::AlreadyHeld { .. }) => {
            eprintln!("[worker {id}] p1 task {task}: lock on person {person} was already held ({e}); task failed (attempt {attempt})");
            redis::cmd("INCR").arg(&keys.contended).query::<()>(con)?;
            if attempt >= MAX_ATTEMPTS {
                return Ok(Some(format!("p1 {task} failed")));
            }
            std::thread::sleep(Duration::from_millis(2));
            let retry = format!("p1 {task} {person} {amount} {}", attempt + 1);
            redis::cmd("RPUSH")
                .arg(&keys.queue)
                .arg(retry)
                .query::<()>(con)?;
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    let counter = Keys::counter(&o.ns, 1, person);
    let scope = handle.releasing(con, |con| read_modify_write(con, &counter, amount));
    Ok(Some(match scope.into_result() {
        Ok(Ok(())) => format!("p1 {task} ok"),
        Ok(Err(e)) => return Err(e.into()),
        Err(lost) => {
            eprintln!("[worker {id}] p1 task {task}: lease lost before release: {lost}");
            format!("p1 {task} lost")
        }
    }))
}

/// Pattern 2: the producer took the lock; confirm the lease before touching the counter.
fn pattern2_task(
    o: &Options,
    con: &mut Connection,
    locks: &LockFactory,
    task: &str,
    person: u64,
    lease_id: &str,
    amount: i64,
) -> Option<String> {
    let id = o.worker_id;
    let handle = match locks.get_handle(con, [person], lease_id) {
        Ok(handle) => handle,
        Err(e) => {
            eprintln!("[worker {id}] p2 task {task}: lease {lease_id} on person {person} expired; refused: {e}");
            let why = match e {
                Error::NotHeld { .. } => "NOTHELD",
                Error::NotOwned { .. } => "NOTOWNED",
                _ => "error",
            };
            return Some(format!("p2 {task} refused {why}"));
        }
    };
    let counter = Keys::counter(&o.ns, 2, person);
    let scope = handle.releasing(con, |con| read_modify_write(con, &counter, amount));
    Some(match scope.into_result() {
        Ok(Ok(())) => format!("p2 {task} ok"),
        Ok(Err(e)) => format!("p2 {task} error {e}"),
        Err(lost) => {
            eprintln!("[worker {id}] p2 task {task}: lease lost before release: {lost}");
            format!("p2 {task} lost")
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Producer

/// The person task `t` adds to: pairs of consecutive tasks share a person, so that workers
/// taking tasks side by side contend for the same lock.
fn person_of(t: u64, people: u64) -> u64 {
    (t / 2) % people
}

/// Which pattern-2 tasks get a lease that expires before they run.
fn expired_tasks(tasks: u64, expired: u64) -> BTreeSet<u64> {
    if expired == 0 || tasks == 0 {
        return BTreeSet::new();
    }
    let stride = (tasks / expired).max(1);
    (0..tasks)
        .filter(|t| t % stride == stride / 2)
        .take(expired as usize)
        .collect()
}

/// Kills the worker processes if the producer leaves early.
struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn run(o: &Options) -> Result<bool, AnyError> {
    let deadline = Instant::now() + o.timeout;
    let mut con = connect(&o.url)?;
    let keys = Keys::new(&o.ns);
    clean(o, &mut con, &keys)?;

    let exe = std::env::current_exe()?;
    let mut workers = Workers(Vec::new());
    for i in 1..=o.workers {
        let child = Command::new(&exe)
            .args(["worker", "--url", &o.url, "--namespace", &o.ns])
            .args(["--id", &i.to_string()])
            .spawn()?;
        workers.0.push(child);
    }
    println!(
        "producer: {} workers, {} people, {} tasks per pattern, namespace {}",
        o.workers, o.people, o.tasks, o.ns
    );

    // Pattern 1: every task at once, one increment of 1 each.
    for t in 0..o.tasks {
        let task = format!("p1 {t} {} 1 1", person_of(t, o.people));
        redis::cmd("RPUSH")
            .arg(&keys.queue)
            .arg(task)
            .query::<()>(&mut con)?;
    }
    let p1 = collect(&mut con, &keys, o.tasks, deadline)?;

    // Pattern 2: lock first, then enqueue with the lease id.
    let expired = expired_tasks(o.tasks, o.expired);
    let normal = person_lock(o, Duration::from_secs(10))?;
    let short = person_lock(o, o.short_ttl)?;
    for t in 0..o.tasks {
        let person = person_of(t, o.people);
        let (locks, amount, delay) = if expired.contains(&t) {
            (&short, 1000, o.delay)
        } else {
            (&normal, 1, Duration::ZERO)
        };
        let mut logged = false;
        let handle = loop {
            match locks.acquire(&mut con, [person]) {
                Ok(handle) => break handle,
                Err(Error::AlreadyHeld { .. }) if Instant::now() < deadline => {
                    if !logged {
                        println!("producer: p2 task {t}: couldn't get the lock on person {person} yet; not enqueuing until it is free");
                        logged = true;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => return Err(e.into()),
            }
        };
        let task = format!(
            "p2 {t} {person} {amount} {} {}",
            handle.lease_id(),
            delay.as_millis()
        );
        redis::cmd("RPUSH")
            .arg(&keys.queue)
            .arg(task)
            .query::<()>(&mut con)?;
    }
    let p2 = collect(&mut con, &keys, o.tasks, deadline)?;

    for _ in 0..o.workers {
        redis::cmd("RPUSH")
            .arg(&keys.queue)
            .arg("stop")
            .query::<()>(&mut con)?;
    }
    let all_stopped = stop_workers(&mut workers, deadline);

    let ok1 = report_pattern1(o, &mut con, &keys, &p1)?;
    let ok2 = report_pattern2(o, &mut con, &p2, &expired)?;
    Ok(ok1 && ok2 && all_stopped)
}

fn clean(o: &Options, con: &mut Connection, keys: &Keys) -> Result<(), AnyError> {
    let mut del = redis::cmd("DEL");
    del.arg(&keys.queue).arg(&keys.results).arg(&keys.contended);
    del.arg(format!("{}:p1:failed", o.ns))
        .arg(format!("{}:p2:refused", o.ns));
    let lock = person_lock(o, Duration::from_secs(1))?;
    for person in 0..o.people {
        del.arg(Keys::counter(&o.ns, 1, person));
        del.arg(Keys::counter(&o.ns, 2, person));
        del.arg(lock.key([person])?);
    }
    // One DEL of many keys: fine on a single server, which is what the demo runs against.
    del.query::<()>(con)?;
    Ok(())
}

/// Final results by task number: "ok", "failed", "refused NOTHELD", …
type Results = Vec<Option<String>>;

fn collect(
    con: &mut Connection,
    keys: &Keys,
    tasks: u64,
    deadline: Instant,
) -> Result<Results, AnyError> {
    let mut results: Results = vec![None; tasks as usize];
    let mut done = 0;
    while done < tasks {
        if Instant::now() >= deadline {
            return Err(format!("timed out with {done} of {tasks} results").into());
        }
        let popped: Option<(String, String)> =
            redis::cmd("BLPOP").arg(&keys.results).arg(1).query(con)?;
        let Some((_, line)) = popped else { continue };
        let mut fields = line.splitn(3, ' ');
        let (_pattern, task, outcome) = (fields.next(), fields.next(), fields.next());
        let slot = task
            .and_then(|t| t.parse::<usize>().ok())
            .and_then(|t| results.get_mut(t))
            .ok_or_else(|| format!("bad result line {line:?}"))?;
        if slot
            .replace(outcome.unwrap_or_default().to_string())
            .is_some()
        {
            return Err(format!("two results for one task: {line:?}").into());
        }
        done += 1;
    }
    Ok(results)
}

fn stop_workers(workers: &mut Workers, deadline: Instant) -> bool {
    let grace = deadline.max(Instant::now() + Duration::from_secs(5));
    let mut all_ok = true;
    for child in &mut workers.0 {
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    all_ok &= status.success();
                    break;
                }
                Ok(None) if Instant::now() < grace => std::thread::sleep(Duration::from_millis(20)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    all_ok = false;
                    break;
                }
            }
        }
    }
    workers.0.clear();
    all_ok
}

/// Leaves the task numbers in a Redis set, for whoever checks the run afterwards.
fn record(
    con: &mut Connection,
    key: &str,
    tasks: impl Iterator<Item = u64>,
) -> Result<(), AnyError> {
    let tasks: Vec<u64> = tasks.collect();
    if !tasks.is_empty() {
        redis::cmd("SADD").arg(key).arg(tasks).query::<()>(con)?;
    }
    Ok(())
}

fn counters(o: &Options, con: &mut Connection, pattern: u8) -> Result<Vec<i64>, AnyError> {
    (0..o.people)
        .map(|p| {
            let v: Option<i64> = redis::cmd("GET")
                .arg(Keys::counter(&o.ns, pattern, p))
                .query(con)?;
            Ok(v.unwrap_or(0))
        })
        .collect()
}

fn report_pattern1(
    o: &Options,
    con: &mut Connection,
    keys: &Keys,
    results: &Results,
) -> Result<bool, AnyError> {
    let mut expected = vec![0i64; o.people as usize];
    let mut failed = Vec::new();
    let mut unexpected = Vec::new();
    for (t, r) in results.iter().enumerate() {
        match r.as_deref() {
            Some("ok") => expected[person_of(t as u64, o.people) as usize] += 1,
            Some("failed") => failed.push(t),
            other => unexpected.push((t, other.map(str::to_string))),
        }
    }
    record(
        con,
        &format!("{}:p1:failed", o.ns),
        failed.iter().map(|t| *t as u64),
    )?;
    let contended: Option<u64> = redis::cmd("GET").arg(&keys.contended).query(con)?;
    let actual = counters(o, con, 1)?;
    let exact = actual == expected && unexpected.is_empty();
    println!(
        "pattern 1 (lock inside the task): {} tasks, {} applied, {} failed after {MAX_ATTEMPTS} tries {failed:?}, {} AlreadyHeld refusals retried",
        o.tasks,
        o.tasks as usize - failed.len() - unexpected.len(),
        failed.len(),
        contended.unwrap_or(0)
    );
    println!(
        "pattern 1 counters {actual:?} expected {expected:?}: {}",
        if exact { "exact" } else { "WRONG" }
    );
    if !unexpected.is_empty() {
        println!("pattern 1 unexpected results: {unexpected:?}");
    }
    Ok(exact)
}

fn report_pattern2(
    o: &Options,
    con: &mut Connection,
    results: &Results,
    expired: &BTreeSet<u64>,
) -> Result<bool, AnyError> {
    let mut expected = vec![0i64; o.people as usize];
    let mut refused = BTreeSet::new();
    let mut unexpected = Vec::new();
    for (t, r) in results.iter().enumerate() {
        let t64 = t as u64;
        match r.as_deref() {
            Some("ok") if !expired.contains(&t64) => {
                expected[person_of(t64, o.people) as usize] += 1
            }
            Some(r) if r.starts_with("refused") && expired.contains(&t64) => {
                refused.insert(t64);
            }
            other => unexpected.push((t, other.map(str::to_string))),
        }
    }
    record(
        con,
        &format!("{}:p2:refused", o.ns),
        refused.iter().copied(),
    )?;
    let actual = counters(o, con, 2)?;
    let exact = actual == expected && unexpected.is_empty() && &refused == expired;
    println!(
        "pattern 2 (lock before enqueuing, lease id passed): {} tasks, {} applied, {} refused with an expired lease {refused:?} (planned {expired:?})",
        o.tasks,
        o.tasks as usize - refused.len() - unexpected.len(),
        refused.len()
    );
    println!(
        "pattern 2 counters {actual:?} expected {expected:?}: {}",
        if exact { "exact" } else { "WRONG" }
    );
    if !unexpected.is_empty() {
        println!("pattern 2 unexpected results: {unexpected:?}");
    }
    Ok(exact)
}
