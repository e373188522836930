"""A Celery 5 app: the seed README's two examples, then tasks for the failure-mode tests.

The worker imports it as ``celery -A lockapp worker`` with ``PYLOCKS_TEST_REDIS_PORT`` set to
a server with the pylock module loaded. That one server plays every part, on separate dbs:

    db 0  lock store (``lock_redis()``)     db 1  Celery broker
    db 2  Celery result backend             db 3  the "people" data the tasks change

Tests load their own copy of this module for each server (see ``test_celery.py``); task names
are explicit, so the worker and the test agree on them.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Optional

import redis
from celery import Celery

from pylocks.blocking import RedisLockFactory
from pylocks.errors import LeaseLost, LockAlreadyHeld, LockClaimed

logger = logging.getLogger(__name__)

PORT = int(os.environ["PYLOCKS_TEST_REDIS_PORT"])
ROOT_PREFIX = os.environ.get("PYLOCKS_TEST_ROOT_PREFIX", "locks_example")

#: Seconds before the Redis broker hands an unacknowledged message to another worker. Celery's
#: default is one hour; the tests shorten it so a killed worker's task comes back in seconds.
VISIBILITY_TIMEOUT = 6

celery_app = Celery("lockapp", broker=f"redis://127.0.0.1:{PORT}/1",
                    backend=f"redis://127.0.0.1:{PORT}/2")
celery_app.conf.update(
    broker_connection_retry_on_startup=True,
    broker_transport_options={
        "visibility_timeout": VISIBILITY_TIMEOUT,
        # look for abandoned messages every second (kombu's default: every ~100 s)
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
    },
    worker_prefetch_multiplier=1,
    task_routes={"kill.*": {"queue": "kill"}, "slow.*": {"queue": "slow"}},
    result_expires=600,
)


def lock_redis() -> redis.Redis:
    return redis.StrictRedis(host="127.0.0.1", port=PORT, db=0)


def people_redis() -> redis.Redis:
    return redis.StrictRedis(host="127.0.0.1", port=PORT, db=3)


person_lock = RedisLockFactory(
    lock_redis(),
    prefix="person",
    ttl=60,
    arity=1,
    root_prefix=ROOT_PREFIX,
)


def read_modify_write(person_id: str, amount: int, delay: float = 0.0) -> None:
    """The examples' non-atomic increment (GET, then SET); ``delay`` widens the race window."""
    r = people_redis()
    person_key = "person:%s" % person_id
    val = int(r.get(person_key) or 0)  # the seed adds bytes to an int here; int() fixes that
    time.sleep(delay)
    r.set(person_key, val + amount)


# ---------------------------------------------------------------------------------------------
# Example 1 (seed README): take the lock inside the task; if it is held, fail.

@celery_app.task(name="pattern1.add_to_person")
def add_to_person(person_id: str, amount: int, delay: float = 0.0) -> None:
    try:
        handle = person_lock.acquire(person_id)
    except LockAlreadyHeld:
        logger.error("lock on person %s was already held", person_id, exc_info=True)
        raise
    with handle.releasing():
        read_modify_write(person_id, amount, delay)


@celery_app.task(name="pattern1.add_to_person_waiting")
def add_to_person_waiting(person_id: str, amount: int, delay: float = 0.0) -> None:
    """Example 1 with ``wait``: queue for the lock (first come, first served) instead of failing."""
    with person_lock.acquire(person_id, wait=30).releasing():
        read_modify_write(person_id, amount, delay)


@celery_app.task(name="unlocked.add_to_person")
def add_to_person_unlocked(person_id: str, amount: int, delay: float = 0.0) -> None:
    """Control: the same increment with no lock, to show the race the lock prevents is real."""
    read_modify_write(person_id, amount, delay)


# ---------------------------------------------------------------------------------------------
# Example 2 (seed README): take the lock before enqueuing; the task confirms the lease id.

@celery_app.task(name="pattern2.add_to_person")
def add_to_person_with_lease(person_id: str, lease_id: str, amount: int, delay: float = 0.0) -> None:
    try:
        handle = person_lock.get_handle(person_id, lease_id)
    except LeaseLost:  # LockNotHeld (expired) or LockNotOwned (expired, and taken by another)
        logger.error("lease %s on person %s expired", lease_id, person_id, exc_info=True)
        raise

    with handle.releasing():
        read_modify_write(person_id, amount, delay)


def enqueue_add_person_task(person_id: str, amount: int, *, ttl: Optional[float] = None,
                            wait: Optional[float] = None, countdown: Optional[float] = None):
    try:
        handle = person_lock.acquire(person_id, ttl=ttl, wait=wait)
    except LockAlreadyHeld:
        logger.error("couldn't get lock")
        raise
    return add_to_person_with_lease.apply_async([person_id, handle.id, amount], countdown=countdown)


# ---------------------------------------------------------------------------------------------
# Retries (autoretry_for): what happens to the lease between attempts.

class TransientError(Exception):
    """Stands for a flaky dependency; the task fails with it, before any write, on early attempts."""


def _attempt(person_id: str) -> int:
    return int(people_redis().incr("attempts:%s" % person_id))


@celery_app.task(name="retry.pattern2", bind=True, autoretry_for=(TransientError,),
                 retry_kwargs={"max_retries": 3, "countdown": 0.2})
def add_to_person_flaky(self, person_id: str, lease_id: str, amount: int, fail_times: int,
                        keep_lease_on_retry: bool) -> None:
    try:
        handle = person_lock.get_handle(person_id, lease_id)
    except LeaseLost:
        logger.error("lease %s on person %s lost before attempt %d", lease_id, person_id,
                     self.request.retries + 1, exc_info=True)
        raise
    keep_on = (TransientError,) if keep_lease_on_retry else ()
    with handle.releasing(keep_on=keep_on):
        if _attempt(person_id) <= fail_times:
            raise TransientError("flaky dependency")
        read_modify_write(person_id, amount)


@celery_app.task(name="retry.pattern1", bind=True, autoretry_for=(TransientError,),
                 retry_kwargs={"max_retries": 3, "countdown": 0.2})
def add_to_person_flaky_pattern1(self, person_id: str, amount: int, fail_times: int) -> None:
    with person_lock.acquire(person_id).releasing():
        if _attempt(person_id) <= fail_times:
            raise TransientError("flaky dependency")
        read_modify_write(person_id, amount)


# ---------------------------------------------------------------------------------------------
# Time limits: the task holds a lease when the limit strikes.

@celery_app.task(name="limits.hard", time_limit=1)
def hold_past_hard_limit(person_id: str, ttl: float, ignore_sigterm: bool = False) -> None:
    """At the hard limit billiard sends SIGTERM (the pool process raises SystemExit, so
    ``finally`` blocks run) and SIGKILL 0.1 s later if the process is still there.
    ``ignore_sigterm`` stands for a task that cannot unwind in time (stuck in C code, slow
    cleanup): only the SIGKILL ends it."""
    if ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with person_lock.acquire(person_id, ttl=ttl).releasing():
        people_redis().set("started:%s" % person_id, 1)
        time.sleep(30)


@celery_app.task(name="limits.soft", soft_time_limit=1, time_limit=10)
def hold_past_soft_limit(person_id: str, ttl: float) -> None:
    with person_lock.acquire(person_id, ttl=ttl).releasing():
        people_redis().set("started:%s" % person_id, 1)
        time.sleep(30)


# ---------------------------------------------------------------------------------------------
# A worker killed mid-task (SIGKILL): acks_late, so the broker redelivers the message after
# the visibility timeout. The first run of each task stops at ``stop_at`` ("before_write" or
# "after_write"), marks that it got there, and sleeps until the test kills the worker.

# The fenced write: the resource remembers the last fencing token it applied, and refuses a
# write with a token not greater (one write per lease). GET+SET become one atomic script.
FENCED_ADD = """
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[1]) <= last then return 0 end
redis.call('SET', KEYS[2], ARGV[1])
redis.call('INCRBY', KEYS[1], ARGV[2])
return 1
"""


def _stop_here(person_id: str, where: str, stop_at: str, run: int) -> None:
    if run == 1 and where == stop_at:
        people_redis().set("stopped:%s" % person_id, where)
        time.sleep(120)  # the test SIGKILLs the worker now


def claim_or_refuse(person_id: str, lease_id: str, run: int):
    """This run's claim of the message's lease (``CONFIRM … CLAIM``), or ``None`` when another
    run of the same message claimed it first: then this one must not run, and is acknowledged
    without raising (so it is not retried)."""
    try:
        return person_lock.claim(person_id, lease_id)
    except LockClaimed as err:
        logger.warning("run %d: duplicate of the message with lease %s on person %s refused: %s",
                       run, lease_id, person_id, err)
        return None


@celery_app.task(name="kill.add_to_person", acks_late=True, reject_on_worker_lost=True)
def add_to_person_killable(person_id: str, lease_id: str, amount: int, stop_at: str,
                           mode: str = "plain") -> str:
    """``mode``: "plain" (example 2 as is), "claim" (each run claims the lease: CONFIRM … CLAIM),
    "fenced" (the write carries the token)."""
    people = people_redis()
    run = int(people.incr("runs:%s" % person_id))
    try:
        if mode == "claim":
            handle = claim_or_refuse(person_id, lease_id, run)
            if handle is None:
                return "run %d refused: claimed" % run
        else:
            handle = person_lock.get_handle(person_id, lease_id)
    except LeaseLost as err:
        logger.error("run %d: lease %s on person %s refused: %s", run, lease_id, person_id, err)
        raise
    _stop_here(person_id, "before_write", stop_at, run)
    if mode == "fenced":
        applied = people.eval(FENCED_ADD, 2, "person:%s" % person_id, "fence:%s" % person_id,
                              handle.token, amount)
        if not applied:
            logger.error("run %d: write with token %d refused by the fence", run, handle.token)
    else:
        read_modify_write(person_id, amount)
    _stop_here(person_id, "after_write", stop_at, run)
    handle.release()
    return "run %d applied" % run


# ---------------------------------------------------------------------------------------------
# Two copies of one message at once: an acks_late task still running when the visibility
# timeout passes is restored to the queue by the broker and runs again beside the first.

@celery_app.task(name="slow.add_to_person_claiming", acks_late=True)
def add_to_person_slow_claiming(person_id: str, lease_id: str, amount: int, hold: float) -> str:
    people = people_redis()
    run = int(people.incr("runs:%s" % person_id))
    handle = claim_or_refuse(person_id, lease_id, run)
    if handle is None:
        people.set("refused:%s" % person_id, run)
        return "run %d refused: claimed" % run
    time.sleep(hold)  # longer than the visibility timeout: the broker hands out a copy
    with handle.releasing():
        read_modify_write(person_id, amount)
    people.set("applied:%s" % person_id, run)
    return "run %d applied" % run


# ---------------------------------------------------------------------------------------------
# A retry: the retried message carries the enqueuer's lease id again (``carry=False``, what
# ``self.retry()`` with the task's own arguments sends), or the id this attempt claimed
# (``carry=True``, the way to keep the lease across retries).

@celery_app.task(name="retry.claiming", bind=True, max_retries=2)
def add_to_person_retry_claiming(self, person_id: str, lease_id: str, amount: int,
                                 carry: bool) -> str:
    people = people_redis()
    run = int(people.incr("runs:%s" % person_id))
    handle = claim_or_refuse(person_id, lease_id, run)
    if handle is None:
        return "run %d refused: claimed" % run
    if run == 1:
        # Write, then fail in a way the task retries (a flaky notification after the write,
        # say), keeping the lease.
        read_modify_write(person_id, amount)
        people.set("wrote:%s" % person_id, 1)
        retry_lease = handle.id if carry else lease_id
        raise self.retry(args=[person_id, retry_lease, amount, carry], countdown=0.3)
    # A later attempt holds the lease (claimed from the previous attempt's): it does not write
    # again once the write is recorded, and releases.
    if not people.get("wrote:%s" % person_id):
        read_modify_write(person_id, amount)
    handle.release()
    return "run %d finished" % run


# ---------------------------------------------------------------------------------------------
# The same stories through pylocks.celery.LockedTask (tests/lockedtasks.py).

import lockedtasks  # noqa: E402 - after the app and the factory it registers on

locked = lockedtasks.register(celery_app, person_lock, people_redis)
