"""The seed README's two examples, run by a real Celery 5 worker (prefork, 2 processes).

Each test uses fresh person ids, so tests sharing a worker never touch the same lock or counter.
"""

from __future__ import annotations

import time
import uuid

import pytest

from celery_support import get_result, wait_for
from pylocks.errors import LockAlreadyHeld, LockNotHeld, LockNotOwned


def person() -> str:
    return uuid.uuid4().hex[:10]


def test_without_a_lock_concurrent_increments_are_lost(celery) -> None:
    """Control: the race is real with 2 worker processes, so the exact counts below mean something."""
    p = person()
    results = [celery.lockapp.add_to_person_unlocked.delay(p, 1, 0.2) for _ in range(6)]
    for res in results:
        assert get_result(res)[0] == "SUCCESS"
    assert celery.counter(p) < 6


def test_pattern1_lock_in_task_fails_fast_and_counts_exactly(celery) -> None:
    """Example 1 as written: a task that finds the lock held fails with LockAlreadyHeld and
    changes nothing; every task that ran applied its amount exactly once."""
    p1, p2 = person(), person()
    sent = [(p, amount, celery.lockapp.add_to_person.delay(p, amount, 0.2))
            for amount in (1, 2, 4, 8, 16, 32) for p in (p1, p2)]
    applied = {p1: 0, p2: 0}
    refused = 0
    for p, amount, res in sent:
        state, result = get_result(res)
        if state == "SUCCESS":
            applied[p] += amount
        else:
            assert state == "FAILURE" and isinstance(result, LockAlreadyHeld), (state, result)
            refused += 1
    # distinct powers of two: the counter tells exactly which tasks wrote
    assert {p1: celery.counter(p1), p2: celery.counter(p2)} == applied
    assert sum(applied.values()) > 0
    if refused:
        wait_for(lambda: "was already held" in celery.worker.log_text(), 5, what="the log line")
    assert celery.lockapp.person_lock.info(p1) is None and celery.lockapp.person_lock.info(p2) is None


def test_pattern1_waiting_for_the_lock_applies_every_task(celery) -> None:
    p = person()
    results = [celery.lockapp.add_to_person_waiting.delay(p, 1, 0.1) for _ in range(8)]
    assert [get_result(res)[0] for res in results] == ["SUCCESS"] * 8
    assert celery.counter(p) == 8


def test_pattern2_lease_passed_to_the_task_counts_exactly(celery) -> None:
    """Example 2: lock before enqueuing, hand the lease id over. The enqueuer waits for the lock
    (the previous task for that person releases it), so every task runs and applies once."""
    p1, p2 = person(), person()
    results = []
    for i in range(8):
        p = (p1, p2)[i % 2]
        results.append(celery.lockapp.enqueue_add_person_task(p, i + 1, wait=30))
    assert [get_result(res)[0] for res in results] == ["SUCCESS"] * 8
    assert celery.counter(p1) == 1 + 3 + 5 + 7
    assert celery.counter(p2) == 2 + 4 + 6 + 8


def test_pattern2_enqueue_refuses_while_a_task_holds_the_lock(celery) -> None:
    p = person()
    first = celery.lockapp.enqueue_add_person_task(p, 1, countdown=1)
    with pytest.raises(LockAlreadyHeld):
        celery.lockapp.enqueue_add_person_task(p, 100)
    assert get_result(first)[0] == "SUCCESS"
    assert celery.counter(p) == 1


def test_pattern2_task_whose_lease_expired_is_refused_and_logged(celery) -> None:
    """Lease of 0.5 s, task run 1.5 s later: the task is refused (LockNotHeld), logs it, and
    writes nothing."""
    p = person()
    res = celery.lockapp.enqueue_add_person_task(p, 5, ttl=0.5, countdown=1.5)
    state, result = get_result(res)
    assert state == "FAILURE" and isinstance(result, LockNotHeld), (state, result)
    assert str(result).startswith("NOTHELD")
    assert celery.people.get("person:%s" % p) is None
    wait_for(lambda: f"on person {p} expired" in celery.worker.log_text(), 5, what="the log line")


def test_pattern2_task_whose_lock_was_taken_by_another_is_refused(celery) -> None:
    """The lease expired and someone else took the lock before the task ran: LockNotOwned, and
    the other holder's lock is untouched."""
    p = person()
    res = celery.lockapp.enqueue_add_person_task(p, 5, ttl=0.5, countdown=1.5)
    time.sleep(0.7)
    other = celery.lockapp.person_lock.acquire(p)
    state, result = get_result(res)
    assert state == "FAILURE" and isinstance(result, LockNotOwned), (state, result)
    assert celery.people.get("person:%s" % p) is None
    assert celery.lockapp.person_lock.info(p).lease_id == other.id
    other.release()
