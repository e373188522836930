"""CLAIM and WATCH from Python, against real servers (Redis 7.0 and Valkey, see conftest.py)."""

from __future__ import annotations

import threading
import time
from typing import List

import pytest
import redis

from pylocks import LeaseLost, LockClaimed, LockNotHeld, LockNotOwned
from pylocks.blocking import LEASE_ENDS, RedisLockFactory


@pytest.fixture
def person_lock(r: redis.Redis, uniq: str) -> RedisLockFactory:
    return RedisLockFactory(r, prefix="person", ttl=60, arity=1, root_prefix=f"t{uniq}")


def test_claim_passes_the_lease_on_and_a_second_claimant_is_refused(person_lock: RedisLockFactory) -> None:
    sent = person_lock.acquire(1)
    run_a = person_lock.claim(1, sent.id)
    assert run_a.id != sent.id and run_a.token > sent.token
    assert person_lock.info(1).lease_id == run_a.id
    # The same claim again (what a retry after a lost reply sends): the same lease.
    again = person_lock.claim(1, sent.id, new_id=run_a.id)
    assert (again.id, again.token) == (run_a.id, run_a.token)
    # A duplicate run of the same message: LockClaimed, a kind of LockNotOwned and LeaseLost.
    with pytest.raises(LockClaimed) as caught:
        person_lock.claim(1, sent.id)
    assert isinstance(caught.value, LockNotOwned) and isinstance(caught.value, LeaseLost)
    assert str(caught.value).startswith("CLAIMED ")
    assert (caught.value.key, caught.value.lease_id) == (sent.key, sent.id)
    # The old handle is refused everywhere with LockClaimed; the lock is untouched.
    for call in (sent.confirm, sent.release, lambda: sent.extend(5)):
        with pytest.raises(LockClaimed):
            call()
    assert sent.watch() == "claimed"
    assert person_lock.info(1).lease_id == run_a.id
    run_a.release()
    assert person_lock.info(1) is None


def test_claim_with_extend_and_refusals(person_lock: RedisLockFactory) -> None:
    sent = person_lock.acquire(2, ttl=30)
    claimed = sent.claim(extend=90)
    assert 89_000 < claimed.ttl_ms <= 90_000
    with pytest.raises(ValueError):
        claimed.claim(new_id=claimed.id)
    with pytest.raises(LockNotHeld):
        person_lock.claim(3, "nobody")
    with pytest.raises(LockNotOwned) as caught:
        person_lock.claim(2, "someone-else")
    assert not isinstance(caught.value, LockClaimed)


def _watch_in_thread(handle, out: List[object]) -> threading.Thread:
    t = threading.Thread(target=lambda: out.append(handle.watch(timeout=10)))
    t.start()
    return t


def _wait_watching(r: redis.Redis, n: int) -> None:
    deadline = time.monotonic() + 5
    while int(r.info("pylock")["pylock_watching"]) != n:
        assert time.monotonic() < deadline, "watcher never blocked"
        time.sleep(0.005)


def test_watch_answers_each_reason(person_lock: RedisLockFactory, r: redis.Redis) -> None:
    assert set(LEASE_ENDS) >= {"released", "expired", "claimed", "deleted", "flushed"}
    h = person_lock.acquire(10)
    assert h.watch(timeout=0.05) is None  # still held after the timeout
    for end, reason in [
        (lambda h: h.release(), "released"),
        (lambda h: h.claim(), "claimed"),
        (lambda h: r.delete(h.key), "deleted"),
    ]:
        h = person_lock.acquire(12)
        out: List[object] = []
        t = _watch_in_thread(h, out)
        _wait_watching(r, 1)
        started = time.monotonic()
        end(h)
        t.join(5)
        assert out == [reason]
        assert time.monotonic() - started < 1.0
        if person_lock.info(12) is not None:
            r.delete(h.key)
    short = person_lock.acquire(13, ttl=0.2)
    assert short.watch(timeout=5) == "expired"
    assert short.watch() == "notheld"
    other = person_lock.acquire(14)
    assert person_lock.get_handle(14, other.id).watch(timeout=0.01) is None
    with pytest.raises(LockNotOwned):
        person_lock.get_handle(14, "not-mine")


def test_watching_in_the_background_sets_the_event_and_calls_back(person_lock: RedisLockFactory,
                                                                   r: redis.Redis) -> None:
    h = person_lock.acquire(20)
    seen: List[str] = []
    with h.watching(on_lost=seen.append, poll=0.2) as watch:
        watch.check()  # held: nothing raised
        assert not watch.lost.wait(0.3)
        r.delete(h.key)
        assert watch.lost.wait(2)
        assert watch.reason == "deleted" and seen == ["deleted"]
        with pytest.raises(LockNotHeld):
            watch.check()
    # Claimed: check() raises LockClaimed.
    h = person_lock.acquire(21)
    with h.watching(poll=0.2) as watch:
        person_lock.claim(21, h.id)
        assert watch.lost.wait(2)
        with pytest.raises(LockClaimed):
            watch.check()
    # Stopping a watch of a lease that still holds returns within the poll time.
    h = person_lock.acquire(22)
    watch = h.watching(poll=0.2)
    t0 = time.monotonic()
    watch.stop()
    assert time.monotonic() - t0 < 1.0
    assert not watch.lost.is_set() and watch.reason is None
    assert int(r.info("pylock")["pylock_watching"]) == 0
