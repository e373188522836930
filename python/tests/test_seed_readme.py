"""The original library's README examples, run as they are written, under real Celery workers.

The two ``python`` code blocks are read at run time from ``../shared/seed-README.md`` (beside
the repository; ``PYLOCKS_SEED_README`` names another path) and written, unchanged, into a
temporary directory as the modules ``seed_example1`` and ``seed_example2``. They are never
copied into the repository. The test provides what they import and do not define,
``some_app.workers.celery_app``, and serves what they connect to: the examples' factory gets no
connection, so it uses the package's default (``redis://127.0.0.1:6379/0``, with
``PYLOCKS_REDIS_URL`` unset), and ``people_redis()`` hard-codes ``127.0.0.1:6379`` db 1. So the
test starts a real server with the module on 127.0.0.1:6379, Redis 7.0 and then Valkey, and
skips with a clear message when that port is taken.

As written, the examples have two slips of their own, and the tests show what they do:
``r.get(...) or 0`` gives ``bytes`` once a counter exists, so the second add to a person fails
with ``TypeError`` (after the lock, which ``releasing()`` gives back); and example 2 catches
``LockNotHeld`` without importing it, so a refused lease fails the task with ``NameError``
(raised while handling the lease error, which it hides). The lock behaviour is the contract's.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import types
import uuid
from pathlib import Path
from typing import Iterator, List

import pytest

import pylocks.blocking
from celery_support import Worker, get_result, wait_for
from conftest import REPO, Server, register_log
from pylocks.errors import LockAlreadyHeld

SEED_PORT = 6379
SEED = Path(os.environ.get("PYLOCKS_SEED_README") or REPO.parent / "shared" / "seed-README.md")

WORKERS_MODULE = f'''\
"""some_app.workers for the seed README's examples (written by test_seed_readme.py)."""
from celery import Celery

celery_app = Celery(
    "some_app",
    broker="redis://127.0.0.1:{SEED_PORT}/2",
    backend="redis://127.0.0.1:{SEED_PORT}/3",
    include=["seed_example1", "seed_example2"],
)
celery_app.conf.update(broker_connection_retry_on_startup=True, worker_prefetch_multiplier=1,
                       result_expires=600)
'''


def seed_blocks() -> List[str]:
    """The README's ``python`` fenced blocks, as they are."""
    if not SEED.is_file():
        pytest.skip(f"the original README is not at {SEED} (set PYLOCKS_SEED_README to its path): "
                    "the seed-examples test needs it and the repository does not copy it")
    blocks = re.findall(r"^```python\n(.*?)^```", SEED.read_text(encoding="utf-8"), re.M | re.S)
    assert len(blocks) == 2, f"expected the seed's two examples in {SEED}, found {len(blocks)} python blocks"
    return blocks


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def person() -> str:
    return uuid.uuid4().hex[:10]


class SeedEnv:
    def __init__(self, server: Server, worker: Worker, ex1: types.ModuleType, ex2: types.ModuleType) -> None:
        self.server, self.worker, self.ex1, self.ex2 = server, worker, ex1, ex2
        self.people = server.client(db=1)  # the examples' people_redis()

    def value(self, person_id: str):
        return self.people.get("person:%s" % person_id)


@pytest.fixture(scope="module", params=["redis", "valkey"])
def seed(request: pytest.FixtureRequest) -> Iterator[SeedEnv]:
    blocks = seed_blocks()
    if not port_is_free(SEED_PORT):
        pytest.skip(f"127.0.0.1:{SEED_PORT} is in use: the seed's examples connect there as written "
                    "(their default lock store and people_redis()), so this test needs the port for "
                    "its own module-loaded server")
    tmp = Path(tempfile.mkdtemp(prefix=f"pylocks-seed-{request.param}-"))
    app_dir = tmp / "app"
    (app_dir / "some_app").mkdir(parents=True)
    (app_dir / "some_app" / "__init__.py").write_text("")
    (app_dir / "some_app" / "workers.py").write_text(WORKERS_MODULE)
    for n, block in enumerate(blocks, 1):
        (app_dir / f"seed_example{n}.py").write_text(block)  # unchanged
    (tmp / "server").mkdir()
    saved_url = os.environ.pop("PYLOCKS_REDIS_URL", None)  # the examples use the default
    server = Server(request.param, tmp / "server", port=SEED_PORT)
    names = ["some_app", "some_app.workers", "seed_example1", "seed_example2"]
    sys.path.insert(0, str(app_dir))
    worker = None
    try:
        import seed_example1  # type: ignore[import-not-found]
        import seed_example2  # type: ignore[import-not-found]
        worker = Worker(types.SimpleNamespace(celery_app=seed_example1.celery_app),
                        f"seed-{request.param}@pylocks", tmp / "worker.log", pool="prefork",
                        concurrency=2, app="some_app.workers", app_dir=app_dir,
                        env_drop=("PYLOCKS_REDIS_URL",))
        worker.wait_ready()
        yield SeedEnv(server, worker, seed_example1, seed_example2)
    finally:
        if worker is not None:
            worker.stop()
        if "seed_example1" in sys.modules:
            sys.modules["seed_example1"].celery_app.close()
        for name in names:
            sys.modules.pop(name, None)
        sys.path.remove(str(app_dir))
        for client in pylocks.blocking._default_clients.values():  # bound to this server
            client.close()
        pylocks.blocking._default_clients.clear()
        server.stop()
        if saved_url is not None:
            os.environ["PYLOCKS_REDIS_URL"] = saved_url
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def env(seed: SeedEnv, request: pytest.FixtureRequest) -> SeedEnv:
    register_log(request, seed.worker.log)
    register_log(request, seed.server.log)
    return seed


def test_the_examples_use_the_default_connection_and_root_prefix(env: SeedEnv) -> None:
    for example in (env.ex1, env.ex2):
        lock = example.person_lock
        assert lock.redis.connection_pool.connection_kwargs["port"] == SEED_PORT
        assert lock.key(42) == "locks_example:person:42"


def test_example1_lock_inside_the_task(env: SeedEnv) -> None:
    ex1, p = env.ex1, person()
    assert get_result(ex1.add_to_person.delay(p, 5))[0] == "SUCCESS"
    assert env.value(p) == b"5"
    assert not ex1.person_lock.is_held(p), "releasing() gave the lock back"


def test_example1_fails_when_the_lock_is_held(env: SeedEnv) -> None:
    ex1, q = env.ex1, person()
    holder = ex1.person_lock.acquire(q)
    state, result = get_result(ex1.add_to_person.delay(q, 1))
    assert state == "FAILURE" and isinstance(result, LockAlreadyHeld), (state, result)
    assert env.value(q) is None, "the refused task wrote nothing"
    assert ex1.person_lock.info(q).lease_id == holder.id
    wait_for(lambda: f"lock on person {q} was already held" in env.worker.log_text(), 5, what="the log line")
    holder.release()


def test_example1_concurrent_tasks_on_one_person_never_overlap(env: SeedEnv) -> None:
    """Four tasks at once on a new person with two worker processes: exactly one applies its
    amount. Each other one either met the lock (LockAlreadyHeld) or ran after it and hit the
    seed's bytes + int (TypeError) with the lock released around it."""
    ex1, r = env.ex1, person()
    sent = [(amount, ex1.add_to_person.delay(r, amount)) for amount in (1, 2, 4, 8)]
    outcomes = [(amount,) + get_result(res) for amount, res in sent]
    applied = [amount for amount, state, _ in outcomes if state == "SUCCESS"]
    assert len(applied) == 1, outcomes
    assert env.value(r) == str(applied[0]).encode()
    for amount, state, result in outcomes:
        if state != "SUCCESS":
            assert state == "FAILURE" and isinstance(result, (LockAlreadyHeld, TypeError)), (amount, result)
    assert not ex1.person_lock.is_held(r)


def test_example1_as_written_cannot_add_twice(env: SeedEnv) -> None:
    ex1, p = env.ex1, person()
    assert get_result(ex1.add_to_person.delay(p, 5))[0] == "SUCCESS"
    state, result = get_result(ex1.add_to_person.delay(p, 3))
    assert state == "FAILURE" and isinstance(result, TypeError), (state, result)
    assert env.value(p) == b"5"
    assert not ex1.person_lock.is_held(p), "the failed task released its lock"


def test_example2_lock_before_enqueuing(env: SeedEnv) -> None:
    ex2, p = env.ex2, person()
    assert ex2.enqueue_add_person_task(p, 7) is None
    wait_for(lambda: env.value(p) == b"7", 30, what="the task's write")
    wait_for(lambda: not ex2.person_lock.is_held(p), 10, what="the task's release")


def test_example2_does_not_enqueue_while_the_lock_is_held(env: SeedEnv, caplog) -> None:
    ex2, q = env.ex2, person()
    holder = ex2.person_lock.acquire(q)
    with caplog.at_level(logging.ERROR, logger="seed_example2"):
        with pytest.raises(LockAlreadyHeld):
            ex2.enqueue_add_person_task(q, 1)
    assert "couldn't get lock" in caplog.text
    assert ex2.person_lock.info(q).lease_id == holder.id
    holder.release()
    assert env.value(q) is None


@pytest.mark.parametrize("someone_else_holds_it", [False, True])
def test_example2_a_task_whose_lease_is_gone_writes_nothing(env: SeedEnv, someone_else_holds_it: bool) -> None:
    """A task handed a lease that does not hold the lock: get_handle refuses it (NOTHELD, or
    NOTOWNED), and the seed's ``except LockNotHeld`` (a name it never imports) turns that into
    NameError. Either way nothing is written and another holder's lock is untouched."""
    ex2, q = env.ex2, person()
    other = ex2.person_lock.acquire(q) if someone_else_holds_it else None
    state, result = get_result(ex2.add_to_person.apply_async([q, str(uuid.uuid4()), 3]))
    assert state == "FAILURE" and isinstance(result, NameError) and "LockNotHeld" in str(result), (state, result)
    assert env.value(q) is None
    if other is not None:
        assert ex2.person_lock.info(q).lease_id == other.id
        other.release()
    else:
        assert not ex2.person_lock.is_held(q)


def test_example2_many_enqueues_apply_exactly_once_each(env: SeedEnv) -> None:
    """Enqueue on fresh persons while earlier tasks run: every enqueue that got the lock led
    to exactly one write, and every lock is free at the end."""
    ex2 = env.ex2
    people = [person() for _ in range(6)]
    for n, p in enumerate(people, 1):
        ex2.enqueue_add_person_task(p, n)
    for n, p in enumerate(people, 1):
        wait_for(lambda p=p, n=n: env.value(p) == str(n).encode(), 30, what=f"person {p}'s write")
    wait_for(lambda: not any(ex2.person_lock.is_held(p) for p in people), 10, what="the releases")
    time.sleep(0.2)
    assert [env.value(p) for p in people] == [str(n).encode() for n in range(1, 7)]
