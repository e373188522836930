"""``LockedTask(lock_limit=n)``: a semaphore around a task, under real Celery workers.

The example of python/CELERY.md (tests/vendorapp.py): 6 tasks call a fake vendor endpoint
(tests/vendor_server.py, a real HTTP server on 127.0.0.1 that counts the calls in progress),
each call taking 0.5 s, under ``lock_limit=2``, run by 2 worker processes of 3 threads each
(``celery worker -P threads -c 3``, twice). Every test runs on Redis 7.0 and on Valkey.
"""

from __future__ import annotations

import importlib.util
import os
import time
import uuid
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Iterator

import pytest
from celery import Celery

from celery_support import TESTS, Worker, get_result, wait_for
from conftest import register_log
from pylocks.blocking import RedisLockFactory
from pylocks.celery import LockedTask
from pylocks.errors import LimitMismatch, LockAlreadyHeld
from vendor_server import VendorServer


def load_vendorapp(port: int) -> ModuleType:
    os.environ["PYLOCKS_TEST_REDIS_PORT"] = str(port)
    spec = importlib.util.spec_from_file_location(f"vendorapp_{port}", TESTS / "vendorapp.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def vendor(server, tmp_path, request) -> Iterator[SimpleNamespace]:
    """The vendor endpoint, the producer's copy of vendorapp and 2 workers of 3 threads."""
    endpoint = VendorServer(delay=0.5)
    os.environ["VENDOR_URL"] = endpoint.url  # the workers inherit it
    app = load_vendorapp(server.port)
    workers = []
    try:
        for i in (1, 2):
            w = Worker(app, f"vendor{i}-{server.kind}@pylocks", tmp_path / f"worker-vendor{i}.log",
                       pool="threads", concurrency=3, app="vendorapp")
            register_log(request, w.log)
            workers.append(w)
        for w in workers:
            w.wait_ready()
        yield SimpleNamespace(app=app, endpoint=endpoint, workers=workers, name=uuid.uuid4().hex[:10])
    finally:
        for w in workers:
            w.stop()
        app.celery_app.close()
        endpoint.stop()


@pytest.mark.parametrize("task", ["submit_order", "submit_order_retrying"])
def test_six_tasks_two_processes_three_threads_at_most_two_calls_at_once(vendor, task) -> None:
    """Peak concurrency at the endpoint is exactly 2 (never more, and it does reach 2), all
    6 tasks succeed, the endpoint served 6 calls, both worker processes ran some, and no
    lease is left on the key (PYLOCK.INFO)."""
    app, endpoint, v = vendor.app, vendor.endpoint, vendor.name
    started = time.monotonic()
    results = [getattr(app, task).delay(v, f"order-{i}") for i in range(6)]
    outcomes = [get_result(res, timeout=60) for res in results]
    elapsed = time.monotonic() - started
    assert [state for state, _ in outcomes] == ["SUCCESS"] * 6, outcomes
    stats = endpoint.stats(v)
    assert stats["peak"] == 2, stats
    assert sorted(stats["served"]) == sorted(f"order-{i}" for i in range(6)), stats
    assert max(reply["concurrent"] for _, reply in outcomes) == 2
    assert len({reply["worker"] for _, reply in outcomes}) == 2, outcomes  # both processes
    assert app.vendor_lock.info(v) is None
    assert elapsed >= 1.4  # 6 calls of 0.5 s, 2 at a time: 3 rounds at least


# --- the option's validation (eager: the tasks run in the caller) --------------------------------

@pytest.fixture
def eager(server, uniq) -> Iterator[SimpleNamespace]:
    app = Celery("eager13", broker="memory://", backend="cache+memory://")
    app.conf.update(task_always_eager=True, task_eager_propagates=False)
    lock = RedisLockFactory(server.client(), prefix="vendor", ttl=30, arity=1, root_prefix=uniq)
    yield SimpleNamespace(app=app, lock=lock)
    app.close()


@pytest.mark.parametrize("bad", [0, -1, 100_001, 2.0, "2", True])
def test_lock_limit_must_be_an_int_from_1_to_100000(eager, bad) -> None:
    @eager.app.task(base=LockedTask, bind=True, lock=eager.lock, lock_limit=bad)
    def t(self, vendor: str) -> str:
        return "ran"

    with pytest.raises(ValueError, match="lock_limit must be an int from 1 to 100000"):
        t.delay("v")  # eager: raised at the call
    with pytest.raises(ValueError, match="lock_limit"):
        t("v")
    assert eager.lock.info("v") is None


def test_lock_limit_conflicting_with_the_factorys_limit_is_refused(eager) -> None:
    three = RedisLockFactory(eager.lock.redis, prefix="vendor", ttl=30, arity=1,
                             root_prefix=eager.lock.root_prefix, limit=3)

    @eager.app.task(base=LockedTask, bind=True, lock=three, lock_limit=2)
    def t(self, vendor: str) -> str:
        return "ran"

    with pytest.raises(ValueError, match="lock_limit=2, but its lock factory was made with limit=3"):
        t("v")

    @eager.app.task(base=LockedTask, bind=True, lock=three, lock_limit=3)
    def same(self, vendor: str) -> int:
        return self.lease.token

    assert same.delay("v").get() > 0  # the same n is fine
    assert three.info("v") is None


def test_lock_limit_takes_n_places_in_the_task_and_at_enqueue(eager) -> None:
    """In the task: while 2 leases hold the key a third run finds it full (raise); with one
    holder it runs, as one of two (PYLOCK.INFO during the run). At enqueue: each
    ``apply_async`` takes a place; a third while two are queued raises, or is skipped with
    ``graceful``. The factory given to the task is left a lock."""
    lock, app = eager.lock, eager.app
    seen = []

    @app.task(base=LockedTask, bind=True, lock=lock, lock_limit=2)
    def in_task(self, vendor: str) -> str:
        info = lock.info(vendor)
        seen.append((info.limit, info.holders, self.lease.id in [l.lease_id for l in info.leases]))
        return "ran"

    two = RedisLockFactory(lock.redis, prefix="vendor", ttl=30, arity=1, root_prefix=lock.root_prefix, limit=2)
    a, b = two.acquire("v"), two.acquire("v")
    res = in_task.delay("v")
    assert res.state == "FAILURE" and isinstance(res.result, LockAlreadyHeld), res.result
    b.release()
    assert in_task.delay("v").get() == "ran"
    assert seen == [(2, 2, True)]
    a.release()
    assert lock.info("v") is None and lock.limit is None

    queued = []

    @app.task(base=LockedTask, bind=True, lock=lock, lock_limit=2, lock_mode="enqueue")
    def enqueued(self, vendor: str) -> str:
        queued.append(self.lease.claimed_from)
        return "ran"

    # eager runs at once; take the places the way two queued messages would hold them
    x, y = two.acquire("w"), two.acquire("w")
    with pytest.raises(LockAlreadyHeld):
        enqueued.delay("w")
    assert enqueued.apply_async(("w",), graceful=True) is None
    y.release()
    res = enqueued.delay("w")
    assert res.get() == "ran" and queued == [res.lease.id]
    x.release()
    assert lock.info("w") is None


def test_a_mismatched_limit_on_an_existing_key_raises_limit_mismatch(eager) -> None:
    """The key is held as a semaphore of 3 (or a lock): the task with lock_limit=2 fails with
    LimitMismatch, at the run (in the task) or at ``apply_async`` (enqueue mode); the key is
    unchanged."""
    lock, app = eager.lock, eager.app
    three = RedisLockFactory(lock.redis, prefix="vendor", ttl=30, arity=1, root_prefix=lock.root_prefix, limit=3)

    @app.task(base=LockedTask, bind=True, lock=lock, lock_limit=2, lock_held="wait", lock_wait=1)
    def in_task(self, vendor: str) -> str:
        return "ran"

    @app.task(base=LockedTask, bind=True, lock=lock, lock_limit=2, lock_mode="enqueue")
    def enqueued(self, vendor: str) -> str:
        return "ran"

    held = three.acquire("v")
    res = in_task.delay("v")
    assert res.state == "FAILURE" and isinstance(res.result, LimitMismatch), res.result
    assert "3" in str(res.result)
    with pytest.raises(LimitMismatch):
        enqueued.delay("v")
    info = three.info("v")
    assert info.limit == 3 and [l.lease_id for l in info.leases] == [held.id]
    held.release()

    plain = lock.acquire("u")  # a lock: n = 1
    assert isinstance(in_task.delay("u").result, LimitMismatch)
    assert lock.info("u").lease_id == plain.id
    plain.release()
