"""Tasks built on ``pylocks.celery.LockedTask``, registered on a given Celery app.

``lockapp`` registers them on its app (so the shared prefork workers run them); the eager
tests register them on an app of their own with ``task_always_eager``. Every body records
what it saw in the "people" db, so a test can count body runs exactly:

    runs:<person>     one entry per body run: "lease id|token|claimed from|retries"
    person:<person>   the sum of the amounts applied (INCRBY)
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Callable

import redis
from celery import Celery

from pylocks.blocking import RedisLockFactory
from pylocks.celery import LockedTask


class TransientError(Exception):
    """A flaky dependency: the task fails with it, after recording its run, on early attempts."""


def register(app: Celery, person_lock: RedisLockFactory,
             people_redis: Callable[[], "redis.Redis"]) -> SimpleNamespace:
    """The locked tasks on ``app``, as attributes of the returned namespace."""

    def record(task: LockedTask, person_id: str, amount: int) -> None:
        lease = task.lease
        assert lease is not None, "a locked task's body runs holding a lease"
        people = people_redis()
        people.rpush("runs:%s" % person_id, "%s|%d|%s|%d" % (
            lease.id, lease.token, lease.claimed_from or "", task.request.retries))
        people.incrby("person:%s" % person_id, amount)

    def attempt(person_id: str) -> int:
        return int(people_redis().incr("attempts:%s" % person_id))

    opts = dict(base=LockedTask, bind=True, lock=person_lock, lock_args=("person_id",))

    # --- lock inside the task: one task per held-lock policy --------------------------------

    @app.task(name="locked.task", **opts)
    def in_task(self, person_id: str, amount: int = 1, fail: bool = False) -> str:
        record(self, person_id, amount)
        if fail:
            raise ValueError("the body failed")
        return "applied"

    @app.task(name="locked.task_retry", lock_held="retry", lock_retry_countdown=0.3,
              max_retries=50, **opts)
    def in_task_retry(self, person_id: str, amount: int = 1) -> str:
        record(self, person_id, amount)
        return "applied"

    @app.task(name="locked.task_wait", lock_held="wait", lock_wait=30, **opts)
    def in_task_wait(self, person_id: str, amount: int = 1) -> str:
        record(self, person_id, amount)
        return "applied"

    @app.task(name="locked.task_skip", lock_held="skip", **opts)
    def in_task_skip(self, person_id: str, amount: int = 1) -> str:
        record(self, person_id, amount)
        return "applied"

    @app.task(name="locked.task_flaky", lock_ttl=1, max_retries=3, **opts)
    def in_task_flaky(self, person_id: str, amount: int, fail_times: int, countdown: float) -> str:
        """Retries with ``self.retry``, keeping the lease (the default) for ``countdown``
        seconds, longer than the 1 s lease: only the extension keeps it alive."""
        record(self, person_id, 0)
        if attempt(person_id) <= fail_times:
            raise self.retry(countdown=countdown)
        people_redis().incrby("person:%s" % person_id, amount)
        return "applied"

    # --- lock before enqueuing --------------------------------------------------------------

    @app.task(name="locked.enqueue", lock_mode="enqueue", **opts)
    def enqueued(self, person_id: str, amount: int = 1) -> str:
        record(self, person_id, amount)
        return "applied"

    @app.task(name="locked.enqueue_skip", lock_mode="enqueue", lock_held="skip", **opts)
    def enqueued_skip(self, person_id: str, amount: int = 1) -> str:
        record(self, person_id, amount)
        return "applied"

    @app.task(name="locked.enqueue_wait", lock_mode="enqueue", lock_held="wait", lock_wait=30, **opts)
    def enqueued_wait(self, person_id: str, amount: int = 1) -> str:
        record(self, person_id, amount)
        return "applied"

    @app.task(name="locked.enqueue_explicit", lock_mode="enqueue", lock_lease_arg="lease_id", **opts)
    def enqueued_explicit(self, person_id: str, amount: int, lease_id: str = None) -> str:
        """The seed's explicit style side by side: a producer that acquired passes the id."""
        record(self, person_id, amount)
        return "applied"

    @app.task(name="locked.enqueue_autoretry", lock_mode="enqueue", lock_ttl=1,
              autoretry_for=(TransientError,), retry_kwargs={"max_retries": 3, "countdown": 2},
              **opts)
    def enqueued_autoretry(self, person_id: str, amount: int, fail_times: int) -> str:
        """``autoretry_for`` with a 2 s countdown and a 1 s lease: kept across the retries."""
        record(self, person_id, 0)
        if attempt(person_id) <= fail_times:
            raise TransientError("flaky dependency")
        people_redis().incrby("person:%s" % person_id, amount)
        return "applied"

    @app.task(name="locked.enqueue_release_on_retry", lock_mode="enqueue", lock_on_retry="release",
              max_retries=3, **opts)
    def enqueued_release_on_retry(self, person_id: str, amount: int, fail_times: int,
                                  countdown: float) -> str:
        record(self, person_id, 0)
        if attempt(person_id) <= fail_times:
            raise self.retry(countdown=countdown)
        people_redis().incrby("person:%s" % person_id, amount)
        return "applied"

    # --- duplicates and killed workers, in both ways of working ---------------------------

    def until_go(person_id: str) -> None:
        """Hold the lease until the test says go, so a second copy of the message arrives
        while this run works."""
        people = people_redis()
        deadline = time.monotonic() + 30
        while not people.get("go:%s" % person_id) and time.monotonic() < deadline:
            time.sleep(0.05)

    @app.task(name="locked.enqueue_duplicate", lock_mode="enqueue", **opts)
    def enqueued_duplicate(self, person_id: str, amount: int) -> str:
        record(self, person_id, amount)
        until_go(person_id)
        return "applied"

    @app.task(name="locked.task_duplicate", **opts)
    def in_task_duplicate(self, person_id: str, amount: int) -> str:
        record(self, person_id, amount)
        until_go(person_id)
        return "applied"

    def stop_until_killed(person_id: str) -> None:
        people_redis().set("stopped:%s" % person_id, 1)
        time.sleep(120)

    @app.task(name="locked.enqueue_killable", lock_mode="enqueue", acks_late=True, **opts)
    def enqueued_killable(self, person_id: str, amount: int) -> str:
        """Applies its amount, then stops until the test SIGKILLs its worker."""
        record(self, person_id, amount)
        stop_until_killed(person_id)
        return "applied"

    @app.task(name="locked.task_killable", acks_late=True, **opts)
    def in_task_killable(self, person_id: str, amount: int) -> str:
        record(self, person_id, amount)
        stop_until_killed(person_id)
        return "applied"

    # --- long tasks -------------------------------------------------------------------------

    @app.task(name="locked.long", lock_ttl=2, lock_keep_alive=True, **opts)
    def long_running(self, person_id: str, seconds: float) -> str:
        """Runs ``seconds`` on a 2 s lease renewed in the background; records whether the
        lease was lost, and why."""
        record(self, person_id, 0)
        people = people_redis()
        people.set("running:%s" % person_id, 1)
        lease = self.lease
        lease.lost.wait(seconds)
        if lease.lost.is_set():
            people.set("lost:%s" % person_id, lease.reason or "?")
            return "lost: %s" % lease.reason
        lease.check()
        return "held"

    return SimpleNamespace(**{name: value for name, value in locals().items()
                              if hasattr(value, "apply_async")})
