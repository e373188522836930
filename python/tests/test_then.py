"""``acquire(..., then=fn)`` and ``release(before=fn)``: the caller's commands in the lock
command's pipeline, one round trip each, for every client flavour (``flavor`` fixture:
blocking and asyncio, over redis-py and valkey-py) against real Redis 7.0 and Valkey servers.

Round trips are counted at the client library's own ``send_packed_command`` (one call per
command or per whole pipeline written), for the duration of the call under test.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator, List

import pytest
import redis

import pylocks.blocking
from conftest import SERVER_START_TIMEOUT, free_port, log_tail, module_path, server_binary
from pylocks.errors import LockAlreadyHeld, LockExpired, LockNotOwned


@pytest.fixture
def lock(flavor, uniq: str):
    return flavor.factory(prefix="job", ttl=30, arity=1, root_prefix=f"t{uniq}")


@pytest.fixture
def plain(server) -> Iterator[redis.Redis]:
    """A blocking redis-py client for looking at (and writing to) the server from outside."""
    client = server.client()
    yield client
    client.close()


def connection_class(flavor) -> Any:
    if flavor.lib == "redis":
        import redis.asyncio.connection
        import redis.connection
        return redis.asyncio.connection.AbstractConnection if flavor.is_async else redis.connection.AbstractConnection
    import valkey.asyncio.connection
    import valkey.connection
    return valkey.asyncio.connection.AbstractConnection if flavor.is_async else valkey.connection.AbstractConnection


class Sends:
    """Counts the flavour's writes to the server (``send_packed_command`` calls) while active,
    made by the thread that counts (other workers' clients in other threads are not counted)."""

    def __init__(self) -> None:
        self.count = 0
        self.thread: Any = None

    @contextlib.contextmanager
    def counting(self) -> Iterator["Sends"]:
        self.count, self.thread = 0, threading.get_ident()
        try:
            yield self
        finally:
            self.thread = None

    def saw(self) -> None:
        if self.thread == threading.get_ident():
            self.count += 1


@pytest.fixture
def sends(flavor, monkeypatch) -> Sends:
    counter = Sends()
    cls = connection_class(flavor)
    original = cls.send_packed_command
    if flavor.is_async:
        async def counted(self, command, check_health=True):
            counter.saw()
            return await original(self, command, check_health)
    else:
        def counted(self, command, check_health=True):
            counter.saw()
            return original(self, command, check_health)
    monkeypatch.setattr(cls, "send_packed_command", counted)
    return counter


def warm(flavor, lock) -> None:
    """Open the flavour's pooled connection first (its handshake is sends of its own)."""
    flavor.run(lock.redis.ping())


def holder_of(server, lock) -> pylocks.blocking.RedisLockFactory:
    """The same lock through a blocking redis-py client of its own: another worker."""
    return pylocks.blocking.RedisLockFactory(server.client(), prefix="job", ttl=30, arity=1,
                                             root_prefix=lock.root_prefix)


def response_error(flavor) -> Any:
    if flavor.lib == "redis":
        return redis.exceptions.ResponseError
    import valkey.exceptions
    return valkey.exceptions.ResponseError


# --- acquire(..., then=) ----------------------------------------------------------------------

def test_then_reads_ride_with_the_grant_in_one_round_trip(flavor, lock, plain, sends, uniq: str) -> None:
    run = flavor.run
    plain.set(f"{uniq}:counter", 41)
    plain.hset(f"{uniq}:h", "f", "v")
    warm(flavor, lock)
    with sends.counting():
        handle = run(lock.acquire(1, then=lambda p: p.get(f"{uniq}:counter").hget(f"{uniq}:h", "f")))
    assert sends.count == 1
    assert handle.then_results == [b"41", b"v"]
    info = plain.execute_command("PYLOCK.INFO", handle.key)
    assert info[1] == handle.id.encode() and info[3] == handle.token
    with sends.counting():
        assert run(handle.release()) is True
    assert sends.count == 1
    # without then= the handle has no results, and the call is the single ACQUIRE as before
    with sends.counting():
        other = run(lock.acquire(2))
    assert sends.count == 1 and other.then_results is None and other.before_results is None


def test_then_with_an_empty_queue_is_an_empty_list(flavor, lock) -> None:
    handle = flavor.run(lock.acquire(1, then=lambda p: None))
    assert handle.then_results == []
    assert flavor.run(handle.release()) is True


def test_not_granted_drops_the_results_and_leaves_the_holder_alone(flavor, lock, server, plain, sends,
                                                                   uniq: str) -> None:
    run = flavor.run
    holder = holder_of(server, lock).acquire(1)
    plain.set(f"{uniq}:counter", 7)
    warm(flavor, lock)
    for wait in (None, 0.2):
        start = time.monotonic()
        with sends.counting(), pytest.raises(LockAlreadyHeld):
            run(lock.acquire(1, wait=wait, then=lambda p: p.get(f"{uniq}:counter")))
        assert sends.count == 1
        if wait is not None:
            assert time.monotonic() - start >= 0.18, "BLOCK waited out its timeout"
        info = plain.execute_command("PYLOCK.INFO", holder.key)
        assert info[1] == holder.id.encode() and info[3] == holder.token, "the holder's lease is untouched"
        assert int(info[7]) == 0, "no waiter left behind"
    assert plain.get(f"{uniq}:counter") == b"7"
    assert holder.release() is True


def test_then_commands_run_even_when_not_granted(flavor, lock, server, plain, uniq: str) -> None:
    """The documented caveat, shown: the queued commands are not conditional on the grant,
    which is why then= is for reads."""
    holder = holder_of(server, lock).acquire(1)
    with pytest.raises(LockAlreadyHeld):
        flavor.run(lock.acquire(1, then=lambda p: p.incr(f"{uniq}:ran")))
    assert plain.get(f"{uniq}:ran") == b"1"
    holder.release()


def test_block_wait_reads_what_the_previous_holder_wrote_before_releasing(flavor, lock, server, plain,
                                                                          sends, uniq: str) -> None:
    run = flavor.run
    counter = f"{uniq}:counter"
    plain.set(counter, "before")
    holder = holder_of(server, lock).acquire(1)
    writer = server.client()

    def finish() -> None:
        writer.set(counter, "written by the holder")
        holder.release()

    warm(flavor, lock)
    timer = threading.Timer(0.3, finish)
    timer.start()
    try:
        start = time.monotonic()
        with sends.counting():
            handle = run(lock.acquire(1, wait=10, then=lambda p: p.get(counter)))
        waited = time.monotonic() - start
    finally:
        timer.join()
        writer.close()
    assert waited >= 0.25, "the acquire waited for the holder"
    assert sends.count == 1
    # the GET was sent with the ACQUIRE, 0.3 s before the holder's SET, yet saw it: the server
    # ran it only after the grant
    assert handle.then_results == [b"written by the holder"]
    assert handle.token > holder.token
    assert run(handle.release()) is True


def test_a_failed_read_after_the_grant_releases_and_raises(flavor, lock, plain, uniq: str) -> None:
    run = flavor.run
    plain.set(f"{uniq}:string", "x")
    with pytest.raises(response_error(flavor), match="WRONGTYPE"):
        run(lock.acquire(1, then=lambda p: p.get(f"{uniq}:string").hget(f"{uniq}:string", "f")))
    assert plain.execute_command("PYLOCK.INFO", lock.key(1)) is None, "the granted lease was released"
    # the lock is free for the next caller at once
    handle = run(lock.acquire(1))
    assert run(handle.release()) is True


def test_then_rides_with_the_durability_wait(flavor, replicated, uniq: str) -> None:
    run = flavor.run
    primary, replica = replicated
    lock = flavor.factory(flavor.client(port=primary.port), prefix="job", ttl=30, arity=1,
                          root_prefix=uniq, durability=(1, 5))
    primary.client().set(f"{uniq}:counter", 3)
    handle = run(lock.acquire(1, then=lambda p: p.get(f"{uniq}:counter")))
    assert handle.then_results == [b"3"]
    on_replica = replica.client().execute_command("PYLOCK.INFO", handle.key)
    assert on_replica[1] == handle.id.encode()
    assert run(handle.release()) is True


# --- release(before=) -----------------------------------------------------------------------

def test_before_writes_then_release_in_one_round_trip(flavor, lock, plain, sends, uniq: str) -> None:
    run = flavor.run
    handle = run(lock.acquire(1))
    warm(flavor, lock)
    with sends.counting():
        released = run(handle.release(before=lambda p: p.set(f"{uniq}:counter", 5).incr(f"{uniq}:n")))
    assert sends.count == 1
    assert released is True and handle.ttl_ms == 0
    assert handle.before_results == [True, 1]
    assert plain.get(f"{uniq}:counter") == b"5" and plain.get(f"{uniq}:n") == b"1"
    assert plain.execute_command("PYLOCK.INFO", handle.key) is None


def test_a_whole_cycle_is_two_round_trips(flavor, lock, plain, sends, uniq: str) -> None:
    run = flavor.run
    counter = f"{uniq}:counter"
    warm(flavor, lock)
    with sends.counting():
        for _ in range(5):
            handle = run(lock.acquire(1, wait=5, then=lambda p: p.get(counter)))
            value = int(handle.then_results[0] or 0)
            run(handle.release(before=lambda p: p.set(counter, value + 1)))
    assert sends.count == 10
    assert plain.get(counter) == b"5"


def test_before_runs_its_writes_even_when_the_lease_is_lost(flavor, lock, server, plain, uniq: str) -> None:
    """The documented caveat: before= writes are not conditional on the lease; the RELEASE's
    error says they ran without it."""
    run = flavor.run
    expired = run(lock.acquire(1, ttl=0.05))
    flavor.sleep(0.15)
    with pytest.raises(LockExpired):
        run(expired.release(before=lambda p: p.set(f"{uniq}:a", "late")))
    assert expired.before_results == [True]
    assert plain.get(f"{uniq}:a") == b"late"

    # and when another lease holds the lock by then: LockNotOwned, the newcomer untouched
    stale = run(lock.acquire(2, ttl=0.05))
    flavor.sleep(0.15)
    newcomer = holder_of(server, lock).acquire(2)
    with pytest.raises(LockNotOwned):
        run(stale.release(before=lambda p: p.set(f"{uniq}:b", "late")))
    assert plain.get(f"{uniq}:b") == b"late"
    assert plain.execute_command("PYLOCK.INFO", newcomer.key)[1] == newcomer.id.encode()
    # ignore_failure=True: False, as a plain release
    assert run(stale.release(ignore_failure=True, before=lambda p: p.set(f"{uniq}:c", "x"))) is False
    assert stale.before_results == [True] and plain.get(f"{uniq}:c") == b"x"
    newcomer.release()


def test_a_failed_write_is_raised_after_the_release(flavor, lock, plain, uniq: str) -> None:
    run = flavor.run
    plain.set(f"{uniq}:string", "x")
    handle = run(lock.acquire(1))
    with pytest.raises(response_error(flavor), match="WRONGTYPE"):
        run(handle.release(before=lambda p: p.set(f"{uniq}:ok", 1).hset(f"{uniq}:string", "f", "v")))
    assert handle.before_results[0] is True and isinstance(handle.before_results[1], response_error(flavor))
    assert plain.get(f"{uniq}:ok") == b"1"
    assert plain.execute_command("PYLOCK.INFO", handle.key) is None, "released all the same"


def test_keeper_release_passes_before_through(flavor, lock, plain, uniq: str) -> None:
    run = flavor.run
    handle = run(lock.acquire(1))
    keeper = flavor.call(handle.keep_alive, interval=0.05)
    flavor.sleep(0.12)
    assert run(keeper.release(before=lambda p: p.set(f"{uniq}:k", "done"))) is True
    assert handle.before_results == [True] and plain.get(f"{uniq}:k") == b"done"
    assert plain.execute_command("PYLOCK.INFO", handle.key) is None


def test_a_coroutine_function_is_refused_before_sending(flavor, lock, plain, sends) -> None:
    async def queue(pipe: Any) -> None:
        pipe.get("x")

    warm(flavor, lock)
    with sends.counting(), pytest.raises(TypeError, match="plain function"):
        flavor.run(lock.acquire(1, then=queue))
    assert sends.count == 0
    assert plain.execute_command("PYLOCK.INFO", lock.key(1)) is None


# --- cluster clients are refused ------------------------------------------------------------

def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too, as a cluster node needs."""
    for _ in range(200):
        port = free_port()
        if port <= 55535:
            with socket.socket() as bus:
                try:
                    bus.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port pair for a cluster node")


class ClusterNode:
    """A one-node cluster (every slot on it) of the session's server kind, with the module."""

    def __init__(self, kind: str, tmp: Path) -> None:
        self.port = cluster_port()
        self.log = tmp / "server.log"
        self.proc = subprocess.Popen(
            [server_binary(kind), "--port", str(self.port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
             "--cluster-config-file", str(tmp / "nodes.conf"), "--loadmodule", str(module_path()),
             "--save", "", "--appendonly", "no", "--dir", str(tmp), "--logfile", str(self.log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"cluster node exited:\n{log_tail(self.log)}")
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"cluster node did not answer:\n{log_tail(self.log)}")
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
            while client.cluster("info").get("cluster_state") != "ok":
                if time.monotonic() > deadline:
                    raise RuntimeError(f"cluster did not come up:\n{log_tail(self.log)}")
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture(scope="module")
def cluster_node(server) -> Iterator[ClusterNode]:
    tmp = Path(tempfile.mkdtemp(prefix=f"pylocks-cluster-{server.kind}-"))
    node = ClusterNode(server.kind, tmp)
    yield node
    node.stop()
    shutil.rmtree(tmp, ignore_errors=True)


def cluster_client(flavor, port: int) -> Any:
    if flavor.lib == "redis":
        import redis.asyncio.cluster
        import redis.cluster
        cls: Any = redis.asyncio.cluster.RedisCluster if flavor.is_async else redis.cluster.RedisCluster
    else:
        import valkey.asyncio.cluster
        import valkey.cluster
        cls = valkey.asyncio.cluster.ValkeyCluster if flavor.is_async else valkey.cluster.ValkeyCluster
    client = cls(host="127.0.0.1", port=port)
    if flavor.is_async:
        flavor.run(client.initialize())
    return client


def test_cluster_clients_are_refused_before_anything_is_sent(flavor, cluster_node, uniq: str) -> None:
    run = flavor.run
    client = cluster_client(flavor, cluster_node.port)
    try:
        assert run(client.ping()) is True, "a working cluster client"
        lock = flavor.module.RedisLockFactory(client, prefix="job", ttl=30, arity=1, root_prefix=uniq)
        with pytest.raises(ValueError, match="cluster client"):
            run(lock.acquire(1, then=lambda p: p.get("x")))
        assert run(client.exists(lock.key(1))) == 0, "no ACQUIRE went out"
        handle = flavor.module.SingleLockHandle(client, lock.key(1), "some-lease", 1, 30_000, 30_000)
        with pytest.raises(ValueError, match="cluster client"):
            run(handle.release(before=lambda p: p.set(f"{uniq}:w", 1)))
        assert run(client.exists(f"{uniq}:w")) == 0, "no write went out"
    finally:
        run(client.aclose()) if flavor.is_async else client.close()


# --- asyncio: a cancelled wait ----------------------------------------------------------------

def test_a_cancelled_waiting_acquire_with_then_leaves_the_queue(async_flavor, server, plain, uniq: str) -> None:
    """Cancel a task waiting in acquire(wait=..., then=...): the server forgets the waiter, the
    release frees the lock, and the client's next pipeline reads its own replies (no reply of
    the cancelled one is left on a pooled connection)."""
    import asyncio

    flavor = async_flavor
    lock = flavor.factory(prefix="job", ttl=30, arity=1, root_prefix=f"t{uniq}")
    plain.set(f"{uniq}:counter", "mine")
    holder = flavor.run(lock.acquire(1))
    waiting = flavor.loop.create_task(lock.acquire(1, wait=30, then=lambda p: p.get(f"{uniq}:counter")))

    def queued() -> int:
        info = plain.execute_command("PYLOCK.INFO", holder.key)
        return 0 if info is None else int(info[7])

    deadline = time.monotonic() + 5
    while queued() != 1:
        assert time.monotonic() < deadline, "the waiter never queued"
        flavor.sleep(0.02)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        flavor.run(waiting)
    deadline = time.monotonic() + 5
    while queued() != 0:
        assert time.monotonic() < deadline, "the cancelled waiter is still queued"
        time.sleep(0.02)
    assert flavor.run(holder.release()) is True
    assert plain.execute_command("PYLOCK.INFO", holder.key) is None, "the lock went to nobody"
    plain.set(f"{uniq}:other", "fresh")
    handle = flavor.run(lock.acquire(2, then=lambda p: p.get(f"{uniq}:other")))
    assert handle.then_results == [b"fresh"]
    assert flavor.run(handle.release(before=lambda p: p.get(f"{uniq}:counter"))) is True
    assert handle.before_results == [b"mine"]
