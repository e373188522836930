"""Sentinel, for real: a primary and two replicas with the module, three sentinel processes
(quorum 2), and the pylocks client on redis-py's ``Sentinel`` while the primary is SIGKILLed.

Each round: take and give back locks on a few keys until a timer SIGKILLs the primary in the
middle of it; wait for the sentinels to promote a replica; go on through the same client, which
finds the new primary through the sentinels; check every key there against what the client was
told; start the killed node again, empty, as a replica of the new primary.

- With ``WAIT 1`` after each grant, no acknowledged grant may be lost.
- Without it, lost grants are counted and printed, not asserted away.
- Either way every token seen for a key is larger than every earlier one, across failovers.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from conftest import Server, free_port, log_tail, register_log, server_binary
from pylocks import RedisLockFactory, SingleLockHandle

SERVICE = "pylock"
# Not below ~1.5 s: after a failover a sentinel restarts the new primary's silence clock but
# reconnects at most once a second, so with 500 ms the sentinels that did not lead the failover
# took the new primary for down and failed over again (crates/testkit/src/sentinel.rs).
DOWN_AFTER_MS = 2000
FAILOVER_TIMEOUT_MS = 3000
ROUNDS = {True: 3, False: 2}  # failovers per test, with and without WAIT 1
KEYS = 5


def sentinel_argv(kind: str, conf: Path) -> List[str]:
    """Debian's redis-sentinel for Redis if installed, else the server binary with --sentinel."""
    if kind == "redis":
        found = os.environ.get("PYLOCK_REDIS_SENTINEL") or shutil.which("redis-sentinel")
        if found:
            return [found, str(conf)]
    return [server_binary(kind), str(conf), "--sentinel"]


def wait_for(what: str, timeout: float, check) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def fields(reply) -> Dict[str, str]:
    """A SENTINEL MASTER / REPLICAS entry as text, whether redis-py parsed it or not."""
    if isinstance(reply, dict):
        return {str(k): str(v) for k, v in reply.items()}
    return {str(reply[i]): str(reply[i + 1]) for i in range(0, len(reply), 2)}


class SentinelProcess:
    def __init__(self, kind: str, primary_port: int, base: Path) -> None:
        # tmpfs when there is one: a sentinel fsyncs its config in its event loop at every change,
        # and a stall on a busy disk makes it take healthy nodes for down.
        self.dir = Path(tempfile.mkdtemp(prefix="pylocks-sentinel-", dir="/dev/shm" if Path("/dev/shm").is_dir() else base))
        self.log = self.dir / "sentinel.log"
        self.port = free_port()
        conf = self.dir / "sentinel.conf"
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndaemonize no\ndir {self.dir}\nlogfile {self.log}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )
        self.argv = sentinel_argv(kind, conf)
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        try:
            wait_for(f"sentinel on {self.port}", 10, lambda: self.primary_port() is not None)
        except BaseException:
            self.stop()
            raise

    def client(self) -> "redis.Redis":
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2, decode_responses=True)

    def primary_port(self) -> Optional[int]:
        if self.proc.poll() is not None:
            raise RuntimeError(f"sentinel exited with {self.proc.returncode}:\n{log_tail(self.log)}")
        try:
            addr = self.client().execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
        except redis.RedisError:
            return None
        return int(addr[1]) if addr else None

    def is_stable(self, primary_port: int, replica_ports: List[int]) -> bool:
        try:
            c = self.client()
            master = fields(c.execute_command("SENTINEL", "MASTER", SERVICE))
            replicas = [fields(r) for r in c.execute_command("SENTINEL", "REPLICAS", SERVICE)]
        except redis.RedisError:
            return False
        if (master.get("flags"), master.get("port"), master.get("num-other-sentinels")) != (
                "master", str(primary_port), "2"):
            return False
        return all(
            any(r.get("port") == str(p) and r.get("flags") == "slave"
                and r.get("master-link-status") == "ok" and r.get("master-port") == str(primary_port)
                for r in replicas)
            for p in replica_ports
        )

    def stop(self) -> None:
        """Kill the sentinel; its directory (and log) stays for the failure report."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class SentinelGroup:
    """Three nodes with the module (one primary, two replicas) and three sentinels."""

    def __init__(self, kind: str, base: Path, request: pytest.FixtureRequest) -> None:
        self.kind, self.base, self.request = kind, base, request
        self.nodes: List[Server] = []
        self.sentinels: List[SentinelProcess] = []
        try:
            primary = self._node()
            self.add_replica(primary.port)
            self.add_replica(primary.port)
            for _ in range(3):
                s = SentinelProcess(kind, primary.port, base)
                register_log(request, s.log)
                self.sentinels.append(s)
            self.wait_stable(primary.port)
        except BaseException:
            self.stop()  # nothing started here outlives a failed set-up
            raise

    def _node(self, port: Optional[int] = None) -> Server:
        d = Path(tempfile.mkdtemp(prefix="node-", dir=self.base))
        node = Server(self.kind, d, port)
        # Any node may become the primary: let its full syncs start at once, not after 5 s.
        node.client().config_set("repl-diskless-sync-delay", 0)
        register_log(self.request, node.log)
        self.nodes.append(node)
        return node

    def add_replica(self, primary_port: int, port: Optional[int] = None) -> Server:
        """A new, empty node as a replica. On the ``port`` of a dead node, the sentinels know it
        at once; on a new port they would learn of it only at their next INFO of the primary
        (every 10 s)."""
        if port is not None:
            self.nodes = [n for n in self.nodes if n.port != port]
        node = self._node(port)
        node.client().replicaof("127.0.0.1", primary_port)
        wait_for(f"replica {node.port} in sync", 10, lambda: (
            lambda i: i.get("master_link_status") == "up" and i.get("master_sync_in_progress") == 0
        )(node.client().info("replication")))
        return node

    def node(self, port: int) -> Server:
        return next(n for n in self.nodes if n.port == port)

    def live_ports(self) -> List[int]:
        return [n.port for n in self.nodes if n.proc.poll() is None]

    def agreed_primary(self) -> Optional[int]:
        ports = {s.primary_port() for s in self.sentinels}
        return ports.pop() if len(ports) == 1 else None

    def wait_failover(self, old: int, timeout: float = 30) -> int:
        def promoted() -> bool:
            port = self.agreed_primary()
            if port is None or port == old:
                return False
            try:
                return self.node(port).client().execute_command("ROLE")[0] in (b"master", "master")
            except redis.RedisError:
                return False
        wait_for(f"a failover away from {old}", timeout, promoted)
        return self.agreed_primary()

    def wait_stable(self, primary_port: int) -> None:
        replicas = [p for p in self.live_ports() if p != primary_port]
        wait_for(f"the sentinels to settle on {primary_port} with replicas {replicas}", 20,
                 lambda: all(s.is_stable(primary_port, replicas) for s in self.sentinels))

    def stop(self) -> None:
        for s in self.sentinels:
            s.stop()
        for n in self.nodes:
            n.stop()

    def remove_files(self) -> None:
        for s in self.sentinels:
            shutil.rmtree(s.dir, ignore_errors=True)
        shutil.rmtree(self.base, ignore_errors=True)


@dataclass
class Slot:
    held: Optional[SingleLockHandle] = None
    pending: Optional[Tuple[str, str]] = None  # ("acquire" | "release", lease id)
    history: List[Tuple[str, int]] = field(default_factory=list)
    max_token: int = 0


@dataclass
class Tally:
    grants: int = 0
    releases: int = 0
    not_replicated: int = 0
    in_flight_applied: int = 0
    undone_releases: int = 0
    lost: List[str] = field(default_factory=list)
    violations: List[str] = field(default_factory=list)


def verify(locks: RedisLockFactory, slots: Dict[int, Slot], tally: Tally, after_kill: bool) -> None:
    """Compare every key with the primary the client reaches now; take over our leases there."""
    for k, slot in slots.items():
        info = locks.info(k)
        got = None if info is None else (info.lease_id, info.token)
        expected = None if slot.held is None else (slot.held.id, slot.held.token)
        pending, slot.pending = slot.pending, None
        adopt = None
        if got == expected:
            pass
        elif pending and pending[0] == "acquire" and got and got[0] == pending[1]:
            tally.in_flight_applied += 1  # the cut-off grant took effect
            if got[1] <= slot.max_token:
                tally.violations.append(f"{k}: in-flight grant token {got[1]} after {slot.max_token}")
            slot.max_token = max(slot.max_token, got[1])
            slot.history.append(got)
            adopt = got
        elif pending and pending[0] == "release" and got and got[0] == pending[1] and expected is None:
            adopt = got  # the cut-off release did not take effect
        elif not after_kill:
            tally.violations.append(f"{k}: holds {got}, acknowledged {expected}")
        elif got is None or got in slot.history:  # rolled back to an earlier state
            if expected is not None:
                tally.lost.append(f"{locks.key(k)}: lease {expected[0]} token {expected[1]} lost; now {got}")
            if got is not None:
                tally.undone_releases += 1
                adopt = got
        else:
            tally.violations.append(f"{k}: holds {got}, never granted to us (expected {expected})")
        if adopt is not None:
            slot.held = locks.get_handle(k, lease_id=adopt[0])
            if slot.held.token != adopt[1]:
                tally.violations.append(f"{k}: CONFIRM token {slot.held.token}, INFO {adopt[1]}")
        elif got is None:
            slot.held = None


def one_call(locks: RedisLockFactory, client: "redis.Redis", slots: Dict[int, Slot], k: int,
             durable: bool, tally: Tally) -> None:
    """Release key k if we hold it, else take it (then WAIT 1 if durable). Raises on a broken link."""
    slot = slots[k]
    if slot.held is not None:
        handle = slot.held
        slot.pending, slot.held = ("release", handle.id), None
        handle.release()
        tally.releases += 1
    else:
        lease = str(uuid.uuid4())
        slot.pending = ("acquire", lease)
        handle = locks.acquire(k, lease_id=lease)
        if durable:
            # The Python client has no durability option: WAIT on the connection of the grant.
            if client.execute_command("WAIT", 1, 2000) < 1:
                handle.release()
                tally.not_replicated += 1
                slot.pending = None
                return
        if handle.token <= slot.max_token:
            tally.violations.append(f"{k}: token {handle.token} granted after {slot.max_token}")
        slot.max_token = max(slot.max_token, handle.token)
        slot.history.append((handle.id, handle.token))
        slot.held = handle
        tally.grants += 1
    slot.pending = None


@pytest.mark.timeout(120)
@pytest.mark.parametrize("durable", [True, False], ids=["wait1", "no-wait"])
@pytest.mark.parametrize("kind", ["redis", "valkey"])
def test_sentinel_failovers(kind: str, durable: bool, request: pytest.FixtureRequest) -> None:
    started = time.monotonic()
    base = Path(tempfile.mkdtemp(prefix=f"pylocks-sentinel-{kind}-"))
    group = SentinelGroup(kind, base, request)  # stops what it started if it fails
    setup = time.monotonic() - started
    passed = False
    try:
        sentinel = Sentinel([("127.0.0.1", s.port) for s in group.sentinels], socket_timeout=2)
        # No retries, so a failover shows up here as an error instead of being retried out of
        # sight on the new primary. One thread: the pool hands the same connection back each
        # time, so WAIT follows the grant on its connection. (single_connection_client=True
        # would say so outright, but redis-py 8.1 then reconnects to the old address: its
        # send path skips the sentinel lookup that the pool's connect() does.)
        client = sentinel.master_for(SERVICE, socket_timeout=5, retry=Retry(NoBackoff(), 0))
        locks = RedisLockFactory(client, prefix=f"sentinel-{uuid.uuid4().hex[:8]}", ttl=300, arity=1)
        slots = {k: Slot() for k in range(KEYS)}
        tally = Tally()
        rng = random.Random(7)
        timings = []
        settle: List[float] = []
        for _ in range(ROUNDS[durable]):
            old = group.agreed_primary()
            assert client.info("server")["tcp_port"] == old
            killed_at: List[float] = []

            def kill(port: int = old) -> None:
                group.node(port).proc.kill()
                killed_at.append(time.monotonic())
            timer = threading.Timer(0.4, kill)
            timer.start()
            calls = 0
            while True:
                try:
                    one_call(locks, client, slots, rng.randrange(KEYS), durable, tally)
                    calls += 1
                except (redis.ConnectionError, redis.TimeoutError):
                    break
            timer.join()
            assert calls > 20, f"only {calls} calls before the kill"
            new = group.wait_failover(old)
            failed_over = time.monotonic() - killed_at[0]
            # The same client, through the sentinels, reaches the new primary.
            deadline = time.monotonic() + 30
            while True:
                try:
                    port = client.info("server")["tcp_port"]
                    break
                except (redis.ConnectionError, redis.TimeoutError):
                    assert time.monotonic() < deadline, "the client never reached the new primary"
                    time.sleep(0.05)
            resumed = time.monotonic() - killed_at[0]
            assert port == new, f"the client is on {port}, the sentinels name {new}"
            assert client.connection_pool._created_connections == 1, "WAIT may not follow its grant"
            verify(locks, slots, tally, after_kill=True)
            timings.append((round(failed_over, 2), round(resumed, 2)))
            t = time.monotonic()
            group.add_replica(new, port=old)  # the killed node comes back, empty, as a replica
            group.wait_stable(new)
            settle.append(round(time.monotonic() - t, 2))
        for _ in range(50):
            one_call(locks, client, slots, rng.randrange(KEYS), durable, tally)
        verify(locks, slots, tally, after_kill=False)
        print(f"\n{kind} ({' '.join(Path(a).name for a in group.sentinels[0].argv[::2])}), "
              f"{'WAIT 1' if durable else 'no WAIT'}: {ROUNDS[durable]} failovers in "
              f"{time.monotonic() - started:.1f} s (setup {setup:.1f} s, replica back and seen {settle} s); (kill -> sentinels agree, kill -> client resumed) s: "
              f"{timings}; {tally.grants} grants, {tally.releases} releases acknowledged, "
              f"{tally.not_replicated} refused by WAIT, {tally.in_flight_applied} cut-off calls took effect, "
              f"{len(tally.lost)} grants lost, {tally.undone_releases} releases undone")
        for line in tally.lost:
            print("  lost:", line)
        assert tally.violations == []
        if durable:
            assert tally.lost == [], "WAIT 1 acknowledged grants that a failover lost"
        passed = True
    finally:
        group.stop()
        if passed:  # else the logs stay for the report (and a look afterwards)
            group.remove_files()
