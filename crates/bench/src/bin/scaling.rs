//! How the module's costs grow: the scaling curves of `docs/BENCHMARKS.md`, each measured side
//! by side with the Redis-native equivalent on the same kind of server, in one run.
//!
//! - **held locks**: ACQUIRE and RELEASE server time (`INFO commandstats`) and memory per lock
//!   against the number of locks held, 10^3 … 10^7, next to `SET NX PX` / `DEL` on as many
//!   string keys in a second server;
//! - **waiters on one key**: hand-off latency and server CPU per grant while 1 … 10^4 clients
//!   wait in `ACQUIRE … BLOCK` on one lock, next to a token passed through `BLPOP`/`RPUSH`;
//! - **waiters spread over keys**: memory per blocked client and CPU per hand-off with 10^5
//!   waiters on 10^5 locks, next to as many idle connections and as many `BLPOP` waiters.
//!
//! Every connection is a Unix socket (10^5 TCP connections from one loopback address would run
//! out of ephemeral ports), written and read by hand with pipelining, so the client adds as
//! little as it can. Run it with `scripts/bench-scaling`.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use testkit::{Kind, Server};

/// A RESP reply, as much of it as the driver looks at.
#[derive(Debug, Clone, PartialEq)]
enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    fn int(&self) -> i64 {
        match self {
            Reply::Int(i) => *i,
            other => panic!("expected an integer reply, got {other:?}"),
        }
    }

    fn bulk_text(&self) -> String {
        match self {
            Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            other => panic!("expected a bulk reply, got {other:?}"),
        }
    }

    /// The lease id of a lease reply `[id, token, ttl]`.
    fn lease_id(&self) -> Vec<u8> {
        match self {
            Reply::Array(Some(items)) if items.len() == 3 => match &items[0] {
                Reply::Bulk(Some(id)) => id.clone(),
                other => panic!("lease reply without an id: {other:?}"),
            },
            other => panic!("expected a lease reply, got {other:?}"),
        }
    }
}

/// One connection over the server's Unix socket.
struct Conn {
    reader: BufReader<UnixStream>,
    out: Vec<u8>,
}

fn pack(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

impl Conn {
    fn open(path: &PathBuf) -> std::io::Result<Self> {
        let stream = UnixStream::connect(path)?;
        Ok(Self {
            reader: BufReader::with_capacity(4096, stream),
            out: Vec::with_capacity(4096),
        })
    }

    /// Queues a command; [`Conn::flush`] sends what is queued.
    fn queue(&mut self, args: &[&[u8]]) {
        self.out.extend_from_slice(&pack(args));
    }

    fn flush(&mut self) {
        self.reader
            .get_mut()
            .write_all(&self.out)
            .expect("write to the server");
        self.out.clear();
    }

    fn read(&mut self) -> Reply {
        let mut line = Vec::new();
        self.reader
            .read_until(b'\n', &mut line)
            .expect("read from the server");
        assert!(line.ends_with(b"\r\n"), "connection closed mid-reply");
        let body = String::from_utf8_lossy(&line[1..line.len() - 2]).into_owned();
        match line[0] {
            b'+' => Reply::Simple(body),
            b'-' => Reply::Error(body),
            b':' => Reply::Int(body.parse().expect("integer reply")),
            b'$' => {
                let n: i64 = body.parse().expect("bulk length");
                if n < 0 {
                    return Reply::Bulk(None);
                }
                let mut buf = vec![0; n as usize + 2];
                self.reader.read_exact(&mut buf).expect("bulk body");
                buf.truncate(n as usize);
                Reply::Bulk(Some(buf))
            }
            b'*' => {
                let n: i64 = body.parse().expect("array length");
                if n < 0 {
                    return Reply::Array(None);
                }
                Reply::Array(Some((0..n).map(|_| self.read()).collect()))
            }
            other => panic!("unexpected reply type {:?}", other as char),
        }
    }

    /// Sends one command and reads its reply.
    fn call(&mut self, args: &[&str]) -> Reply {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.queue(&args);
        self.flush();
        self.read()
    }

    /// Sends `commands` in pipelines of `batch`, checking every reply with `check`.
    fn pipeline(
        &mut self,
        commands: impl Iterator<Item = Vec<Vec<u8>>>,
        batch: usize,
        check: impl Fn(&Reply),
    ) {
        let mut pending = 0;
        for cmd in commands {
            let args: Vec<&[u8]> = cmd.iter().map(Vec::as_slice).collect();
            self.queue(&args);
            pending += 1;
            if pending == batch {
                self.flush();
                for _ in 0..pending {
                    check(&self.read());
                }
                pending = 0;
            }
        }
        self.flush();
        for _ in 0..pending {
            check(&self.read());
        }
    }

    fn info(&mut self, section: &str) -> String {
        self.call(&["INFO", section]).bulk_text()
    }

    fn info_field(&mut self, section: &str, field: &str) -> f64 {
        let text = self.info(section);
        info_value(&text, field).unwrap_or_else(|| panic!("INFO {section} has no {field}"))
    }

    /// The server's user + system CPU seconds so far.
    fn cpu(&mut self) -> f64 {
        let text = self.info("cpu");
        info_value(&text, "used_cpu_user").unwrap_or(0.0)
            + info_value(&text, "used_cpu_sys").unwrap_or(0.0)
    }

    /// `usec_per_call` of `command` in `INFO commandstats`.
    fn usec_per_call(&mut self, command: &str) -> f64 {
        let text = self.info("commandstats");
        let prefix = format!("cmdstat_{command}:");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|rest| {
                rest.split(',')
                    .find_map(|kv| kv.strip_prefix("usec_per_call="))
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or_else(|| panic!("no commandstats for {command}"))
    }
}

fn info_value(text: &str, field: &str) -> Option<f64> {
    let prefix = format!("{field}:");
    text.lines()
        .find_map(|l| l.trim().strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

fn ok(reply: &Reply) {
    assert!(
        matches!(
            reply,
            Reply::Simple(_) | Reply::Int(1) | Reply::Array(Some(_))
        ),
        "unexpected reply {reply:?}"
    );
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    v[i]
}

/// Raises this process's open-file limit as far as it may go (children inherit it): each
/// waiter is a connection, on both sides.
fn raise_fd_limit(want: u64) -> u64 {
    // SAFETY: getrlimit/setrlimit with a valid struct pointer.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        let raised = libc::rlimit {
            rlim_cur: want,
            rlim_max: want.max(lim.rlim_max),
        };
        // Only root may raise the hard limit; otherwise go up to it.
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
            lim.rlim_cur = lim.rlim_max.min(want);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur
    }
}

struct Args {
    quick: bool,
    max_locks: u64,
    max_waiters: u64,
    spread: u64,
    markdown: String,
    plot_dir: String,
    kind: Kind,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        quick: false,
        max_locks: 10_000_000,
        max_waiters: 10_000,
        spread: 100_000,
        markdown: "target/bench/scaling.md".into(),
        plot_dir: "target/bench".into(),
        kind: Kind::Redis,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--quick" => {
                a.quick = true;
                a.max_locks = 100_000;
                a.max_waiters = 100;
                a.spread = 1_000;
            }
            "--max-locks" => {
                a.max_locks = value("--max-locks")?.parse().map_err(|e| format!("{e}"))?
            }
            "--max-waiters" => {
                a.max_waiters = value("--max-waiters")?
                    .parse()
                    .map_err(|e| format!("{e}"))?
            }
            "--spread" => a.spread = value("--spread")?.parse().map_err(|e| format!("{e}"))?,
            "--markdown" => a.markdown = value("--markdown")?,
            "--plot-dir" => a.plot_dir = value("--plot-dir")?,
            "--server" => {
                a.kind = match value("--server")?.as_str() {
                    "redis" => Kind::Redis,
                    "valkey" => Kind::Valkey,
                    other => return Err(format!("--server redis|valkey, not {other}")),
                }
            }
            "-h" | "--help" => {
                println!(
                    "bench-scaling [--quick] [--max-locks N] [--max-waiters N] [--spread N] \
                     [--server redis|valkey] [--markdown PATH] [--plot-dir DIR]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(a)
}

/// A server started for this run, reached over its Unix socket.
struct Target {
    // Kept so the server runs (and is stopped) with the target.
    _server: Server,
    socket: PathBuf,
}

impl Target {
    fn start(name: &str, maxclients: u64) -> Self {
        let kind = KIND.with(|k| k.get());
        let socket =
            std::env::temp_dir().join(format!("pylock-scaling-{}-{name}.sock", std::process::id()));
        let _ = std::fs::remove_file(&socket);
        let sock = socket.to_string_lossy().into_owned();
        let maxclients = maxclients.to_string();
        let server = Server::start_with(
            kind,
            &[
                "--unixsocket",
                &sock,
                "--maxclients",
                &maxclients,
                "--hz",
                "10",
            ],
        );
        Self {
            _server: server,
            socket,
        }
    }

    fn conn(&self) -> Conn {
        Conn::open(&self.socket).expect("connect to the server's Unix socket")
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
    }
}

const TTL_MS: &str = "3600000";

thread_local! {
    /// The server kind of this run (`--server`).
    static KIND: std::cell::Cell<Kind> = const { std::cell::Cell::new(Kind::Redis) };
}

/// A row of the held-locks curve.
struct HeldRow {
    n: u64,
    acquire_us: f64,
    set_us: f64,
    release_us: f64,
    del_us: f64,
    lock_bytes: f64,
    key_bytes: f64,
}

/// Fills `lk` with locks and `sk` with string keys up to each size, and at each measures a batch
/// of grants on fresh keys (then released, so the count stays) on both, interleaved.
fn held_locks(sizes: &[u64], reps: usize, batch: u64) -> Vec<HeldRow> {
    let lk = Target::start("locks", 1000);
    let sk = Target::start("strings", 1000);
    let (mut lc, mut sc) = (lk.conn(), sk.conn());
    let base_l = lc.info_field("memory", "used_memory");
    let base_s = sc.info_field("memory", "used_memory");
    let mut rows = Vec::new();
    let mut filled = 0u64;
    for &n in sizes {
        let start = Instant::now();
        let range = filled..n;
        lc.pipeline(
            range.clone().map(|i| {
                vec![
                    b"PYLOCK.ACQUIRE".to_vec(),
                    format!("lk:{i}").into_bytes(),
                    TTL_MS.into(),
                ]
            }),
            1000,
            ok,
        );
        sc.pipeline(
            range.map(|i| {
                vec![
                    b"SET".to_vec(),
                    format!("lk:{i}").into_bytes(),
                    uuid::Uuid::new_v4().to_string().into_bytes(),
                    b"PX".to_vec(),
                    TTL_MS.into(),
                ]
            }),
            1000,
            ok,
        );
        filled = n;
        assert_eq!(lc.call(&["DBSIZE"]).int() as u64, n, "locks filled");
        assert_eq!(sc.call(&["DBSIZE"]).int() as u64, n, "string keys filled");
        let lock_bytes = (lc.info_field("memory", "used_memory") - base_l) / n as f64;
        let key_bytes = (sc.info_field("memory", "used_memory") - base_s) / n as f64;
        let (mut acq, mut set, mut rel, mut del) = (vec![], vec![], vec![], vec![]);
        for _ in 0..reps {
            let probe = |i: u64| format!("probe:{i}").into_bytes();
            lc.call(&["CONFIG", "RESETSTAT"]);
            lc.pipeline(
                (0..batch).map(|i| {
                    vec![
                        b"PYLOCK.ACQUIRE".to_vec(),
                        probe(i),
                        TTL_MS.into(),
                        b"LEASE".to_vec(),
                        b"p".to_vec(),
                    ]
                }),
                1000,
                ok,
            );
            lc.pipeline(
                (0..batch).map(|i| vec![b"PYLOCK.RELEASE".to_vec(), probe(i), b"p".to_vec()]),
                1000,
                ok,
            );
            acq.push(lc.usec_per_call("pylock.acquire"));
            rel.push(lc.usec_per_call("pylock.release"));
            sc.call(&["CONFIG", "RESETSTAT"]);
            sc.pipeline(
                (0..batch).map(|i| {
                    vec![
                        b"SET".to_vec(),
                        probe(i),
                        b"p".to_vec(),
                        b"NX".to_vec(),
                        b"PX".to_vec(),
                        TTL_MS.into(),
                    ]
                }),
                1000,
                ok,
            );
            sc.pipeline(
                (0..batch).map(|i| vec![b"DEL".to_vec(), probe(i)]),
                1000,
                ok,
            );
            set.push(sc.usec_per_call("set"));
            del.push(sc.usec_per_call("del"));
        }
        let row = HeldRow {
            n,
            acquire_us: median(acq),
            set_us: median(set),
            release_us: median(rel),
            del_us: median(del),
            lock_bytes,
            key_bytes,
        };
        println!(
            "  {n:>9} held: ACQUIRE {:.2} µs / SET NX PX {:.2} µs, RELEASE {:.2} / DEL {:.2} µs, \
             {:.1} B/lock / {:.1} B/key ({:.0} s)",
            row.acquire_us,
            row.set_us,
            row.release_us,
            row.del_us,
            row.lock_bytes,
            row.key_bytes,
            start.elapsed().as_secs_f64()
        );
        rows.push(row);
    }
    rows
}

/// A row of the waiters-on-one-key curve.
struct QueueRow {
    waiters: u64,
    lock_p50_us: f64,
    lock_p99_us: f64,
    lock_cpu_us: f64,
    list_p50_us: f64,
    list_p99_us: f64,
    list_cpu_us: f64,
}

/// A chain of hand-offs with `w` clients queued on one key: the holder releases, the longest
/// waiter is granted, and the former holder queues again at the back. FIFO makes the next
/// holder known, so one thread drives it: the latency is from the release being sent to the
/// grant being read by the next holder.
fn lock_chain(t: &Target, w: u64, grants: u64) -> (Vec<f64>, f64) {
    let mut ctl = t.conn();
    let key = format!("chain:{w}");
    let mut seq = 0u64;
    // Each wait names a fresh lease, as the clients do (`LEASE <uuid>`).
    let mut wait_on = |c: &mut Conn| {
        seq += 1;
        let lease = format!("w-{seq}");
        c.queue(&[
            b"PYLOCK.ACQUIRE",
            key.as_bytes(),
            b"60000",
            b"LEASE",
            lease.as_bytes(),
            b"BLOCK",
            b"600000",
        ]);
        c.flush();
    };
    let mut conns: Vec<Conn> = (0..=w).map(|_| t.conn()).collect();
    // conns[0] holds; the others queue in order.
    let mut holder = conns[0].call(&["PYLOCK.ACQUIRE", &key, "60000"]).lease_id();
    let mut queue: VecDeque<usize> = VecDeque::new();
    for (i, c) in conns.iter_mut().enumerate().skip(1) {
        wait_on(c);
        queue.push_back(i);
    }
    wait_for(&mut ctl, "pylock", "pylock_waiting", w);
    let mut current = 0usize;
    let mut lat = Vec::with_capacity(grants as usize);
    let cpu0 = ctl.cpu();
    for _ in 0..grants {
        let sent = Instant::now();
        let release: Vec<&[u8]> = vec![b"PYLOCK.RELEASE", key.as_bytes(), &holder];
        conns[current].queue(&release);
        conns[current].flush();
        let next = queue.pop_front().expect("a waiter");
        let granted = conns[next].read();
        lat.push(sent.elapsed().as_secs_f64() * 1e6);
        assert_eq!(conns[current].read(), Reply::Int(1), "release");
        wait_on(&mut conns[current]);
        queue.push_back(current);
        holder = granted.lease_id();
        current = next;
    }
    let cpu = (ctl.cpu() - cpu0) / grants as f64 * 1e6;
    drop(conns);
    wait_for(&mut ctl, "pylock", "pylock_waiting", 0);
    ctl.call(&["DEL", &key]);
    (lat, cpu)
}

/// The same chain with a token passed through a list: the holder `RPUSH`es it, the longest
/// `BLPOP` waiter gets it, and the former holder blocks again.
fn list_chain(t: &Target, w: u64, grants: u64) -> (Vec<f64>, f64) {
    let mut ctl = t.conn();
    let key = format!("list:{w}");
    let blpop = ["BLPOP", key.as_str(), "600"];
    let mut conns: Vec<Conn> = (0..=w).map(|_| t.conn()).collect();
    let mut queue: VecDeque<usize> = VecDeque::new();
    for (i, c) in conns.iter_mut().enumerate().skip(1) {
        let args: Vec<&[u8]> = blpop.iter().map(|a| a.as_bytes()).collect();
        c.queue(&args);
        c.flush();
        queue.push_back(i);
    }
    wait_for(&mut ctl, "clients", "blocked_clients", w);
    let mut current = 0usize;
    let mut lat = Vec::with_capacity(grants as usize);
    let cpu0 = ctl.cpu();
    for _ in 0..grants {
        let sent = Instant::now();
        let push: Vec<&[u8]> = vec![b"RPUSH", key.as_bytes(), b"token"];
        conns[current].queue(&push);
        conns[current].flush();
        let next = queue.pop_front().expect("a waiter");
        let got = conns[next].read();
        lat.push(sent.elapsed().as_secs_f64() * 1e6);
        assert!(matches!(got, Reply::Array(Some(_))), "BLPOP reply {got:?}");
        assert!(matches!(conns[current].read(), Reply::Int(_)), "RPUSH");
        let args: Vec<&[u8]> = blpop.iter().map(|a| a.as_bytes()).collect();
        conns[current].queue(&args);
        conns[current].flush();
        queue.push_back(current);
        current = next;
    }
    let cpu = (ctl.cpu() - cpu0) / grants as f64 * 1e6;
    drop(conns);
    wait_for(&mut ctl, "clients", "blocked_clients", 0);
    ctl.call(&["DEL", &key]);
    (lat, cpu)
}

fn wait_for(ctl: &mut Conn, section: &str, field: &str, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let now = ctl.info_field(section, field) as u64;
        if now == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{section} {field} stuck at {now}, want {want}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn waiters_on_one_key(sizes: &[u64], reps: usize, grants: u64, maxclients: u64) -> Vec<QueueRow> {
    let t = Target::start("queue", maxclients);
    let mut rows = Vec::new();
    for &w in sizes {
        let start = Instant::now();
        let (mut lp50, mut lp99, mut lcpu, mut bp50, mut bp99, mut bcpu) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        for _ in 0..reps {
            let (mut lat, cpu) = lock_chain(&t, w, grants);
            lp50.push(quantile(&mut lat, 0.5));
            lp99.push(quantile(&mut lat, 0.99));
            lcpu.push(cpu);
            let (mut lat, cpu) = list_chain(&t, w, grants);
            bp50.push(quantile(&mut lat, 0.5));
            bp99.push(quantile(&mut lat, 0.99));
            bcpu.push(cpu);
        }
        let row = QueueRow {
            waiters: w,
            lock_p50_us: median(lp50),
            lock_p99_us: median(lp99),
            lock_cpu_us: median(lcpu),
            list_p50_us: median(bp50),
            list_p99_us: median(bp99),
            list_cpu_us: median(bcpu),
        };
        println!(
            "  {w:>6} waiters: hand-off p50 {:.0} µs p99 {:.0} µs, {:.1} µs CPU/grant; \
             BLPOP p50 {:.0} µs p99 {:.0} µs, {:.1} µs CPU/pass ({:.0} s)",
            row.lock_p50_us,
            row.lock_p99_us,
            row.lock_cpu_us,
            row.list_p50_us,
            row.list_p99_us,
            row.list_cpu_us,
            start.elapsed().as_secs_f64()
        );
        rows.push(row);
    }
    rows
}

/// What one blocked client costs, with `n` of them on `n` keys.
struct SpreadRow {
    n: u64,
    idle_bytes: f64,
    lock_bytes: f64,
    list_bytes: f64,
    lock_serve_us: f64,
    list_serve_us: f64,
    lock_serve_s: f64,
    list_serve_s: f64,
}

fn open_many(t: &Target, n: u64) -> Vec<Conn> {
    (0..n)
        .map(|i| {
            t.conn_checked().unwrap_or_else(|e| {
                panic!("connection {i} of {n}: {e} (raise the open-file limit)")
            })
        })
        .collect()
}

impl Target {
    fn conn_checked(&self) -> std::io::Result<Conn> {
        Conn::open(&self.socket)
    }
}

fn spread(n: u64, maxclients: u64) -> SpreadRow {
    let t = Target::start("spread", maxclients);
    let mut ctl = t.conn();
    // Each key held, so every ACQUIRE … BLOCK waits.
    ctl.pipeline(
        (0..n).map(|i| {
            vec![
                b"PYLOCK.ACQUIRE".to_vec(),
                format!("sp:{i}").into_bytes(),
                TTL_MS.into(),
                b"LEASE".to_vec(),
                b"h".to_vec(),
            ]
        }),
        1000,
        ok,
    );
    let mem = |c: &mut Conn| c.info_field("memory", "used_memory");

    // Idle connections: what a connection costs before it waits for anything.
    let m0 = mem(&mut ctl);
    let mut idle = open_many(&t, n);
    for c in &mut idle {
        c.queue(&[b"PING"]);
        c.flush();
    }
    for c in &mut idle {
        assert_eq!(c.read(), Reply::Simple("PONG".into()));
    }
    let idle_bytes = (mem(&mut ctl) - m0) / n as f64;
    drop(idle);
    wait_until_clients(&mut ctl, 1);

    // BLOCK waiters, one per lock.
    let m0 = mem(&mut ctl);
    let mut waiters = open_many(&t, n);
    for (i, c) in waiters.iter_mut().enumerate() {
        let key = format!("sp:{i}");
        c.queue(&[
            b"PYLOCK.ACQUIRE",
            key.as_bytes(),
            b"60000",
            b"BLOCK",
            b"600000",
        ]);
        c.flush();
    }
    wait_for(&mut ctl, "pylock", "pylock_waiting", n);
    let lock_bytes = (mem(&mut ctl) - m0) / n as f64;
    let cpu0 = ctl.cpu();
    let start = Instant::now();
    ctl.pipeline(
        (0..n).map(|i| {
            vec![
                b"PYLOCK.RELEASE".to_vec(),
                format!("sp:{i}").into_bytes(),
                b"h".to_vec(),
            ]
        }),
        1000,
        ok,
    );
    for c in &mut waiters {
        let r = c.read();
        assert!(matches!(r, Reply::Array(Some(_))), "grant {r:?}");
    }
    let lock_serve_s = start.elapsed().as_secs_f64();
    let lock_serve_us = (ctl.cpu() - cpu0) / n as f64 * 1e6;
    drop(waiters);
    wait_until_clients(&mut ctl, 1);
    ctl.call(&["FLUSHALL"]);

    // BLPOP waiters, one per empty list.
    let m0 = mem(&mut ctl);
    let mut waiters = open_many(&t, n);
    for (i, c) in waiters.iter_mut().enumerate() {
        let key = format!("bl:{i}");
        c.queue(&[b"BLPOP", key.as_bytes(), b"600"]);
        c.flush();
    }
    wait_for(&mut ctl, "clients", "blocked_clients", n);
    let list_bytes = (mem(&mut ctl) - m0) / n as f64;
    let cpu0 = ctl.cpu();
    let start = Instant::now();
    ctl.pipeline(
        (0..n).map(|i| {
            vec![
                b"RPUSH".to_vec(),
                format!("bl:{i}").into_bytes(),
                b"x".to_vec(),
            ]
        }),
        1000,
        |r| assert!(matches!(r, Reply::Int(_)), "RPUSH {r:?}"),
    );
    for c in &mut waiters {
        let r = c.read();
        assert!(matches!(r, Reply::Array(Some(_))), "BLPOP {r:?}");
    }
    let list_serve_s = start.elapsed().as_secs_f64();
    let list_serve_us = (ctl.cpu() - cpu0) / n as f64 * 1e6;
    drop(waiters);
    let row = SpreadRow {
        n,
        idle_bytes,
        lock_bytes,
        list_bytes,
        lock_serve_us,
        list_serve_us,
        lock_serve_s,
        list_serve_s,
    };
    println!(
        "  {n} waiters on {n} keys: idle connection {:.0} B, BLOCK waiter {:.0} B, BLPOP waiter \
         {:.0} B; serving all: {:.2} µs CPU/grant ({:.2} s) vs {:.2} µs CPU/BLPOP ({:.2} s)",
        row.idle_bytes,
        row.lock_bytes,
        row.list_bytes,
        row.lock_serve_us,
        row.lock_serve_s,
        row.list_serve_us,
        row.list_serve_s
    );
    row
}

fn wait_until_clients(ctl: &mut Conn, want: u64) {
    wait_for(ctl, "clients", "connected_clients", want);
}

const FONT_PATHS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

fn load_font() -> Result<(), String> {
    let bytes = FONT_PATHS
        .iter()
        .find_map(|p| std::fs::read(p).ok())
        .ok_or("DejaVuSans.ttf not found (apt-get install fonts-dejavu-core)")?;
    register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(bytes.into_boxed_slice()),
    )
    .map_err(|_| "DejaVuSans.ttf is not a usable font".to_string())
}

/// One panel: a log-scale x axis and a few series of (x, y) points.
struct Panel<'a> {
    title: &'a str,
    x_desc: &'a str,
    y_desc: &'a str,
    series: Vec<(&'a str, Vec<(f64, f64)>)>,
}

fn plot(path: &str, caption: &str, panels: &[Panel<'_>]) -> Result<(), String> {
    load_font()?;
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let root = BitMapBackend::new(path, (700 * panels.len() as u32, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let root = root
        .titled(caption, ("sans-serif", 20))
        .map_err(|e| err(&e))?;
    let colors = [
        RGBColor(46, 100, 180),
        RGBColor(200, 90, 40),
        RGBColor(90, 150, 70),
        RGBColor(130, 80, 160),
    ];
    for (area, panel) in root.split_evenly((1, panels.len())).iter().zip(panels) {
        let points = panel.series.iter().flat_map(|(_, p)| p.iter());
        let (xmin, xmax) = points
            .clone()
            .fold((f64::MAX, f64::MIN), |(a, b), &(x, _)| (a.min(x), b.max(x)));
        let ymax = points.fold(0f64, |m, &(_, y)| if y.is_finite() { m.max(y) } else { m }) * 1.15;
        let mut chart = ChartBuilder::on(area)
            .caption(panel.title, ("sans-serif", 16))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d((xmin * 0.8..xmax * 1.25).log_scale(), 0f64..ymax.max(1e-9))
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc(panel.x_desc)
            .y_desc(panel.y_desc)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(|e| err(&e))?;
        for (i, (name, pts)) in panel.series.iter().enumerate() {
            let color = colors[i % colors.len()];
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
                .map_err(|e| err(&e))?
                .label(*name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| err(&e))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))
}

fn decades(from: u64, to: u64) -> Vec<u64> {
    let mut v = Vec::new();
    let mut n = from;
    while n <= to {
        v.push(n);
        n *= 10;
    }
    v
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench-scaling: {e}");
            std::process::exit(2);
        }
    };
    KIND.with(|k| k.set(args.kind));
    let need = args.spread.max(args.max_waiters) + 1000;
    let fds = raise_fd_limit(need * 2 + 1000);
    let started = Instant::now();
    let version = {
        let t = Target::start("version", 1000);
        let v = t.conn().info("server");
        match args.kind {
            Kind::Redis => format!(
                "Redis {}",
                info_value_str(&v, "redis_version").unwrap_or_default()
            ),
            Kind::Valkey => format!(
                "Valkey {}",
                info_value_str(&v, "valkey_version")
                    .or_else(|| info_value_str(&v, "server_version"))
                    .unwrap_or_default()
            ),
        }
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let header = format!("{version}, {cores} cores ({cpu}), Unix socket; open-file limit {fds}");
    println!("bench-scaling: {header}");
    let (reps, batch, grants) = if args.quick {
        (1, 5_000, 300)
    } else {
        (3, 20_000, 3_000)
    };
    // Every waiter is a connection in this process and one in the server's, each bounded by
    // the open-file limit (which the server inherits); keep some for files and the control
    // connections.
    let cap = fds.saturating_sub(500);
    let max_waiters = args.max_waiters.min(cap);
    let spread_n = args.spread.min(cap);

    println!("held locks: ACQUIRE/RELEASE on fresh keys with n locks held, against SET NX PX/DEL");
    let held = held_locks(&decades(1000, args.max_locks), reps, batch);
    println!("waiters on one key: a chain of {grants} hand-offs with w clients queued");
    let queue = waiters_on_one_key(&decades(1, max_waiters), reps, grants, max_waiters + 100);
    println!("{spread_n} waiters spread over {spread_n} keys");
    let spread = spread(spread_n, spread_n + 100);

    let mut md = String::new();
    md.push_str(&format!(
        "Run: {header}; medians of {reps}; {:.0} s\n\n",
        started.elapsed().as_secs_f64()
    ));
    md.push_str("#### Held locks: server time and memory against the number held\n\n");
    md.push_str("| locks held | ACQUIRE | SET NX PX | ratio | RELEASE | DEL | ratio | memory per lock | per string key | ratio |\n");
    md.push_str("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for r in &held {
        md.push_str(&format!(
            "| {} | {:.2} µs | {:.2} µs | {:.2}× | {:.2} µs | {:.2} µs | {:.2}× | {:.1} B | {:.1} B | {:.2}× |\n",
            r.n,
            r.acquire_us,
            r.set_us,
            r.acquire_us / r.set_us,
            r.release_us,
            r.del_us,
            r.release_us / r.del_us,
            r.lock_bytes,
            r.key_bytes,
            r.lock_bytes / r.key_bytes
        ));
    }
    md.push_str(&format!(
        "\n#### Waiters on one key: a chain of {grants} hand-offs\n\n\
         | waiters | hand-off p50 | p99 | server CPU per grant | BLPOP pass p50 | p99 | server CPU per pass | CPU ratio |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- |\n"
    ));
    for r in &queue {
        md.push_str(&format!(
            "| {} | {:.0} µs | {:.0} µs | {:.1} µs | {:.0} µs | {:.0} µs | {:.1} µs | {:.2}× |\n",
            r.waiters,
            r.lock_p50_us,
            r.lock_p99_us,
            r.lock_cpu_us,
            r.list_p50_us,
            r.list_p99_us,
            r.list_cpu_us,
            r.lock_cpu_us / r.list_cpu_us
        ));
    }
    md.push_str(&format!(
        "\n#### {n} blocked clients on {n} keys\n\n\
         | | per client | serving all: CPU per grant | wall |\n| --- | --- | --- | --- |\n\
         | idle connection (after PING) | {:.0} B | – | – |\n\
         | `PYLOCK.ACQUIRE … BLOCK` waiter | {:.0} B | {:.2} µs | {:.2} s |\n\
         | `BLPOP` waiter | {:.0} B | {:.2} µs | {:.2} s |\n",
        spread.idle_bytes,
        spread.lock_bytes,
        spread.lock_serve_us,
        spread.lock_serve_s,
        spread.list_bytes,
        spread.list_serve_us,
        spread.list_serve_s,
        n = spread.n,
    ));
    print!("\n{md}");
    if let Some(dir) = std::path::Path::new(&args.markdown).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    match std::fs::write(&args.markdown, &md) {
        Ok(()) => println!("tables written to {}", args.markdown),
        Err(e) => eprintln!("bench-scaling: writing {}: {e}", args.markdown),
    }
    let _ = std::fs::create_dir_all(&args.plot_dir);
    let xy =
        |f: &dyn Fn(&HeldRow) -> f64| held.iter().map(|r| (r.n as f64, f(r))).collect::<Vec<_>>();
    let qy = |f: &dyn Fn(&QueueRow) -> f64| {
        queue
            .iter()
            .map(|r| (r.waiters as f64, f(r)))
            .collect::<Vec<_>>()
    };
    let path = format!("{}/benchmark-scaling.png", args.plot_dir);
    let result = plot(
        &path,
        &format!("How the costs grow (scripts/bench-scaling): {header}"),
        &[
            Panel {
                title: "server time per call vs locks held",
                x_desc: "locks (or string keys) held",
                y_desc: "µs per call",
                series: vec![
                    ("PYLOCK.ACQUIRE", xy(&|r| r.acquire_us)),
                    ("SET NX PX", xy(&|r| r.set_us)),
                    ("PYLOCK.RELEASE", xy(&|r| r.release_us)),
                    ("DEL", xy(&|r| r.del_us)),
                ],
            },
            Panel {
                title: "memory per key vs keys held",
                x_desc: "locks (or string keys) held",
                y_desc: "bytes per key",
                series: vec![
                    ("lock", xy(&|r| r.lock_bytes)),
                    ("SET uuid PX", xy(&|r| r.key_bytes)),
                ],
            },
            Panel {
                title: "hand-off vs waiters on one key",
                x_desc: "clients waiting on the key",
                y_desc: "server CPU µs per grant / pass",
                series: vec![
                    ("ACQUIRE … BLOCK hand-off", qy(&|r| r.lock_cpu_us)),
                    ("BLPOP/RPUSH pass", qy(&|r| r.list_cpu_us)),
                ],
            },
        ],
    );
    match result {
        Ok(()) => println!("plot written to {path}"),
        Err(e) => eprintln!("bench-scaling: plot {path}: {e}"),
    }
}

fn info_value_str(text: &str, field: &str) -> Option<String> {
    let prefix = format!("{field}:");
    text.lines()
        .find_map(|l| l.trim().strip_prefix(&prefix).map(|v| v.trim().to_string()))
}
