//! A Rust Celery worker for the README's pattern 2 (lock before enqueuing, pass the lease id),
//! built on the `celery` crate (rusty-celery 0.5.5) and the `pylocks` client.
//!
//! A Python Celery 5 producer takes the person's lock with the Python client and sends
//! `pattern2.add_to_person(person_id, lease_id, amount[, delay])` to a queue this worker
//! consumes. For each task the worker confirms the lease (`get_handle`, i.e. `PYLOCK.CONFIRM`),
//! claims it under an id of its own (`claim`, i.e. `PYLOCK.CONFIRM … CLAIM`), does the
//! read-modify-write of the person's counter (GET, optional sleep, SET: deliberately not atomic,
//! so only the lock keeps increments from being lost), and releases the claimed lease. A task
//! whose lease is gone (`NOTHELD`: expired; `NOTOWNED`: expired and taken by another) is refused:
//! logged, failed without retry, and nothing is written. So is a second delivery of the same
//! message (a redelivery, a retry, a copy) while the first run holds the lease: the first run
//! claimed it, so this one gets `CLAIMED` and is acknowledged without running.
//!
//! The lock factory is the Python test app's (`python/tests/lockapp.py`): prefix `person`,
//! arity 1, root prefix `locks_example` unless `--root-prefix` says otherwise, so both clients
//! name the same lock (`testdata/key-vectors.json`).
//!
//! Every line the worker logs starts with the Unix time in milliseconds; each task ends with one
//! line `applied task=…` or `refused task=…` that tests read.

use std::error::Error;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use celery::error::TaskError;
use celery::task::{Task, TaskResult};
use pylocks::LockFactory;
use redis::aio::MultiplexedConnection;

const USAGE: &str = "\
pylocks-celery-worker: a Rust Celery worker running pattern2.add_to_person with pylocks

USAGE:
    pylocks-celery-worker [OPTIONS]

OPTIONS:
    --broker URL        Celery broker (Redis)   [env PYLOCKS_BROKER_URL, default redis://127.0.0.1:6379/1]
    --locks URL         lock store, module loaded [env PYLOCKS_LOCKS_URL, default redis://127.0.0.1:6379/0]
    --data URL          the people counters     [env PYLOCKS_DATA_URL, default redis://127.0.0.1:6379/3]
    --queue NAME        queue to consume        [env PYLOCKS_QUEUE, default celery]
    --root-prefix P     lock keys' root prefix  [env PYLOCKS_TEST_ROOT_PREFIX, default locks_example]
    --hostname NAME     this worker's node name [default rust@<pid>]
    -h, --help          this text

SIGTERM or SIGINT: warm shutdown (running tasks finish; tasks still waiting for their ETA are lost).";

/// The task's name, shared with the Python app, so a message sent by `apply_async` on the
/// Python task (routed to this worker's queue) runs here.
const TASK_NAME: &str = "pattern2.add_to_person";

/// What every task needs: the person lock factory and connections to the lock store and data.
struct Worker {
    person_lock: LockFactory,
    locks: MultiplexedConnection,
    data: MultiplexedConnection,
}

static WORKER: OnceLock<Worker> = OnceLock::new();

fn worker() -> &'static Worker {
    WORKER
        .get()
        .expect("the worker is set up before tasks are consumed")
}

/// The task lives in its own module only to scope one `allow`: the `celery::task` macro of
/// 0.5.5 puts the `Task` impl inside a named `const` block, which rustc now flags as
/// `non_local_definitions`.
#[allow(non_local_definitions)]
mod tasks {
    use super::*;

    /// Pattern 2's task: confirm and claim the lease handed over by the producer, add `amount`
    /// to the person's counter by GET then SET (sleeping `delay` seconds between them), release.
    ///
    /// `max_retries = 0`: the celery crate retries every failed task by default (forever), by
    /// re-sending its message; a refused lease must stay refused, as in the Python app.
    #[celery::task(name = "pattern2.add_to_person", bind = true, max_retries = 0)]
    pub(crate) async fn add_to_person(
        task: &Self,
        person_id: String,
        lease_id: String,
        amount: i64,
        delay: Option<f64>,
    ) -> TaskResult<i64> {
        let task_id = task.request().id.clone();
        let worker = worker();
        let mut locks = worker.locks.clone();
        let key = worker
            .person_lock
            .key([&person_id])
            .map_err(|e| TaskError::UnexpectedError(e.to_string()))?;

        // Confirm, then claim: only one delivery of this message can claim the lease; every
        // other one is told CLAIMED (by the confirm, or by the claim when two race).
        let given = worker
            .person_lock
            .get_handle_async(&mut locks, [&person_id], &lease_id)
            .await;
        let handle = match given {
            Ok(given) => given.claim_async(&mut locks, None).await,
            Err(e) => Err(e),
        };
        let handle = match handle {
            Ok(handle) => handle,
            Err(e @ pylocks::Error::Claimed { .. }) => {
                log::warn!(
                    "refused task={task_id} person={person_id} key={key} lease={lease_id} \
                     code=CLAIMED: another run of this task has lease {lease_id}: {e}"
                );
                return Err(TaskError::ExpectedError(e.to_string()));
            }
            Err(e) if e.is_lease_lost() => {
                log::error!(
                    "refused task={task_id} person={person_id} key={key} lease={lease_id} code={}: \
                     lease {lease_id} on person {person_id} expired: {e}",
                    lease_code(&e)
                );
                return Err(TaskError::UnexpectedError(e.to_string()));
            }
            Err(e) => {
                log::error!("task={task_id} could not confirm lease {lease_id} on {key}: {e}");
                return Err(TaskError::UnexpectedError(e.to_string()));
            }
        };
        let (claimed, token) = (handle.lease_id().to_string(), handle.token());

        let mut data = worker.data.clone();
        let counter = format!("person:{person_id}");
        let scope = handle
            .releasing_async(&mut locks, async |_locks: &mut MultiplexedConnection| {
                read_modify_write(&mut data, &counter, amount, delay).await
            })
            .await;
        let (before, after) = match scope.output {
            Ok(values) => values,
            Err(e) => {
                log::error!("task={task_id} person={person_id}: read-modify-write failed: {e}");
                return Err(TaskError::UnexpectedError(e.to_string()));
            }
        };
        if let Err(e) = scope.release {
            // The write happened, but the lease ended before the release: it may have overlapped
            // another holder. Say so; the write cannot be taken back.
            log::error!(
                "task={task_id} person={person_id} key={key} lease={lease_id}: wrote {before} -> \
                 {after}, but the release failed: {e}"
            );
            return Err(TaskError::UnexpectedError(e.to_string()));
        }
        log::info!(
            "applied task={task_id} person={person_id} key={key} lease={lease_id} \
             claimed={claimed} token={token} amount={amount} before={before} after={after}"
        );
        Ok(after)
    }
}

use tasks::add_to_person;

/// The examples' non-atomic increment: GET, sleep `delay` seconds, SET. Returns the counter
/// before and after.
async fn read_modify_write(
    data: &mut MultiplexedConnection,
    counter: &str,
    amount: i64,
    delay: Option<f64>,
) -> redis::RedisResult<(i64, i64)> {
    let before: Option<i64> = redis::cmd("GET").arg(counter).query_async(data).await?;
    let before = before.unwrap_or(0);
    if let Some(secs) = delay.filter(|secs| secs.is_finite() && *secs > 0.0) {
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    }
    let after = before + amount;
    redis::cmd("SET")
        .arg(counter)
        .arg(after)
        .query_async::<()>(data)
        .await?;
    Ok((before, after))
}

/// The server's error code behind a lost lease.
fn lease_code(err: &pylocks::Error) -> &'static str {
    match err {
        pylocks::Error::NotHeld { .. } => "NOTHELD",
        pylocks::Error::NotOwned { .. } => "NOTOWNED",
        pylocks::Error::Claimed { .. } => "CLAIMED",
        _ => "LOST",
    }
}

/// Command-line options (see [`USAGE`]).
struct Options {
    broker: String,
    locks: String,
    data: String,
    queue: String,
    root_prefix: String,
    hostname: String,
}

impl Options {
    /// Parses `args` (without the program name); `Ok(None)` when help was asked for.
    fn parse(args: impl IntoIterator<Item = String>) -> Result<Option<Self>, String> {
        let env =
            |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
        let mut options = Options {
            broker: env("PYLOCKS_BROKER_URL", "redis://127.0.0.1:6379/1"),
            locks: env("PYLOCKS_LOCKS_URL", "redis://127.0.0.1:6379/0"),
            data: env("PYLOCKS_DATA_URL", "redis://127.0.0.1:6379/3"),
            queue: env("PYLOCKS_QUEUE", "celery"),
            root_prefix: env("PYLOCKS_TEST_ROOT_PREFIX", "locks_example"),
            hostname: format!("rust@{}", std::process::id()),
        };
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            if arg == "-h" || arg == "--help" {
                return Ok(None);
            }
            let field = match arg.as_str() {
                "--broker" => &mut options.broker,
                "--locks" => &mut options.locks,
                "--data" => &mut options.data,
                "--queue" => &mut options.queue,
                "--root-prefix" => &mut options.root_prefix,
                "--hostname" => &mut options.hostname,
                _ => return Err(format!("unknown argument {arg:?}")),
            };
            *field = args.next().ok_or_else(|| format!("{arg} needs a value"))?;
        }
        Ok(Some(options))
    }
}

async fn run(options: Options) -> Result<(), Box<dyn Error>> {
    let person_lock = LockFactory::builder("person", Duration::from_secs(60))
        .arity(1)
        .root_prefix(options.root_prefix.clone())
        .build()?;
    let locks = redis::Client::open(options.locks.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let data = redis::Client::open(options.data.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let example_key = person_lock.key(["42"])?;
    if WORKER
        .set(Worker {
            person_lock,
            locks,
            data,
        })
        .is_err()
    {
        return Err("the worker was set up twice".into());
    }

    let app = celery::CeleryBuilder::new("pylocks", &options.broker)
        .hostname(&options.hostname)
        .default_queue(&options.queue)
        .build()
        .await?;
    app.register_task::<add_to_person>().await?;
    debug_assert_eq!(add_to_person::NAME, TASK_NAME);
    let app = Arc::new(app);
    log::info!(
        "ready hostname={} queue={} task={TASK_NAME} lock keys like {example_key}",
        options.hostname,
        options.queue
    );
    app.consume_from(&[options.queue.as_str()]).await?;
    app.close().await?;
    log::info!("stopped hostname={}", options.hostname);
    Ok(())
}

/// Writes each record to stderr as one line: Unix time in milliseconds, level, target, text.
struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::Level::Info
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis();
            let line = format!(
                "{now} {} {}: {}\n",
                record.level(),
                record.target(),
                record.args()
            );
            // One write per line, so lines from concurrent tasks never interleave.
            let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
        }
    }

    fn flush(&self) {}
}

static LOGGER: StderrLogger = StderrLogger;

#[tokio::main]
async fn main() -> ExitCode {
    let _ = log::set_logger(&LOGGER).map(|()| log::set_max_level(log::LevelFilter::Info));
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("pylocks-celery-worker: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("pylocks-celery-worker: {e}");
            ExitCode::FAILURE
        }
    }
}
