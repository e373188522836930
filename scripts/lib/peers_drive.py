"""pylocks against the lock libraries users pick instead, under contention (scripts/bench-peers).

W worker processes fight for one hot lock. Each loops: take the lock (waiting for it), GET a
counter, sleep for the critical section, SET counter + 1, release. Every library runs the same
loop against the same server, in the same run, interleaved: for each cell (W, section) and each
repeat, every library once, in an order that rotates between repeats. The figures are the
medians over the repeats.

Per library and cell:

- grants/s: grants made inside the timed window, divided by its length;
- share: that rate over the same library's rate with one worker (no contention);
- Jain's fairness index over the workers' grant counts, (sum x)^2 / (n * sum x^2);
- wait p50 / p99 / max: from the call to acquire until it returns, for grants in the window;
- server CPU per grant: used_cpu_sys + used_cpu_user (INFO cpu) over the run, per grant;
- client CPU per grant: the workers' own rusage, per grant;
- round trips per grant (the client's writes: a command or a whole pipeline), commands per
  grant (INFO commandstats after CONFIG RESETSTAT), and the server's context
  switches and read/write system calls per grant (/proc/PID/status and /proc/PID/io);
- lost updates: grants minus the counter. Anything but 0 fails the run.

A worker that is waiting when the window closes still gets its grant and finishes its cycle
(the queue drains), so every wait ends; those grants count for the counter check and the
per-grant costs but not for the rate.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import math
import multiprocessing as mp
import os
import platform
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Tuple

import redis

LOCK = "peers-lock"
COUNTER = "peers:counter"
TTL_S = 60
# A waiter gives up after this long (the run fails then): far beyond any cell's drain time.
WAIT_S = 60

# The release script every "SET NX then compare-and-delete" lock uses (redis-py's own).
RELEASE_LUA = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end
"""


# --- the libraries -------------------------------------------------------------------------
#
# Each maker takes a connection and returns an object with acquire() and release() (the
# standard loop), or with cycle(section_s) -> (t_call, t_grant) for a variant that changes the
# loop itself (pipelining). Makers run inside the worker process.


class PylocksPy:
    """pylocks' Python client: acquire(wait=...) is PYLOCK.ACQUIRE ... BLOCK (server-side FIFO)."""

    def __init__(self, r: redis.Redis) -> None:
        from pylocks.blocking import RedisLockFactory

        self.factory = RedisLockFactory(r, prefix=LOCK, ttl=TTL_S, arity=0)
        self.handle = None

    def acquire(self) -> None:
        self.handle = self.factory.acquire(wait=WAIT_S)

    def release(self) -> None:
        self.handle.release()


class PylocksThen:
    """pylocks' Python client with its pipelining: acquire(wait=..., then=...) sends the GET in the
    ACQUIRE's round trip (the server runs it once the lock is granted), release(before=...) the SET
    in the RELEASE's. The standard loop's commands in two round trips a cycle instead of four."""

    def __init__(self, r: redis.Redis) -> None:
        from pylocks.blocking import RedisLockFactory

        self.factory = RedisLockFactory(r, prefix=LOCK, ttl=TTL_S, arity=0)

    def cycle(self, section_s: float) -> Tuple[float, float]:
        t0 = time.monotonic()
        handle = self.factory.acquire(wait=WAIT_S, then=lambda p: p.get(COUNTER))
        t1 = time.monotonic()
        value = int(handle.then_results[0] or 0)
        if section_s:
            time.sleep(section_s)
        handle.release(before=lambda p: p.set(COUNTER, value + 1))
        return t0, t1


class PylocksPipelined:
    """The prototype of what pylocks-then now does through the client's API, written by hand on a
    bare pipeline: the GET rides in the ACQUIRE's pipeline (it runs when the grant does) and the
    SET in the RELEASE's. Two round trips a cycle instead of four."""

    def __init__(self, r: redis.Redis) -> None:
        import uuid

        self.r = r
        self.uuid = uuid
        self.key = LOCK

    def cycle(self, section_s: float) -> Tuple[float, float]:
        lease = str(self.uuid.uuid4())
        p = self.r.pipeline(transaction=False)
        p.execute_command("PYLOCK.ACQUIRE", self.key, TTL_S * 1000, "LEASE", lease, "BLOCK", WAIT_S * 1000)
        p.get(COUNTER)
        t0 = time.monotonic()
        grant, value = p.execute()
        t1 = time.monotonic()
        if grant is None:
            raise RuntimeError("ACQUIRE timed out")
        if section_s:
            time.sleep(section_s)
        p = self.r.pipeline(transaction=False)
        p.set(COUNTER, int(value or 0) + 1)
        p.execute_command("PYLOCK.RELEASE", self.key, lease)
        _, released = p.execute()
        if released != 1:
            raise RuntimeError(f"RELEASE replied {released!r}")
        return t0, t1


class PylocksChained(PylocksPipelined):
    """A further prototype: the release carries the next acquire. One pipeline a cycle,
    [SET counter, RELEASE, ACQUIRE … BLOCK, GET counter]: the hand-off, the worker's place at the
    back of the queue and its next read all in one write, so one round trip a grant."""

    def __init__(self, r: redis.Redis) -> None:
        super().__init__(r)
        self.held: Any = None  # (lease, value) of the grant not yet released

    def _pipe(self) -> Any:
        p = self.r.pipeline(transaction=False)
        if self.held is not None:
            lease, value = self.held
            p.set(COUNTER, int(value or 0) + 1)
            p.execute_command("PYLOCK.RELEASE", self.key, lease)
        return p

    def cycle(self, section_s: float) -> Tuple[float, float]:
        lease = str(self.uuid.uuid4())
        p = self._pipe()
        p.execute_command("PYLOCK.ACQUIRE", self.key, TTL_S * 1000, "LEASE", lease, "BLOCK", WAIT_S * 1000)
        p.get(COUNTER)
        t0 = time.monotonic()
        replies = p.execute()
        t1 = time.monotonic()
        if self.held is not None and replies[1] != 1:
            raise RuntimeError(f"RELEASE replied {replies[1]!r}")
        if replies[-2] is None:
            raise RuntimeError("ACQUIRE timed out")
        self.held = (lease, replies[-1])
        if section_s:
            time.sleep(section_s)
        return t0, t1

    def finish(self) -> None:
        if self.held is not None:
            _, released = self._pipe().execute()
            if released != 1:
                raise RuntimeError(f"RELEASE replied {released!r}")
            self.held = None


class RedisPyLock:
    """redis-py's Lock: SET NX PX, and when held, sleep `sleep` seconds and try again."""

    def __init__(self, r: redis.Redis, sleep: float) -> None:
        self.lock = r.lock(LOCK, timeout=TTL_S, sleep=sleep, blocking_timeout=WAIT_S)

    def acquire(self) -> None:
        if not self.lock.acquire():
            raise RuntimeError("redis-py Lock timed out")

    def release(self) -> None:
        self.lock.release()


class RedisPyLockPipelined:
    """redis-py's Lock (0.1 s sleep) with the same pipelining as PylocksPipelined gets: the GET
    after a SET NX in one round trip, the SET and the release script in another."""

    def __init__(self, r: redis.Redis) -> None:
        import uuid

        self.r = r
        self.uuid = uuid
        self.release_sha = r.script_load(RELEASE_LUA)

    def cycle(self, section_s: float) -> Tuple[float, float]:
        token = self.uuid.uuid1().hex
        t0 = time.monotonic()
        deadline = t0 + WAIT_S
        while True:
            p = self.r.pipeline(transaction=False)
            p.set(LOCK, token, nx=True, px=TTL_S * 1000)
            p.get(COUNTER)
            got, value = p.execute()
            if got:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("timed out")
            time.sleep(0.1)
        t1 = time.monotonic()
        if section_s:
            time.sleep(section_s)
        p = self.r.pipeline(transaction=False)
        p.set(COUNTER, int(value or 0) + 1)
        p.evalsha(self.release_sha, 1, LOCK, token)
        _, released = p.execute()
        if released != 1:
            raise RuntimeError(f"release replied {released!r}")
        return t0, t1


class PythonRedisLock:
    """python-redis-lock: SET NX EX; when held, BLPOP a signal list that the release script
    pushes to (one waiter wakes, then races any newcomer with SET NX)."""

    def __init__(self, r: redis.Redis) -> None:
        import redis_lock

        self.lock = redis_lock.Lock(r, LOCK, expire=TTL_S)

    def acquire(self) -> None:
        if not self.lock.acquire(blocking=True, timeout=WAIT_S):
            raise RuntimeError("python-redis-lock timed out")

    def release(self) -> None:
        self.lock.release()


class PotteryRedlock:
    """pottery's Redlock against one master: SET NX PX through a thread pool, and when held,
    sleep a random 0 to 0.2 s and try again."""

    def __init__(self, r: redis.Redis) -> None:
        from pottery import Redlock

        self.lock = Redlock(key=LOCK, masters={r}, auto_release_time=TTL_S)

    def acquire(self) -> None:
        if not self.lock.acquire(blocking=True, timeout=WAIT_S):
            raise RuntimeError("pottery Redlock timed out")

    def release(self) -> None:
        self.lock.release()


LIBRARIES: Dict[str, Tuple[str, Callable[[redis.Redis], Any]]] = {
    "pylocks": ("pylocks (Python, acquire(wait=…): BLOCK, FIFO hand-off)", PylocksPy),
    "pylocks-then": ("pylocks (Python), acquire(wait=…, then=GET), release(before=SET): 2 round trips a cycle",
                     PylocksThen),
    "redis-py": ("redis-py Lock (0.1 s polling sleep, the default)", lambda r: RedisPyLock(r, 0.1)),
    "redis-py-1ms": ("redis-py Lock (1 ms polling sleep)", lambda r: RedisPyLock(r, 0.001)),
    "python-redis-lock": ("python-redis-lock (SET NX + BLPOP signal)", PythonRedisLock),
    "pottery": ("pottery Redlock, one master (0–0.2 s random retry)", PotteryRedlock),
    "pylocks-pipe": ("prototype: pylocks commands, GET pipelined with ACQUIRE, SET with RELEASE",
                     PylocksPipelined),
    "pylocks-chain": ("prototype: one pipeline a cycle, SET + RELEASE + next ACQUIRE … BLOCK + GET",
                      PylocksChained),
    "redis-py-pipe": ("prototype: redis-py Lock 0.1 s, GET pipelined with SET NX, SET with release",
                      RedisPyLockPipelined),
}
DEFAULT_LIBS = ["pylocks", "pylocks-then", "redis-py", "redis-py-1ms", "python-redis-lock", "pottery"]
# What pylocks is compared with: the libraries as they ship (the prototypes are not peers).
PEERS = ["redis-py", "redis-py-1ms", "python-redis-lock", "pottery"]


# --- a worker ------------------------------------------------------------------------------


_SENDS = [0]


def _count_sends() -> None:
    """Counts the client's writes (a command, or a whole pipeline): its round trips."""
    conn = redis.connection.AbstractConnection
    send = conn.send_packed_command

    def counted(self: Any, command: Any, check_health: bool = True) -> None:
        _SENDS[0] += 1
        send(self, command, check_health)

    conn.send_packed_command = counted


def worker(port: int, lib: str, section_s: float, secs: float, ready: Any, go: Any, start: Any,
           out: Any) -> None:
    try:
        _count_sends()
        r = redis.Redis(host="127.0.0.1", port=port)
        r.ping()
        lock = LIBRARIES[lib][1](r)
        ready.put(os.getpid())
        go.wait(30)
        t_start = start.value
        t_end = t_start + secs
        while time.monotonic() < t_start:
            time.sleep(max(0.0, t_start - time.monotonic()))
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        sends0 = _SENDS[0]
        waits: List[float] = []
        grants = 0
        cycle = getattr(lock, "cycle", None)
        while True:
            if time.monotonic() >= t_end:
                break
            if cycle is not None:
                t0, t1 = cycle(section_s)
            else:
                t0 = time.monotonic()
                lock.acquire()
                t1 = time.monotonic()
                value = r.get(COUNTER)
                if section_s:
                    time.sleep(section_s)
                r.set(COUNTER, int(value or 0) + 1)
                lock.release()
            grants += 1
            if t1 < t_end:
                waits.append(t1 - t0)
        finish = getattr(lock, "finish", None)
        if finish is not None:
            finish()
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        out.put({"pid": os.getpid(), "waits": waits, "grants": grants, "cpu": cpu,
                 "sends": _SENDS[0] - sends0})
    except BaseException as exc:  # noqa: BLE001 - reported to the driver, which fails the run
        out.put({"pid": os.getpid(), "error": f"{type(exc).__name__}: {exc}"})


# --- the server ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A redis-server (or valkey-server) with the module, on loopback, stopped on close()."""

    def __init__(self, binary: str, module: str) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="pylock-peers-")
        self.log = os.path.join(self.dir, "server.log")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir, "--logfile", self.log, "--loadmodule", os.path.abspath(module)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        self.r = redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.r.ping()
                break
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.close()
                    sys.exit(f"server did not start; log: {self.log}")
                time.sleep(0.05)
        info = self.r.info("server")
        self.version = f"{'Valkey' if 'valkey' in os.path.basename(binary) else 'Redis'} " + str(
            info.get("valkey_version") or info["redis_version"])
        self.pid = int(info["process_id"])

    def cpu(self) -> float:
        c = self.r.info("cpu")
        return float(c["used_cpu_sys"]) + float(c["used_cpu_user"])

    def proc_counters(self) -> Dict[str, int]:
        """Context switches and read/write system calls of the server process so far."""
        out: Dict[str, int] = {}
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        k, v = line.split(":")
                        out[k] = int(v)
            with open(f"/proc/{self.pid}/io") as f:
                for line in f:
                    k, v = line.split(":")
                    if k in ("syscr", "syscw"):
                        out[k] = int(v)
        except OSError:
            pass
        return out

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.r.shutdown(nosave=True)
            except redis.RedisError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# --- one run -------------------------------------------------------------------------------


def jain(xs: List[int]) -> float:
    s = sum(xs)
    q = sum(x * x for x in xs)
    return (s * s) / (len(xs) * q) if q else 0.0


def pct(xs: List[float], p: float) -> float:
    if not xs:
        return math.nan
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, math.ceil(p / 100 * len(xs)) - 1))]


def run_once(server: Server, lib: str, workers: int, section_s: float, secs: float) -> Dict[str, Any]:
    ctx = mp.get_context("fork")
    ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    start = ctx.Value("d", 0.0)
    r = server.r
    r.delete(COUNTER, LOCK, "lock-signal:" + LOCK)
    procs = [ctx.Process(target=worker, args=(server.port, lib, section_s, secs, ready, go, start, out))
             for _ in range(workers)]
    for p in procs:
        p.start()
    results: List[Dict[str, Any]] = []
    try:
        for _ in procs:
            ready.get(timeout=30)
        r.config_resetstat()
        c0, p0 = server.cpu(), server.proc_counters()
        start.value = time.monotonic() + 0.05
        go.set()
        # Every worker stops by itself after the window plus the queue's drain.
        for _ in procs:
            results.append(out.get(timeout=secs + WAIT_S + 30))
        c1, p1 = server.cpu(), server.proc_counters()
        stats = r.info("commandstats")
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                os.kill(p.pid, signal.SIGKILL)
                p.join(5)
    errors = [x["error"] for x in results if "error" in x]
    if errors:
        sys.exit(f"{lib}, W={workers}: a worker failed: {errors[0]}")
    grants = sum(x["grants"] for x in results)
    counter = int(r.get(COUNTER) or 0)
    waits = [w for x in results for w in x["waits"]]
    in_window = [len(x["waits"]) for x in results]
    skip = ("info", "config|resetstat", "config")
    commands = {k[len("cmdstat_"):]: v["calls"] / grants for k, v in stats.items()
                if k[len("cmdstat_"):] not in skip}
    return {
        "lib": lib, "workers": workers, "section_ms": section_s * 1000,
        "rate": len(waits) / secs, "grants": grants, "lost": grants - counter,
        "jain": jain(in_window) if workers > 1 else 1.0,
        "p50": pct(waits, 50) * 1000, "p99": pct(waits, 99) * 1000, "max": max(waits, default=math.nan) * 1000,
        "server_cpu_us": (c1 - c0) / grants * 1e6,
        "client_cpu_us": sum(x["cpu"] for x in results) / grants * 1e6,
        "round_trips": sum(x["sends"] for x in results) / grants, "by_command": commands,
        "ctx_switches": (p1.get("voluntary_ctxt_switches", 0) - p0.get("voluntary_ctxt_switches", 0)
                         + p1.get("nonvoluntary_ctxt_switches", 0) - p0.get("nonvoluntary_ctxt_switches", 0))
        / grants,
        "syscalls": (p1.get("syscr", 0) - p0.get("syscr", 0) + p1.get("syscw", 0) - p0.get("syscw", 0)) / grants,
    }


def client_overhead(server: Server, libs: List[str], cycles: int, repeats: int) -> str:
    """One process, no contention: CPU and wall time of acquire + release alone, per cycle, for
    the libraries with a plain acquire/release (interleaved, medians over the repeats)."""
    r = redis.Redis(host="127.0.0.1", port=server.port)
    r.delete(LOCK)
    locks = {}
    for lib in libs:
        lock = LIBRARIES[lib][1](r)
        if not hasattr(lock, "cycle"):
            locks[lib] = lock
    got: Dict[str, List[Tuple[float, float, float]]] = {lib: [] for lib in locks}
    for rep in range(repeats):
        order = list(locks)[rep % len(locks):] + list(locks)[:rep % len(locks)]
        for lib in order:
            lock = locks[lib]
            for _ in range(200):
                lock.acquire()
                lock.release()
            c0 = server.cpu()
            t0, p0 = time.perf_counter(), time.process_time()
            for _ in range(cycles):
                lock.acquire()
                lock.release()
            t1, p1 = time.perf_counter(), time.process_time()
            c1 = server.cpu()
            got[lib].append(((p1 - p0) / cycles * 1e6, (t1 - t0) / cycles * 1e6, (c1 - c0) / cycles * 1e6))
    lines = [f"\n#### Uncontended acquire + release, one process ({cycles} cycles, medians of {repeats})\n",
             "| library | client CPU per cycle | wall per cycle | server CPU per cycle |",
             "| --- | --- | --- | --- |"]
    for lib, xs in got.items():
        lines.append(f"| {lib} | {med([x[0] for x in xs]):.1f} µs | {med([x[1] for x in xs]):.1f} µs "
                     f"| {med([x[2] for x in xs]):.1f} µs |")
    return "\n".join(lines)


# --- the report ----------------------------------------------------------------------------


def med(xs: List[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return statistics.median(xs) if xs else math.nan


def summarise(runs: List[Dict[str, Any]]) -> Dict[Tuple[str, int, float], Dict[str, Any]]:
    groups: Dict[Tuple[str, int, float], List[Dict[str, Any]]] = {}
    for x in runs:
        groups.setdefault((x["lib"], x["workers"], x["section_ms"]), []).append(x)
    out = {}
    for key, xs in groups.items():
        s = {k: med([x[k] for x in xs]) for k in
             ("rate", "jain", "p50", "p99", "max", "server_cpu_us", "client_cpu_us", "round_trips",
              "ctx_switches", "syscalls")}
        s["lost"] = sum(x["lost"] for x in xs)
        s["n"] = len(xs)
        cmds = sorted({c for x in xs for c in x["by_command"]})
        s["by_command"] = {c: med([x["by_command"].get(c, 0.0) for x in xs]) for c in cmds}
        out[key] = s
    return out


def fmt_ms(v: float) -> str:
    if math.isnan(v):
        return "–"
    return f"{v:.3f}" if v < 1 else f"{v:.1f}" if v < 100 else f"{v:.0f}"


def tables(summary: Dict[Tuple[str, int, float], Dict[str, Any]], libs: List[str], workers: List[int],
           sections: List[float]) -> str:
    lines = []
    for cs in sections:
        lines.append(f"\n#### Critical section {cs:g} ms\n")
        lines.append("| W | library | grants/s | share of 1 worker | Jain | wait p50 ms | wait p99 ms "
                     "| wait max ms | FIFO ideal p99 ms | server CPU/grant | client CPU/grant | round trips/grant "
                     "| lost |")
        lines.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for w in workers:
            for lib in libs:
                s = summary.get((lib, w, cs))
                if s is None:
                    continue
                one = summary.get((lib, 1, cs))
                share = f"{s['rate'] / one['rate']:.2f}" if one and one["rate"] else "–"
                # FIFO ideal wait: the W - 1 cycles ahead, at this library's own cycle time.
                ideal = (w - 1) * 1000 / s["rate"] if s["rate"] else math.nan
                lines.append(
                    f"| {w} | {lib} | {s['rate']:.0f} | {share} | {s['jain']:.3f} | {fmt_ms(s['p50'])} "
                    f"| {fmt_ms(s['p99'])} | {fmt_ms(s['max'])} | {fmt_ms(ideal)} | {s['server_cpu_us']:.0f} µs "
                    f"| {s['client_cpu_us']:.0f} µs | {s['round_trips']:.2f} | {s['lost']} |")
    return "\n".join(lines)


def costs_table(summary: Dict[Tuple[str, int, float], Dict[str, Any]], libs: List[str], w: int,
                cs: float) -> str:
    lines = [f"\n#### Where a grant's server time goes, W = {w}, {cs:g} ms section (per grant, medians)\n",
             "| library | grants/s | server CPU | server ctx switches | server read+write syscalls "
             "| commands (calls per grant; a script's inner calls count too) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for lib in libs:
        s = summary.get((lib, w, cs))
        if s is None:
            continue
        cmds = ", ".join(f"{c} {v:.2f}" for c, v in sorted(s["by_command"].items(), key=lambda kv: -kv[1])
                         if v >= 0.005)
        lines.append(f"| {lib} | {s['rate']:.0f} | {s['server_cpu_us']:.0f} µs | {s['ctx_switches']:.2f} "
                     f"| {s['syscalls']:.2f} | {cmds} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--server", default="redis-server")
    ap.add_argument("--module", default="target/release/libpylock.so")
    ap.add_argument("--workers", default="2,8,32", help="comma-separated W values")
    ap.add_argument("--sections", default="0,1,10", help="critical sections in ms, comma-separated")
    ap.add_argument("--secs", type=float, default=4.0, help="timed window per run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--libs", default=",".join(DEFAULT_LIBS), help=f"from: {', '.join(LIBRARIES)}")
    ap.add_argument("--overhead-cycles", type=int, default=5000,
                    help="uncontended acquire+release cycles per library and repeat (0: skip)")
    ap.add_argument("--quick", action="store_true", help="one repeat of 1.5 s, W 2 and 8, 1 ms only")
    ap.add_argument("--markdown", default="target/bench/peers.md")
    ap.add_argument("--json", default="target/bench/peers.json")
    ap.add_argument("--plot-tsv", default="target/bench/peers-ratios.tsv")
    a = ap.parse_args()
    if a.quick:
        a.secs, a.repeats, a.workers, a.sections, a.overhead_cycles = 1.5, 1, "2,8", "1", 500
    libs = a.libs.split(",")
    for lib in libs:
        if lib not in LIBRARIES:
            sys.exit(f"unknown library {lib}; known: {', '.join(LIBRARIES)}")
    workers = [int(w) for w in a.workers.split(",")]
    sections = [float(s) for s in a.sections.split(",")]
    cells = [(w, cs) for cs in sections for w in [1] + [w for w in workers if w != 1]]
    plan = [(w, cs, rep, lib) for (w, cs) in cells for rep in range(a.repeats)
            for lib in libs[rep % len(libs):] + libs[:rep % len(libs)]]
    # W = 1 (the uncontended rate) runs for half the window: it only gives the divisor.
    est = sum((a.secs / 2 if w == 1 else a.secs) + 0.5 + 0.03 * w for (w, _, _, _) in plan)
    server = Server(a.server, a.module)
    versions = {n: md.version(n) for n in ("redis", "python-redis-lock", "pottery", "pylocks")
                if _installed(n)}
    header = (f"Run: {server.version}, {os.cpu_count()} cores ({_cpu_model()}), {platform.python_implementation()} "
              f"{platform.python_version()}, {', '.join(f'{k} {v}' for k, v in versions.items())}; "
              f"{a.secs:g} s per run, medians of {a.repeats}; {len(plan)} runs, about {est / 60:.0f} min")
    print(header, flush=True)
    runs: List[Dict[str, Any]] = []
    t_begin = time.monotonic()
    try:
        for i, (w, cs, rep, lib) in enumerate(plan, 1):
            x = run_once(server, lib, w, cs / 1000, a.secs / 2 if w == 1 else a.secs)
            runs.append(x)
            print(f"[{i}/{len(plan)}] W={w} cs={cs:g}ms rep {rep + 1} {lib}: {x['rate']:.0f} grants/s, "
                  f"Jain {x['jain']:.3f}, wait p50 {fmt_ms(x['p50'])} p99 {fmt_ms(x['p99'])} ms, "
                  f"server {x['server_cpu_us']:.0f} µs/grant, client {x['client_cpu_us']:.0f} µs/grant, "
                  f"{x['round_trips']:.2f} round trips/grant, lost {x['lost']}", flush=True)
            if x["lost"]:
                sys.exit(f"{lib}: {x['lost']} lost updates: the lock let two workers in at once")
        overhead = client_overhead(server, libs, a.overhead_cycles, a.repeats) if a.overhead_cycles else ""
    finally:
        server.close()
    summary = summarise(runs)
    elapsed = time.monotonic() - t_begin
    md_text = (header.replace(f"about {est / 60:.0f} min", f"{elapsed:.0f} s") + "\n"
               + tables(summary, libs, workers, sections))
    for w in workers:
        for cs in sections:
            md_text += "\n" + costs_table(summary, libs, w, cs)
    md_text += "\n" + overhead + "\n\n" + legend(libs) + "\n"
    print(md_text)
    for path in (a.markdown, a.json, a.plot_tsv):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(a.markdown, "w") as f:
        f.write(md_text)
    with open(a.json, "w") as f:
        json.dump({"header": header, "runs": runs}, f)
    with open(a.plot_tsv, "w") as f:
        f.write(plot_rows(summary, libs, workers, sections))
    print(f"tables written to {a.markdown}, runs to {a.json}")


def legend(libs: List[str]) -> str:
    return "\n".join(f"- `{lib}`: {LIBRARIES[lib][0]}" for lib in libs)


def plot_rows(summary: Dict[Tuple[str, int, float], Dict[str, Any]], libs: List[str], workers: List[int],
              sections: List[float]) -> str:
    """pylocks (plain, and with then=/before= when it ran) over the best peer, per cell:
    throughput (target >= 1) and server CPU per grant (target <= 1), as
    `label TAB ratio TAB target-kind TAB target` for `bench plot-tsv`."""
    rows = []
    peers = [lib for lib in libs if lib in PEERS]
    for cs in sections:
        for w in workers:
            theirs = [summary[(p, w, cs)] for p in peers if (p, w, cs) in summary]
            for lib in ("pylocks", "pylocks-then"):
                ours = summary.get((lib, w, cs))
                if not ours or not theirs:
                    continue
                best = max(t["rate"] for t in theirs)
                cheapest = min(t["server_cpu_us"] for t in theirs)
                target = w == 8 and cs == 1
                rows.append(f"{lib} W={w}, {cs:g} ms: grants/s / best peer's\t{ours['rate'] / best:.4f}\t"
                            f"{'atleast' if target else 'none'}\t1.0")
                rows.append(f"{lib} W={w}, {cs:g} ms: server CPU per grant / cheapest peer's\t"
                            f"{ours['server_cpu_us'] / cheapest:.4f}\t{'atmost' if target else 'none'}\t1.0")
    return "\n".join(rows) + "\n"


def _installed(name: str) -> bool:
    try:
        md.version(name)
        return True
    except md.PackageNotFoundError:
        return False


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    return "AMD EPYC" if "EPYC" in name else name
    except OSError:
        pass
    return platform.machine()


if __name__ == "__main__":
    main()
