"""A Celery 5 app with the same tasks on three lock task base classes: celery-once's
``QueueOnce``, celery-singleton's ``Singleton`` and pylocks' ``LockedTask`` (lock before
enqueuing, the mode the other two have). ``test_celery_comparison.py`` runs the failure modes
of python/CELERY.md on each and renders the comparison table from what it sees.

The worker imports it as ``celery -A compareapp worker`` with ``PYLOCKS_TEST_REDIS_PORT`` set
to a server with the pylock module loaded, which plays every part, as for ``lockapp``:

    db 0  lock store (all three libraries)     db 1  Celery broker
    db 2  Celery result backend                db 3  what the tasks record

Each library's tasks (``TASKS[library][kind]``) run one body, :func:`body`, which records every
run in db 3 under the task's ``key`` argument; the lock of every task is on ``key`` alone
(celery-once's ``keys``, celery-singleton's ``unique_on``, pylocks' ``lock_args``). Every
delivery that reaches the task is counted by the ``task_prerun`` signal, before the library's
own worker-side code, and every end of one by ``task_postrun``, so a delivery refused by the
library (pylocks' ``CLAIMED``) shows as delivered and ended, with no body run.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Dict

import redis
from celery import Celery, signals
from celery_once import QueueOnce
from celery_singleton import Singleton

from pylocks.blocking import RedisLockFactory

try:
    from pylocks.celery import LockedTask
except ImportError:  # a package without pylocks.celery: its row of the table is pending
    LockedTask = None

logger = logging.getLogger(__name__)

PORT = int(os.environ["PYLOCKS_TEST_REDIS_PORT"])

#: As in ``lockapp``: a killed worker's acks_late message comes back after 6 s, not an hour.
VISIBILITY_TIMEOUT = 6
#: The lock TTL of pylocks' ``main`` and ``kill`` tasks, in seconds (a pylocks lease always has
#: one). Longer than the visibility timeout plus a loaded machine's delays, so a killed worker's
#: message comes back while the lease still lives. celery-once's and celery-singleton's ``main``
#: and ``kill`` tasks keep their library's default: one hour for celery-once, no expiry at all
#: for celery-singleton, which is what a user who sets nothing gets.
LOCK_TTL = 20
#: celery-once's default lock timeout (``default_timeout``), in seconds.
ONCE_DEFAULT_TTL = 60 * 60
#: The lock TTL of every library's ``short`` tasks, which outlive it (the owner check on release).
SHORT_TTL = 1
#: ``self.retry(countdown=...)`` of the retry scenario.
RETRY_COUNTDOWN = 1.0
#: How long a ``duplicate`` run works, so that two copies of one message overlap.
DUPLICATE_WORK = 1.5

QUEUE = "cmp"            # the comparison worker's queue
KILL_QUEUE = "cmp-kill"  # the victim's (and then the rescuer's) queue
DUP_QUEUE = "cmp-dup"    # filled while no one consumes it, then consumed
PARKED_QUEUE = "cmp-parked"  # probes: enqueues that must not run; never consumed

celery_app = Celery("compareapp", broker=f"redis://127.0.0.1:{PORT}/1",
                    backend=f"redis://127.0.0.1:{PORT}/2")
celery_app.conf.update(
    broker_connection_retry_on_startup=True,
    broker_transport_options={
        "visibility_timeout": VISIBILITY_TIMEOUT,
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
    },
    worker_prefetch_multiplier=1,
    task_default_queue=QUEUE,
    task_routes={"cmp.*.kill*": {"queue": KILL_QUEUE}},
    result_expires=600,
    # celery-once: its Redis backend on the lock store, default timeout left as it is
    ONCE={"backend": "celery_once.backends.Redis",
          "settings": {"url": f"redis://127.0.0.1:{PORT}/0"}},
    # celery-singleton: its Redis backend on the lock store, no lock expiry (its default)
    singleton_backend_url=f"redis://127.0.0.1:{PORT}/0",
)


def lock_redis() -> redis.Redis:
    return redis.StrictRedis(host="127.0.0.1", port=PORT, db=0)


def data_redis() -> redis.Redis:
    return redis.StrictRedis(host="127.0.0.1", port=PORT, db=3)


def _key_of(args, kwargs) -> str:
    return str((kwargs or {}).get("key") or (args or [""])[0])


@signals.task_prerun.connect
def _count_delivery(sender=None, args=None, kwargs=None, **_) -> None:
    if sender is not None and sender.name.startswith("cmp."):
        data_redis().incr("deliveries:%s" % _key_of(args, kwargs))


@signals.task_postrun.connect
def _count_end(sender=None, args=None, kwargs=None, **_) -> None:
    if sender is not None and sender.name.startswith("cmp."):
        data_redis().incr("ended:%s" % _key_of(args, kwargs))


def body(task, key: str, scenario: str) -> str:
    """The task's own work, the same under every library: counts its runs, then
    ``kill``, ``kill_early``: the first run marks that it started and works until the test
    SIGKILLs it;
    ``retry``: the first run calls ``self.retry(countdown=RETRY_COUNTDOWN)``;
    ``duplicate``: works ``DUPLICATE_WORK`` seconds, so two copies overlap;
    ``owner``: works until the test sets ``go:<key>`` (past its lock's TTL)."""
    data = data_redis()
    run = int(data.incr("body:%s" % key))
    if scenario in ("kill", "kill_early") and run == 1:
        data.set("started:%s" % key, 1)
        time.sleep(120)  # the test SIGKILLs the worker now
    elif scenario == "retry" and task.request.retries == 0:
        data.set("retrying:%s" % key, 1)
        raise task.retry(countdown=RETRY_COUNTDOWN)
    elif scenario == "duplicate":
        time.sleep(DUPLICATE_WORK)
    elif scenario == "owner":
        data.set("started:%s" % key, 1)
        deadline = time.monotonic() + 30
        while not data.get("go:%s" % key) and time.monotonic() < deadline:
            time.sleep(0.05)
    return "run %d" % run


#: What differs between a library's tasks: (lock TTL in seconds, or None for the library's
#: default; acks_late). ``kill`` and ``kill_early`` tasks are routed to ``KILL_QUEUE``.
KINDS = {
    "main": (None, False),
    "kill": (None, True),
    "kill_early": (None, False),  # Celery's default: acknowledged when the run starts
    "short": (SHORT_TTL, False),
}

TASKS: Dict[str, Dict[str, object]] = {"celery-once": {}, "celery-singleton": {}, "pylocks": {}}

for _kind, (_ttl, _acks_late) in KINDS.items():
    # celery-once: the lock is taken by apply_async; `keys` restricts it to the `key` argument.
    def _once(self, key: str, scenario: str) -> str:
        return body(self, key, scenario)
    _once_options = {"keys": ["key"]}
    if _ttl is not None:
        _once_options["timeout"] = _ttl
    TASKS["celery-once"][_kind] = celery_app.task(
        _once, name="cmp.once.%s" % _kind, base=QueueOnce, bind=True, acks_late=_acks_late,
        once=_once_options)

    def _singleton(self, key: str, scenario: str) -> str:
        return body(self, key, scenario)
    TASKS["celery-singleton"][_kind] = celery_app.task(
        _singleton, name="cmp.singleton.%s" % _kind, base=Singleton, bind=True,
        acks_late=_acks_late, unique_on=["key"], lock_expiry=_ttl)

    if LockedTask is not None:
        def _pylocks(self, key: str, scenario: str) -> str:
            return body(self, key, scenario)
        _pylocks_ttl = LOCK_TTL if _ttl is None else _ttl
        TASKS["pylocks"][_kind] = celery_app.task(
            _pylocks, name="cmp.pylocks.%s" % _kind, base=LockedTask, bind=True,
            acks_late=_acks_late, lock_mode="enqueue", lock_args=("key",), lock_ttl=_pylocks_ttl,
            lock=RedisLockFactory(lock_redis(), prefix="cmp", ttl=_pylocks_ttl, arity=1,
                                  root_prefix="compare"))
