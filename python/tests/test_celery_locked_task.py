"""pylocks.celery.LockedTask under real prefork Celery workers, and in eager mode.

Every test runs on Redis 7.0 and on Valkey 9 (the ``server`` fixture), with the tasks of
``tests/lockedtasks.py``. A body run leaves one entry in ``runs:<person>`` (its lease id,
token, the id it claimed from, its retry count), so each test counts body runs exactly.
The failure modes are written up in python/CELERY.md, each naming its test here.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator, List

import pytest
from celery import Celery
from celery.exceptions import MaxRetriesExceededError

from celery_support import Worker, get_result, wait_for
from conftest import register_log
from pylocks.blocking import RedisLockFactory
from pylocks.celery import LEASE_HEADER
from pylocks.errors import LockAlreadyHeld, LockExpired

import lockedtasks


def person() -> str:
    return uuid.uuid4().hex[:10]


class Run(SimpleNamespace):
    id: str
    token: int
    claimed_from: str
    retries: int


def runs(people, p: str) -> List[Run]:
    out = []
    for raw in people.lrange("runs:%s" % p, 0, -1):
        lease_id, token, claimed_from, retries = raw.decode().split("|")
        out.append(Run(id=lease_id, token=int(token), claimed_from=claimed_from, retries=int(retries)))
    return out


def assert_claim_chain(chain: List[Run], first_from: str) -> None:
    """Each run claimed the lease the previous one held, with a larger token."""
    assert chain, "no run"
    assert chain[0].claimed_from == first_from, chain
    for before, after in zip(chain, chain[1:]):
        assert after.claimed_from == before.id, chain
        assert after.token > before.token, chain
        assert after.id != before.id, chain


# --- lock inside the task: the held-lock policies ---------------------------------------------

def test_task_lock_raises_when_held_and_releases_after_a_run(celery) -> None:
    app = celery.lockapp
    p = person()
    mine = app.person_lock.acquire(p)
    state, result = get_result(app.locked.in_task.delay(p, 1))
    assert state == "FAILURE" and isinstance(result, LockAlreadyHeld), (state, result)
    assert runs(celery.people, p) == []
    assert app.person_lock.info(p).lease_id == mine.id  # another's lock is untouched
    mine.release()
    assert get_result(app.locked.in_task.delay(p, 4)) == ("SUCCESS", "applied")
    (run,) = runs(celery.people, p)
    assert run.claimed_from == "" and run.token > mine.token
    assert celery.counter(p) == 4
    assert app.person_lock.info(p) is None


def test_task_lock_is_released_when_the_body_fails(celery) -> None:
    app = celery.lockapp
    p = person()
    state, result = get_result(app.locked.in_task.delay(p, 1, True))
    assert state == "FAILURE" and isinstance(result, ValueError), (state, result)
    assert len(runs(celery.people, p)) == 1
    assert app.person_lock.info(p) is None


def test_task_lock_held_retry_runs_once_the_lock_frees(celery) -> None:
    """``lock_held="retry"``: while another lease (1.5 s) holds the lock the task retries
    every 0.3 s without running its body; it runs once the lease has expired."""
    app = celery.lockapp
    p = person()
    app.person_lock.acquire(p, ttl=1.5)
    assert get_result(app.locked.in_task_retry.delay(p, 2)) == ("SUCCESS", "applied")
    (run,) = runs(celery.people, p)
    assert run.retries >= 1, run
    assert celery.counter(p) == 2
    assert app.person_lock.info(p) is None
    assert f"retrying in 0.3s" in celery.worker.log_text()


def test_task_lock_held_wait_queues_on_the_server(celery) -> None:
    """``lock_held="wait"``: the task waits in the server's queue (``BLOCK``, one waiter seen
    in PYLOCK.INFO) and gets the lock the moment its holder releases."""
    app = celery.lockapp
    p = person()
    mine = app.person_lock.acquire(p)
    res = app.locked.in_task_wait.delay(p, 3)
    wait_for(lambda: app.person_lock.info(p).waiters == 1, 20, what="the task waiting for the lock")
    assert runs(celery.people, p) == []
    mine.release()
    assert get_result(res) == ("SUCCESS", "applied")
    assert len(runs(celery.people, p)) == 1 and celery.counter(p) == 3
    assert app.person_lock.info(p) is None


def test_task_lock_held_skip_returns_without_running(celery) -> None:
    app = celery.lockapp
    p = person()
    mine = app.person_lock.acquire(p)
    assert get_result(app.locked.in_task_skip.delay(p, 1)) == ("SUCCESS", None)
    assert runs(celery.people, p) == []
    assert app.person_lock.info(p).lease_id == mine.id
    wait_for(lambda: "skipped: lock %s is held" % app.person_lock.key(p) in celery.worker.log_text(), 5,
             what="the log line")


# --- lock before enqueuing ----------------------------------------------------------------------

def test_enqueue_lease_travels_in_the_headers_and_is_claimed(celery) -> None:
    """``delay`` acquires; the message carries the lease in its headers (the task's arguments
    are only ``(person_id, amount)``); the run claims it: a new id, a larger token."""
    app = celery.lockapp
    p = person()
    res = app.locked.enqueued.delay(p, 5)
    producer = res.lease
    assert producer.key == app.person_lock.key(p)
    assert get_result(res) == ("SUCCESS", "applied")
    (run,) = runs(celery.people, p)
    assert run.claimed_from == producer.id and run.id != producer.id and run.token > producer.token
    assert celery.counter(p) == 5
    assert app.person_lock.info(p) is None


def test_enqueue_refuses_or_skips_while_the_lock_is_held(celery) -> None:
    app = celery.lockapp
    p = person()
    mine = app.person_lock.acquire(p)
    with pytest.raises(LockAlreadyHeld):
        app.locked.enqueued.delay(p, 1)
    assert app.locked.enqueued.apply_async((p, 1), graceful=True) is None
    assert app.locked.enqueued_skip.delay(p, 1) is None
    assert app.person_lock.info(p).lease_id == mine.id
    mine.release()
    assert get_result(app.locked.enqueued.delay(p, 7)) == ("SUCCESS", "applied")
    assert len(runs(celery.people, p)) == 1 and celery.counter(p) == 7


def test_enqueue_held_wait_queues_the_producer_on_the_server(celery) -> None:
    """``lock_held="wait"`` in enqueue mode: ``delay`` waits in the server's queue (one waiter
    in PYLOCK.INFO) and sends the task once the holder releases."""
    app = celery.lockapp
    p = person()
    mine = app.person_lock.acquire(p)
    sent = []
    producer = threading.Thread(target=lambda: sent.append(app.locked.enqueued_wait.delay(p, 2)))
    producer.start()
    try:
        wait_for(lambda: app.person_lock.info(p).waiters == 1, 20, what="the producer waiting")
        assert sent == []
        mine.release()
    finally:
        producer.join(30)
    (res,) = sent
    assert get_result(res) == ("SUCCESS", "applied")
    (run,) = runs(celery.people, p)
    assert run.claimed_from == res.lease.id
    assert app.person_lock.info(p) is None


def test_enqueue_skip_deduplicates_a_second_enqueue(celery) -> None:
    """While the first message waits (countdown), the second enqueue of the same person is
    dropped (``None``); the body runs once."""
    app = celery.lockapp
    p = person()
    first = app.locked.enqueued_skip.apply_async((p, 1), countdown=1)
    assert app.locked.enqueued_skip.delay(p, 1) is None
    assert get_result(first) == ("SUCCESS", "applied")
    assert len(runs(celery.people, p)) == 1
    assert app.person_lock.info(p) is None


def test_enqueue_explicit_lease_argument_side_by_side(celery) -> None:
    """The seed's style: the producer acquires and passes the lease id as an argument;
    ``apply_async`` takes no lock of its own and the task claims the given lease."""
    app = celery.lockapp
    p = person()
    handle = app.person_lock.acquire(p)
    res = app.locked.enqueued_explicit.delay(p, 3, handle.id)
    assert getattr(res, "lease", None) is None
    assert get_result(res) == ("SUCCESS", "applied")
    (run,) = runs(celery.people, p)
    assert run.claimed_from == handle.id
    assert app.person_lock.info(p) is None


# --- retries --------------------------------------------------------------------------------

def test_retry_keeps_the_lease_across_autoretry(celery) -> None:
    """``autoretry_for`` with a 2 s countdown on a 1 s lease: each retry's message carries the
    id the previous run claimed, extended over the countdown; the lock stays held between
    attempts (a graceful enqueue is refused then) and the amount is applied once."""
    app = celery.lockapp
    p = person()
    res = app.locked.enqueued_autoretry.delay(p, 5, 2)
    wait_for(lambda: len(runs(celery.people, p)) >= 1, 20, what="the first attempt")
    first = runs(celery.people, p)[0]
    time.sleep(1.2)  # past the lease's own 1 s: only the extension keeps it
    assert app.person_lock.info(p) is not None
    assert app.locked.enqueued_autoretry.apply_async((p, 5, 0), graceful=True) is None
    assert get_result(res, timeout=40) == ("SUCCESS", "applied")
    chain = runs(celery.people, p)
    assert len(chain) == 3 and chain[0].id == first.id
    assert_claim_chain(chain, res.lease.id)
    assert [r.retries for r in chain] == [0, 1, 2]
    assert celery.counter(p) == 5
    assert app.person_lock.info(p) is None


def test_retry_keeps_the_lease_of_a_lock_taken_in_the_task(celery) -> None:
    """Lock inside the task, ``self.retry(countdown=2)`` on a 1 s lease: the retried run
    claims the lease the first run acquired."""
    app = celery.lockapp
    p = person()
    assert get_result(app.locked.in_task_flaky.delay(p, 5, 1, 2.0), timeout=40) == ("SUCCESS", "applied")
    chain = runs(celery.people, p)
    assert len(chain) == 2 and chain[0].claimed_from == ""
    assert chain[1].claimed_from == chain[0].id and chain[1].token > chain[0].token
    assert celery.counter(p) == 5
    assert app.person_lock.info(p) is None


def test_retry_with_release_frees_the_lock_during_the_countdown(celery) -> None:
    """``lock_on_retry="release"``: the lock is free while the retry waits, and the retried
    run acquires anew (it claims nothing)."""
    app = celery.lockapp
    p = person()
    res = app.locked.enqueued_release_on_retry.delay(p, 5, 1, 3.0)
    wait_for(lambda: len(runs(celery.people, p)) >= 1, 20, what="the first attempt")
    wait_for(lambda: app.person_lock.info(p) is None, 2.5, what="the release before the retry")
    assert get_result(res, timeout=40) == ("SUCCESS", "applied")
    chain = runs(celery.people, p)
    assert len(chain) == 2
    assert chain[0].claimed_from == res.lease.id and chain[1].claimed_from == ""
    assert celery.counter(p) == 5
    assert app.person_lock.info(p) is None


def test_retries_exhausted_release_the_lease(celery) -> None:
    """No retry is sent once ``max_retries`` is reached: the kept lease is released."""
    app = celery.lockapp
    p = person()
    state, result = get_result(app.locked.in_task_flaky.delay(p, 5, 10, 0.2), timeout=40)
    assert state == "FAILURE" and isinstance(result, MaxRetriesExceededError), (state, result)
    assert len(runs(celery.people, p)) == 4 and celery.counter(p) == 0
    assert app.person_lock.info(p) is None


# --- revocation -----------------------------------------------------------------------------

def test_a_revoked_queued_task_releases_its_lease(celery) -> None:
    """Revoked while it waits for its countdown: the worker discards it and the
    ``task_revoked`` handler releases the lease it carries, long before the 60 s TTL."""
    app = celery.lockapp
    p = person()
    res = app.locked.enqueued.apply_async((p, 1), countdown=2)
    sent = time.monotonic()
    app.celery_app.control.revoke(res.id)
    wait_for(lambda: app.person_lock.info(p) is None, 15, what="the release of the revoked task")
    assert time.monotonic() - sent < 15
    assert get_result(res)[0] == "REVOKED"
    assert runs(celery.people, p) == []
    wait_for(lambda: f"lease {res.lease.id} on {res.lease.key} released" in celery.worker.log_text(), 5,
             what="the log line")
    assert get_result(app.locked.enqueued.delay(p, 1)) == ("SUCCESS", "applied")


def test_a_terminated_run_releases_its_claimed_lease(celery) -> None:
    """``revoke(terminate=True)`` of a running task: the pool process gets SIGTERM, the run
    unwinds and releases the lease it claimed; the worker's ``task_revoked`` release by the
    message's id finds it claimed and changes nothing."""
    app = celery.lockapp
    p = person()
    res = app.locked.enqueued_duplicate.delay(p, 1)  # works until told to go
    wait_for(lambda: len(runs(celery.people, p)) == 1, 20, what="the run working")
    (run,) = runs(celery.people, p)
    assert app.person_lock.info(p).lease_id == run.id
    app.celery_app.control.revoke(res.id, terminate=True)
    wait_for(lambda: app.person_lock.info(p) is None, 15, what="the terminated run's release")
    assert get_result(res)[0] == "REVOKED"
    wait_for(lambda: f"lease {res.lease.id} on {res.lease.key} was no longer held by it"
             in celery.worker.log_text(), 5, what="the handler's log line")


def test_a_countdown_past_the_visibility_timeout_runs_once(celery) -> None:
    """A countdown longer than the broker's visibility timeout (12 s, 6 s): the worker holds
    the message unacknowledged while it waits, the broker restores it, and the worker gets a
    second copy for the same ETA. Both copies claim the lease; one runs, one is ignored."""
    app = celery.lockapp
    p = person()
    res = app.locked.enqueued.apply_async((p, 5), countdown=app.VISIBILITY_TIMEOUT + 6)
    assert get_result(res, timeout=40) == ("SUCCESS", "applied")
    # The broker restores an unacknowledged message on a periodic sweep after the visibility
    # timeout, so the copy can come well after the first run on a loaded machine.
    wait_for(lambda: f"[{res.id}]: duplicate delivery refused" in celery.worker.log_text(), 30,
             what="the restored copy refused")
    assert celery.worker.log_text().count(f"Task locked.enqueue[{res.id}] received") == 2
    assert len(runs(celery.people, p)) == 1 and celery.counter(p) == 5
    assert app.person_lock.info(p) is None


# --- long tasks -----------------------------------------------------------------------------

def test_keep_alive_holds_a_short_lease_through_a_long_task(celery) -> None:
    app = celery.lockapp
    p = person()
    assert get_result(app.locked.long_running.delay(p, 5.0)) == ("SUCCESS", "held")
    assert app.person_lock.info(p) is None


def test_keep_alive_signals_a_lost_lease_at_once(celery) -> None:
    """The watch tells the task the moment its lease ends, and why (here: DEL). The task
    stops; it still fails, with the lost lease, since it did not end holding its lock."""
    app = celery.lockapp
    p = person()
    res = app.locked.long_running.delay(p, 30.0)
    wait_for(lambda: celery.people.get("running:%s" % p), 20, what="the task running")
    deleted = time.monotonic()
    celery.server.client().delete(app.person_lock.key(p))
    wait_for(lambda: celery.people.get("lost:%s" % p), 10, what="the task told of the loss")
    assert time.monotonic() - deleted < 5
    assert celery.people.get("lost:%s" % p) == b"deleted"
    state, result = get_result(res)
    assert state == "FAILURE" and isinstance(result, LockExpired), (state, result)


# --- a duplicate delivery, and a SIGKILLed worker with acks_late ------------------------------

def _broker(celery):
    return celery.server.client(db=1)


def _copy_queued(broker, queue: str) -> None:
    """Push a byte-for-byte copy of every message waiting in ``queue``: a duplicate delivery."""
    for raw in broker.lrange(queue, 0, -1):
        broker.lpush(queue, raw)


def test_a_duplicate_delivery_runs_its_body_zero_times(celery_env, request) -> None:
    """Each message twice in the queue (byte-for-byte copies), one of each way of working,
    four worker processes: both runs of a message try to claim its lease; one gets it, the
    other gets CLAIMED and is acknowledged and logged without running its body. Then a third
    copy, after the first run succeeded and released: with the lease sent by the producer it
    is ignored as well (the result backend says SUCCESS), and the result stays; with the lock
    taken in the task it runs again, as any task would on a free lock."""
    app = celery_env.lockapp
    people = celery_env.people
    broker = _broker(celery_env)
    p1, p2 = person(), person()
    res1 = app.locked.in_task_duplicate.apply_async((p1, 3), queue="dup15")  # nobody consumes it yet
    res2 = app.locked.enqueued_duplicate.apply_async((p2, 5), queue="dup15")
    raw = broker.lrange("dup15", 0, -1)
    assert len(raw) == 2
    _copy_queued(broker, "dup15")
    worker = Worker(app, f"dup-{celery_env.server.kind}@pylocks", celery_env.tmp / "worker-dup.log",
                    pool="prefork", concurrency=4, queues="dup15")
    register_log(request, worker.log)
    try:
        worker.wait_ready()
        for res in (res1, res2):
            wait_for(lambda: f"[{res.id}]: duplicate delivery refused" in worker.log_text(), 30,
                     what="the duplicate refused")
        people.set("go:%s" % p1, 1)
        people.set("go:%s" % p2, 1)
        assert get_result(res1) == ("SUCCESS", "applied")
        assert get_result(res2) == ("SUCCESS", "applied")
        for p, amount in ((p1, 3), (p2, 5)):
            assert len(runs(people, p)) == 1 and celery_env.counter(p) == amount
            assert app.person_lock.info(p) is None
        assert worker.log_text().count("CLAIMED") >= 2
        for message in raw:
            broker.lpush("dup15", message)
        # Lock before enqueuing: the message's lease was used up; the result backend says
        # SUCCESS, so the late copy is ignored and the result stays.
        wait_for(lambda: f"[{res2.id}]: duplicate delivery of a run that succeeded" in worker.log_text(),
                 30, what="the late copy ignored")
        assert get_result(res2) == ("SUCCESS", "applied")
        assert len(runs(people, p2)) == 1 and celery_env.counter(p2) == 5
        # Lock inside the task: the lock is free again, so a late copy is a new run under it.
        wait_for(lambda: len(runs(people, p1)) == 2, 30, what="the late copy of the lock-in-task message")
        assert broker.llen("dup15") == 0
    finally:
        worker.stop()


def test_a_sigkilled_acks_late_run_is_not_run_again(celery_env, request) -> None:
    """``acks_late``, one task of each way of working: each run claims, applies its amount,
    and the worker is SIGKILLed. After the visibility timeout the broker hands the messages
    to another worker; each run finds its message's lease claimed (CLAIMED), is acknowledged
    without running, and the amounts stay applied once. The dead runs' leases keep the locks
    until their TTL."""
    app = celery_env.lockapp
    people = celery_env.people
    kind = celery_env.server.kind
    p1, p2 = person(), person()
    victim = Worker(app, f"victim15-{kind}@pylocks", celery_env.tmp / "worker-victim15.log",
                    pool="prefork", concurrency=2, queues="kill15")
    register_log(request, victim.log)
    rescuer = None
    try:
        victim.wait_ready()
        res1 = app.locked.in_task_killable.apply_async((p1, 3), queue="kill15")
        res2 = app.locked.enqueued_killable.apply_async((p2, 5), queue="kill15")
        wait_for(lambda: people.get("stopped:%s" % p1) and people.get("stopped:%s" % p2), 30,
                 what="the first runs applying")
        dead = {p: runs(people, p)[0] for p in (p1, p2)}
        victim.kill()
        killed = time.monotonic()
        rescuer = Worker(app, f"rescuer15-{kind}@pylocks", celery_env.tmp / "worker-rescuer15.log",
                         pool="prefork", concurrency=2, queues="kill15")
        register_log(request, rescuer.log)
        rescuer.wait_ready()
        for res in (res1, res2):
            wait_for(lambda: f"[{res.id}]: duplicate delivery refused" in rescuer.log_text(), 40,
                     what="the redelivery refused")
        assert time.monotonic() - killed >= app.VISIBILITY_TIMEOUT - 2
        for p, amount in ((p1, 3), (p2, 5)):
            assert len(runs(people, p)) == 1 and celery_env.counter(p) == amount
            info = app.person_lock.info(p)
            assert info is not None and info.lease_id == dead[p].id
        broker = _broker(celery_env)
        wait_for(lambda: not any(r.id.encode() in v for v in broker.hvals("unacked") for r in (res1, res2)),
                 10, what="the redelivered messages acknowledged")
        assert broker.llen("kill15") == 0
    finally:
        victim.stop()
        if rescuer is not None:
            rescuer.stop()


# --- eager mode (task_always_eager) -----------------------------------------------------------

@pytest.fixture
def eager(server, uniq) -> Iterator[SimpleNamespace]:
    """The same tasks on an app with ``task_always_eager``: they run in the caller, against
    the session's server."""
    app = Celery("eager15", broker="memory://", backend="cache+memory://")
    app.conf.update(task_always_eager=True, task_eager_propagates=False)
    lock = RedisLockFactory(server.client(), prefix="person", ttl=60, arity=1, root_prefix=uniq)
    people = server.client(db=3)
    tasks = lockedtasks.register(app, lock, lambda: people)
    yield SimpleNamespace(app=app, lock=lock, people=people, tasks=tasks)
    app.close()


def test_eager_lock_in_task(eager) -> None:
    p = person()
    res = eager.tasks.in_task.delay(p, 2)
    assert (res.state, res.result) == ("SUCCESS", "applied")
    mine = eager.lock.acquire(p)
    res = eager.tasks.in_task.delay(p, 2)
    assert res.state == "FAILURE" and isinstance(res.result, LockAlreadyHeld)
    assert eager.tasks.in_task_skip.delay(p, 2).result is None
    mine.release()
    assert len(runs(eager.people, p)) == 1 and eager.lock.info(p) is None


def test_eager_enqueue_claims_the_header_lease(eager) -> None:
    """In eager mode the lease header reaches the task in ``request.headers``."""
    p = person()
    res = eager.tasks.enqueued.delay(p, 5)
    assert (res.state, res.result) == ("SUCCESS", "applied")
    (run,) = runs(eager.people, p)
    assert run.claimed_from == res.lease.id and run.token > res.lease.token
    mine = eager.lock.acquire(p)
    with pytest.raises(LockAlreadyHeld):
        eager.tasks.enqueued.delay(p, 5)
    assert eager.tasks.enqueued.apply_async((p, 5), graceful=True) is None
    mine.release()
    assert eager.lock.info(p) is None


def test_eager_retries_claim_from_the_previous_run(eager) -> None:
    p = person()
    res = eager.tasks.enqueued_autoretry.delay(p, 5, 2)
    assert (res.state, res.result) == ("SUCCESS", "applied")
    assert_claim_chain(runs(eager.people, p), res.lease.id)
    q = person()
    res = eager.tasks.in_task_flaky.delay(q, 5, 1, 0.1)
    assert (res.state, res.result) == ("SUCCESS", "applied")
    chain = runs(eager.people, q)
    assert len(chain) == 2 and chain[1].claimed_from == chain[0].id
    assert eager.lock.info(p) is None and eager.lock.info(q) is None


def test_eager_duplicate_is_ignored_and_a_lost_lease_raises(eager) -> None:
    """A run whose lease another run claimed is IGNORED without running its body; one whose
    lease is gone fails with LockExpired."""
    p = person()
    handle = eager.lock.acquire(p)
    handle.claim()  # as if another run of the message had it
    header = {LEASE_HEADER: {"key": handle.key, "id": handle.id}}
    res = eager.tasks.enqueued.apply((p, 5), headers=header)
    assert res.state == "IGNORED"
    q = person()
    gone = eager.lock.acquire(q)
    gone.release()
    res = eager.tasks.enqueued.apply((q, 5), headers={LEASE_HEADER: {"key": gone.key, "id": gone.id}})
    assert res.state == "FAILURE" and isinstance(res.result, LockExpired)
    assert runs(eager.people, p) == [] and runs(eager.people, q) == []
