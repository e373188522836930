//! A real Sentinel setup on loopback: one primary and two replicas, each with the module
//! loaded, watched by three sentinel processes (quorum 2) that fail over within seconds.
//!
//! Sentinels: for Redis, `redis-sentinel` from `PATH` (Debian's `redis-sentinel` package) or,
//! without it, the Redis binary run with `--sentinel`; `PYLOCK_REDIS_SENTINEL` names another
//! binary. For Valkey, the Valkey binary run with `--sentinel`. Every process is killed on drop;
//! every wait has a deadline.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::{env_path, free_port, wait_until, which, Kind, Server, NEXT_DIR};

/// The name the sentinels monitor the primary under.
pub const SERVICE: &str = "pylock";

/// How long a node may stay silent before a sentinel considers it down.
///
/// Not less than about 1.5 s: after a failover a sentinel resets its link to the new primary
/// and starts that node's silence clock, but reconnects at most once per second (its fixed
/// ping period, counted from its last attempt on the dead primary). With 500 ms the sentinels
/// that did not lead the failover declared the new primary down before reaching it and failed
/// over again, in two of the first three runs.
pub const DOWN_AFTER_MS: u64 = 2000;

/// The sentinels' `failover-timeout`: a failover that stalls is retried after twice this.
pub const FAILOVER_TIMEOUT_MS: u64 = 3000;

/// Three data nodes (one primary, two replicas, all with the module) and three sentinels.
/// The nodes keep their index for the whole test; which one is the primary changes with each
/// failover. Everything is killed on drop.
pub struct SentinelGroup {
    kind: Kind,
    nodes: Vec<Server>,
    sentinels: Vec<SentinelProcess>,
}

impl SentinelGroup {
    /// Starts a primary, two replicas in sync with it, and three sentinels that monitor it with
    /// quorum 2, then waits until the setup is [stable](Self::wait_stable).
    ///
    /// # Panics
    ///
    /// When a process does not start or the setup is not stable within 20 seconds.
    pub fn start(kind: Kind) -> Self {
        let primary = Server::start(kind);
        let replicas = [primary.start_replica(&[]), primary.start_replica(&[])];
        let port = primary.port();
        let mut nodes = vec![primary];
        nodes.extend(replicas);
        let sentinels = (0..3).map(|_| SentinelProcess::start(kind, port)).collect();
        let group = SentinelGroup {
            kind,
            nodes,
            sentinels,
        };
        group.wait_stable(port);
        group
    }

    /// Which implementation the nodes and sentinels are.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The data nodes, in creation order (the first was the primary at the start).
    pub fn nodes(&self) -> &[Server] {
        &self.nodes
    }

    /// `redis://` URLs of the three sentinels, as sentinel clients take them.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels.iter().map(SentinelProcess::url).collect()
    }

    /// What runs as a sentinel, e.g. `/usr/bin/redis-sentinel` or `valkey-server --sentinel`.
    pub fn sentinel_command(&self) -> String {
        let (bin, flag) = sentinel_binary(self.kind);
        if flag {
            format!("{} --sentinel", bin.display())
        } else {
            bin.display().to_string()
        }
    }

    /// The primary's port as every sentinel reports it, if they all agree.
    pub fn agreed_primary_port(&self) -> Option<u16> {
        let mut ports = self.sentinels.iter().map(SentinelProcess::primary_port);
        let first = ports.next()??;
        ports.all(|p| p == Some(first)).then_some(first)
    }

    /// The index of the node listening on `port`.
    ///
    /// # Panics
    ///
    /// When no node does.
    pub fn node_index(&self, port: u16) -> usize {
        self.nodes
            .iter()
            .position(|n| n.port() == port)
            .unwrap_or_else(|| panic!("no node on port {port}"))
    }

    /// The index of the node all sentinels name as primary.
    ///
    /// # Panics
    ///
    /// When the sentinels do not agree.
    pub fn primary_index(&self) -> usize {
        let port = self
            .agreed_primary_port()
            .expect("the sentinels agree on a primary");
        self.node_index(port)
    }

    /// SIGKILLs the node at `index` (and reaps it).
    pub fn kill(&mut self, index: usize) {
        self.nodes[index].kill();
    }

    /// Waits until every sentinel names a primary other than the node on `old_port`, and that
    /// node answers `ROLE` as a master. Returns its port.
    ///
    /// # Panics
    ///
    /// When that does not happen within `timeout` (the sentinels' logs are printed).
    pub fn wait_failover(&self, old_port: u16, timeout: Duration) -> u16 {
        let mut new_port = None;
        let done = wait_until(timeout, || {
            new_port = self.agreed_primary_port().filter(|p| *p != old_port);
            new_port.is_some_and(|p| {
                self.nodes
                    .iter()
                    .find(|n| n.port() == p)
                    .and_then(|n| n.try_conn().ok())
                    .and_then(|mut c| redis::cmd("ROLE").query::<redis::Value>(&mut c).ok())
                    .is_some_and(|v| role_name(&v).as_deref() == Some("master"))
            })
        });
        if done.is_err() {
            self.dump_sentinel_logs();
            panic!("no failover away from port {old_port} within {timeout:?}");
        }
        new_port.expect("a new primary")
    }

    /// Starts the (killed) node at `index` again, empty, as a replica of the node on
    /// `primary_port`, and waits until it is in sync.
    ///
    /// # Panics
    ///
    /// When it does not come up or sync.
    pub fn restart_as_replica(&mut self, index: usize, primary_port: u16) {
        let node = &mut self.nodes[index];
        node.kill();
        // Drop an earlier --replicaof and its two values.
        if let Some(i) = node.args.iter().position(|a| a == "--replicaof") {
            node.args.drain(i..(i + 3).min(node.args.len()));
        }
        let port = primary_port.to_string();
        node.restart_with(&["--replicaof", "127.0.0.1", &port]);
        node.wait_in_sync();
    }

    /// Waits until every sentinel names the node on `primary_port` as a healthy master, sees
    /// the two other nodes as healthy replicas linked to it and knows the two other sentinels,
    /// and until both replicas are in sync. From then on a failover can elect any replica.
    ///
    /// # Panics
    ///
    /// When that does not happen within 20 seconds (the sentinels' logs are printed).
    pub fn wait_stable(&self, primary_port: u16) {
        let replica_ports: Vec<u16> = self
            .nodes
            .iter()
            .map(Server::port)
            .filter(|p| *p != primary_port)
            .collect();
        let done = wait_until(Duration::from_secs(20), || {
            self.sentinels
                .iter()
                .all(|s| s.is_stable(primary_port, &replica_ports))
        });
        if done.is_err() {
            self.dump_sentinel_logs();
            panic!("the sentinels did not settle on primary {primary_port} with 2 replicas");
        }
        for n in self.nodes.iter().filter(|n| n.port() != primary_port) {
            n.wait_in_sync();
        }
    }

    fn dump_sentinel_logs(&self) {
        for s in &self.sentinels {
            eprintln!(
                "--- sentinel on port {} ({}) ---\n{}",
                s.port,
                s.dir.display(),
                s.log_tail(40)
            );
        }
    }
}

/// The binary that runs a sentinel of `kind`, and whether it needs `--sentinel`.
fn sentinel_binary(kind: Kind) -> (PathBuf, bool) {
    match kind {
        Kind::Redis => env_path("PYLOCK_REDIS_SENTINEL")
            .or_else(|| which("redis-sentinel"))
            .map(|b| (b, false))
            .unwrap_or_else(|| (kind.binary(), true)),
        Kind::Valkey => (kind.binary(), true),
    }
}

fn role_name(v: &redis::Value) -> Option<String> {
    match v {
        redis::Value::Array(items) => match items.first() {
            Some(redis::Value::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            Some(redis::Value::SimpleString(s)) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// One sentinel process, with its own directory (its config file is rewritten as it learns).
struct SentinelProcess {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl SentinelProcess {
    fn start(kind: Kind, primary_port: u16) -> Self {
        // A sentinel fsyncs its config file at every change of view, in its event loop. On a
        // busy disk that can stall it past down-after-milliseconds, and it then takes healthy
        // nodes for down: keep its files in memory (tmpfs) where there is one.
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!(
            "pylock-sentinel-{}-{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create sentinel directory");
        let (bin, flag) = sentinel_binary(kind);
        let mut last_err = String::new();
        // A port found free can be taken before the sentinel binds it: retry on another.
        for _ in 0..5 {
            let port = free_port();
            let conf = format!(
                "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {dir}\nlogfile sentinel.log\n\
                 sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 2\n\
                 sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n\
                 sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n\
                 sentinel parallel-syncs {SERVICE} 1\n",
                dir = dir.display()
            );
            let conf_path = dir.join("sentinel.conf");
            std::fs::write(&conf_path, conf).expect("write sentinel.conf");
            let mut cmd = Command::new(&bin);
            cmd.current_dir(&dir).arg(&conf_path);
            if flag {
                cmd.arg("--sentinel");
            }
            let child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("spawn sentinel {}: {e}", bin.display()));
            let mut s = SentinelProcess {
                port,
                dir: dir.clone(),
                child: Some(child),
            };
            match s.wait_ready() {
                Ok(()) => return s,
                Err(e) => {
                    last_err = e;
                    s.kill();
                }
            }
        }
        panic!("sentinel did not start: {last_err}");
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = crate::exit_status(&mut self.child) {
                return Err(format!("exited with {status}; log:\n{}", self.log_tail(20)));
            }
            if self.primary_port().is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("not ready after 10 s; log:\n{}", self.log_tail(20)));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn conn(&self) -> Option<redis::Connection> {
        let client = redis::Client::open(self.url()).ok()?;
        let con = client
            .get_connection_with_timeout(Duration::from_secs(1))
            .ok()?;
        con.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        Some(con)
    }

    /// `SENTINEL GET-MASTER-ADDR-BY-NAME`: the port of the primary this sentinel names.
    fn primary_port(&self) -> Option<u16> {
        let (_, port): (String, u16) = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(SERVICE)
            .query(&mut self.conn()?)
            .ok()?;
        Some(port)
    }

    fn is_stable(&self, primary_port: u16, replica_ports: &[u16]) -> bool {
        let Some(mut con) = self.conn() else {
            return false;
        };
        let Ok(master) = redis::cmd("SENTINEL")
            .arg("MASTER")
            .arg(SERVICE)
            .query::<HashMap<String, String>>(&mut con)
        else {
            return false;
        };
        let field = |m: &HashMap<String, String>, k: &str| m.get(k).cloned().unwrap_or_default();
        if field(&master, "flags") != "master"
            || field(&master, "port") != primary_port.to_string()
            || field(&master, "num-other-sentinels") != "2"
        {
            return false;
        }
        let Ok(replicas) = redis::cmd("SENTINEL")
            .arg("REPLICAS")
            .arg(SERVICE)
            .query::<Vec<HashMap<String, String>>>(&mut con)
        else {
            return false;
        };
        replica_ports.iter().all(|p| {
            replicas.iter().any(|r| {
                field(r, "port") == p.to_string()
                    && field(r, "flags") == "slave"
                    && field(r, "master-link-status") == "ok"
                    && field(r, "master-port") == primary_port.to_string()
            })
        })
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.dir.join("sentinel.log"), lines)
    }
}

impl Drop for SentinelProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- sentinel on port {} ({}), last log lines ---\n{}",
                self.port,
                self.dir.display(),
                self.log_tail(40)
            );
        }
        self.kill();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(f) = std::fs::File::open(path) else {
        return String::from("(no log)");
    };
    let all: Vec<String> = BufReader::new(f).lines().map_while(Result::ok).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
