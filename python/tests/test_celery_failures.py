"""What Celery does to locks: retries, time limits, and a worker killed mid-task.

Findings are written up in python/CELERY.md; each test below is the evidence for one of them.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Dict, Iterator

import pytest
from celery.exceptions import TimeLimitExceeded

from celery_support import Worker, get_result, wait_for
from conftest import register_log
from pylocks.errors import LockAlreadyHeld, LockNotHeld


def person() -> str:
    return uuid.uuid4().hex[:10]


# --- retries -----------------------------------------------------------------------------------

def test_retry_after_releasing_finds_its_lease_gone(celery) -> None:
    """Example 2 + autoretry: ``releasing()`` releases on the failing attempt, so the retry
    (same message args, same lease id) is refused with LockNotHeld: the update never happens."""
    p = person()
    handle = celery.lockapp.person_lock.acquire(p)
    res = celery.lockapp.add_to_person_flaky.delay(p, handle.id, 7, 1, False)
    state, result = get_result(res)
    assert state == "FAILURE" and isinstance(result, LockNotHeld), (state, result)
    assert celery.counter(p) == 0
    assert int(celery.people.get("attempts:%s" % p)) == 1  # the retry stopped at the confirm
    wait_for(lambda: f"on person {p} lost before attempt 2" in celery.worker.log_text(), 5,
             what="the log line")


def test_retry_keeping_the_lease_applies_once(celery) -> None:
    """Same task with ``releasing(keep_on=TransientError)``: the failing attempts keep the lease,
    the retries confirm it, and the amount is applied once, then the lock is released."""
    p = person()
    handle = celery.lockapp.person_lock.acquire(p)
    res = celery.lockapp.add_to_person_flaky.delay(p, handle.id, 7, 2, True)
    assert get_result(res)[0] == "SUCCESS"
    assert celery.counter(p) == 7
    assert int(celery.people.get("attempts:%s" % p)) == 3
    assert celery.lockapp.person_lock.info(p) is None


def test_retry_with_lock_in_task_takes_a_fresh_lease_each_attempt(celery) -> None:
    """Example 1 + autoretry: each attempt acquires and releases its own lease."""
    p = person()
    res = celery.lockapp.add_to_person_flaky_pattern1.delay(p, 7, 2)
    assert get_result(res)[0] == "SUCCESS"
    assert celery.counter(p) == 7
    assert celery.lockapp.person_lock.info(p) is None


# --- time limits -------------------------------------------------------------------------------

def test_hard_time_limit_sigterm_unwinds_and_releases(celery) -> None:
    """time_limit=1 on a task holding a 20 s lease: the result is TimeLimitExceeded first, then
    billiard SIGTERMs the pool process, SystemExit unwinds through ``releasing()``, and the lock
    is released within moments, long before its TTL."""
    p = person()
    lock = celery.lockapp.person_lock
    res = celery.lockapp.hold_past_hard_limit.delay(p, 20)
    state, result = get_result(res)
    assert state == "FAILURE" and isinstance(result, TimeLimitExceeded), (state, result)
    wait_for(lambda: lock.info(p) is None, 3, what="the release on SIGTERM")
    lock.acquire(p).release()


def test_hard_time_limit_sigkill_leaves_the_lock_held_until_its_ttl(celery) -> None:
    """Same, but the pool process cannot unwind within billiard's 0.1 s (here it ignores SIGTERM):
    SIGKILL ends it, no ``finally`` runs, and the lock stays held (others get LockAlreadyHeld)
    until the 4 s TTL expires it."""
    p = person()
    lock = celery.lockapp.person_lock
    res = celery.lockapp.hold_past_hard_limit.delay(p, 4, True)
    state, result = get_result(res)
    assert state == "FAILURE" and isinstance(result, TimeLimitExceeded), (state, result)
    time.sleep(0.5)  # past the SIGKILL
    info = lock.info(p)
    assert info is not None and 0 < info.ttl_ms < 3500, info
    with pytest.raises(LockAlreadyHeld):
        lock.acquire(p)
    wait_for(lambda: lock.info(p) is None, (info.ttl_ms + 2000) / 1000, what="the TTL")
    lock.acquire(p).release()


def test_soft_time_limit_releases_through_releasing(celery) -> None:
    """soft_time_limit raises SoftTimeLimitExceeded inside the task: ``releasing()`` releases."""
    p = person()
    res = celery.lockapp.hold_past_soft_limit.delay(p, 30)
    state, result = get_result(res)
    assert state == "FAILURE" and type(result).__name__ == "SoftTimeLimitExceeded", (state, result)
    assert celery.people.get("started:%s" % p) == b"1"
    assert celery.lockapp.person_lock.info(p) is None


# --- a worker killed mid-task ------------------------------------------------------------------

# name: (mode, where the first run stops, lease ttl in seconds)
SCENARIOS = {
    "plain_before_write": ("plain", "before_write", 60),
    "plain_after_write": ("plain", "after_write", 60),
    "plain_expired": ("plain", "before_write", 3),
    "claim_before_write": ("claim", "before_write", 60),
    "claim_after_write": ("claim", "after_write", 60),
    "fenced_after_write": ("fenced", "after_write", 60),
}
AMOUNT = 5


@pytest.fixture(scope="session")
def kill_outcome(celery_env) -> Iterator[Dict[str, dict]]:
    """Runs once per server: six acks_late tasks (example 2 variants) start on a victim worker
    and stop at their checkpoint; the victim is SIGKILLed; a rescuer worker gets the messages
    back after the visibility timeout and runs them again. Returns what each one did."""
    app = celery_env.lockapp
    kind = celery_env.server.kind
    victim = Worker(app, f"victim-{kind}@pylocks", celery_env.tmp / "worker-victim.log",
                    pool="threads", concurrency=len(SCENARIOS), queues="kill")
    rescuer = None
    try:
        victim.wait_ready()
        persons = {name: person() for name in SCENARIOS}
        sent = {}
        for name, (mode, stop_at, ttl) in SCENARIOS.items():
            p = persons[name]
            handle = app.person_lock.acquire(p, ttl=ttl)
            sent[name] = (handle, app.add_to_person_killable.apply_async(
                [p, handle.id, AMOUNT, stop_at, mode]))
        people = celery_env.people
        wait_for(lambda: all(people.get("stopped:%s" % p) for p in persons.values()), 30,
                 what="every first run at its checkpoint")
        killed_at = time.monotonic()
        victim.kill()
        rescuer = Worker(app, f"rescuer-{kind}@pylocks", celery_env.tmp / "worker-rescuer.log",
                         pool="threads", concurrency=len(SCENARIOS), queues="kill")
        rescuer.wait_ready()
        outcome = {}
        for name, (handle, res) in sent.items():
            state, result = get_result(res, timeout=60)
            p = persons[name]
            outcome[name] = {
                "person": p,
                "lease": handle.id,
                "state": state,
                "result": result,
                "counter": celery_env.counter(p),
                "runs": int(people.get("runs:%s" % p) or 0),
                "info": app.person_lock.info(p),
            }
        outcome["_redelivery_seconds"] = time.monotonic() - killed_at
        outcome["_logs"] = [victim.log, rescuer.log]
        yield outcome
    finally:
        victim.stop()
        if rescuer is not None:
            rescuer.stop()


@pytest.fixture
def killed(kill_outcome, request: pytest.FixtureRequest) -> Dict[str, dict]:
    for log in kill_outcome["_logs"]:
        register_log(request, Path(log))
    return kill_outcome


def test_killed_before_write_redelivery_applies_once(killed) -> None:
    """Lease still live when the message comes back: the second run confirms it and applies
    the amount once. The lease model gives exactly-once here."""
    o = killed["plain_before_write"]
    assert (o["state"], o["runs"], o["counter"]) == ("SUCCESS", 2, AMOUNT), o
    assert o["info"] is None


def test_killed_after_write_redelivery_applies_twice(killed) -> None:
    """THE GAP: the first run wrote, then died before RELEASE. Its lease is still live, so the
    second run (same message, same lease id) confirms it and applies the amount AGAIN."""
    o = killed["plain_after_write"]
    assert (o["state"], o["runs"], o["counter"]) == ("SUCCESS", 2, 2 * AMOUNT), o


def test_killed_and_lease_expired_before_redelivery_is_refused(killed) -> None:
    """Lease TTL (3 s) shorter than the redelivery delay (visibility timeout 6 s): the second
    run is refused with LockNotHeld and the update is lost: at-most-once."""
    o = killed["plain_expired"]
    assert o["state"] == "FAILURE" and isinstance(o["result"], LockNotHeld), o
    assert (o["runs"], o["counter"]) == (2, 0), o


def test_claim_refuses_the_redelivery_after_write(killed) -> None:
    """Each run claims the enqueuer's lease (CONFIRM … CLAIM). The redelivered copy finds it
    claimed by the dead first run: refused with CLAIMED, acknowledged without running and not
    retried (SUCCESS, "refused"), and the amount stays applied once."""
    o = killed["claim_after_write"]
    assert o["state"] == "SUCCESS" and o["result"] == "run 2 refused: claimed", o
    assert (o["runs"], o["counter"]) == (2, AMOUNT), o
    assert o["info"] is not None and o["info"].lease_id != o["lease"]


def test_claim_also_refuses_a_redelivery_whose_first_run_died_before_writing(killed) -> None:
    """What CLAIM does not solve: the first run claimed, then died before writing. The copy is
    refused all the same, so the update is not made, and the dead run's claimed lease keeps
    the lock until its TTL. The application must enqueue the work again."""
    o = killed["claim_before_write"]
    assert o["state"] == "SUCCESS" and o["result"] == "run 2 refused: claimed", o
    assert (o["runs"], o["counter"]) == (2, 0), o
    assert o["info"] is not None and o["info"].lease_id != o["lease"]


def test_claim_refused_redelivery_is_logged(killed) -> None:
    text = "".join(Path(log).read_text(errors="replace") for log in killed["_logs"])
    for name in ("claim_after_write", "claim_before_write"):
        p = killed[name]["person"]
        assert f"on person {p} refused: CLAIMED" in text, name


def test_fenced_write_refuses_the_second_apply(killed) -> None:
    """The resource keeps the last fencing token it applied and refuses a write whose token is
    not greater. The redelivered copy holds the same lease, so the same token: refused by the
    fence, not by the lock. Applied once."""
    o = killed["fenced_after_write"]
    assert (o["state"], o["runs"], o["counter"]) == ("SUCCESS", 2, AMOUNT), o


def test_redelivery_waited_for_the_visibility_timeout(killed, celery) -> None:
    assert killed["_redelivery_seconds"] >= celery.lockapp.VISIBILITY_TIMEOUT - 2


# --- two copies of one message at once, and retries, with CLAIM -------------------------------

def test_a_copy_restored_while_the_first_run_lives_is_refused(celery_env, request) -> None:
    """acks_late and a task longer than the visibility timeout: the broker restores the message
    while the first run is still working, and the copy runs beside it. The copy's claim is
    refused (CLAIMED); the first run writes once and releases."""
    app = celery_env.lockapp
    worker = Worker(app, f"slow-{celery_env.server.kind}@pylocks", celery_env.tmp / "worker-slow.log",
                    pool="threads", concurrency=2, queues="slow")
    register_log(request, worker.log)
    try:
        worker.wait_ready()
        p = person()
        handle = app.person_lock.acquire(p, ttl=60)
        app.add_to_person_slow_claiming.apply_async([p, handle.id, AMOUNT,
                                                     app.VISIBILITY_TIMEOUT + 4])
        people = celery_env.people
        wait_for(lambda: people.get("applied:%s" % p) is not None, 60, what="the first run's write")
        assert people.get("refused:%s" % p) == b"2"
        assert people.get("applied:%s" % p) == b"1"
        assert int(people.get("runs:%s" % p)) == 2
        assert celery_env.counter(p) == AMOUNT
        assert app.person_lock.info(p) is None
        wait_for(lambda: f"on person {p} refused: CLAIMED" in worker.log_text(), 5, what="the log line")
    finally:
        worker.stop()


def test_a_retry_with_the_enqueuers_lease_is_refused_after_the_write(celery) -> None:
    """The first attempt claims, writes, then retries with the task's own arguments (the
    enqueuer's lease id): the retry's claim is refused, so the write is not made twice."""
    p = person()
    handle = celery.lockapp.person_lock.acquire(p, ttl=10)
    res = celery.lockapp.add_to_person_retry_claiming.delay(p, handle.id, AMOUNT, False)
    state, result = get_result(res)
    assert (state, result) == ("SUCCESS", "run 2 refused: claimed"), (state, result)
    assert celery.counter(p) == AMOUNT
    assert int(celery.people.get("runs:%s" % p)) == 2


def test_a_retry_carrying_the_claimed_lease_goes_on(celery) -> None:
    """Passing the id this attempt claimed to the retry keeps the lease across it: the retry
    claims from it, sees the write done, and releases."""
    p = person()
    handle = celery.lockapp.person_lock.acquire(p, ttl=10)
    res = celery.lockapp.add_to_person_retry_claiming.delay(p, handle.id, AMOUNT, True)
    state, result = get_result(res)
    assert (state, result) == ("SUCCESS", "run 2 finished"), (state, result)
    assert celery.counter(p) == AMOUNT
    assert celery.lockapp.person_lock.info(p) is None
