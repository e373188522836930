"""The package against real servers (Redis 7.0 and Valkey, see conftest.py): no mocks."""

from __future__ import annotations

import math
import threading
import time
import uuid
from datetime import timedelta

import pytest
import redis

from pylocks import LeaseLost, LockAlreadyHeld, LockError, LockNotHeld, LockNotOwned
from pylocks.blocking import LockInfo, RedisLockFactory, SingleLockHandle


@pytest.fixture
def person_lock(r: redis.Redis, uniq: str) -> RedisLockFactory:
    return RedisLockFactory(r, prefix="person", ttl=60, arity=1, root_prefix=f"t{uniq}")


def test_acquire_returns_a_lease(person_lock: RedisLockFactory, uniq: str) -> None:
    handle = person_lock.acquire(42)
    assert isinstance(handle, SingleLockHandle)
    assert handle.key == f"t{uniq}:person:42"
    assert isinstance(handle.id, str) and len(handle.id) == 36
    uuid.UUID(handle.id)
    assert isinstance(handle.token, int) and handle.token > 0
    assert 59_000 <= handle.ttl_ms <= 60_000
    assert handle.ttl == handle.ttl_ms / 1000
    info = person_lock.info(42)
    assert info == LockInfo(lease_id=handle.id, token=handle.token, ttl_ms=info.ttl_ms, waiters=0)


def test_contention_raises_lock_already_held_and_changes_nothing(person_lock: RedisLockFactory) -> None:
    first = person_lock.acquire(1)
    with pytest.raises(LockAlreadyHeld) as caught:
        person_lock.acquire(1)
    assert caught.value.key == first.key
    assert isinstance(caught.value, LockError)
    assert person_lock.info(1).lease_id == first.id
    # other parts are other locks
    assert person_lock.acquire(2).id != first.id


def test_acquire_with_our_lease_id_again_is_a_safe_retry(person_lock: RedisLockFactory) -> None:
    handle = person_lock.acquire(1, lease_id="job-7", ttl=5)
    again = person_lock.acquire(1, lease_id="job-7", ttl=30)
    assert (again.id, again.token) == ("job-7", handle.token)
    assert again.ttl_ms > 5_000


def test_tokens_increase_across_grants(person_lock: RedisLockFactory) -> None:
    tokens = []
    for _ in range(3):
        h = person_lock.acquire(1)
        tokens.append(h.token)
        h.release()
    assert tokens == sorted(tokens) and len(set(tokens)) == 3


def test_releasing_releases(person_lock: RedisLockFactory) -> None:
    with person_lock.acquire(1).releasing() as handle:
        assert person_lock.info(1).lease_id == handle.id
    assert person_lock.info(1) is None


def test_releasing_releases_when_the_block_raises(person_lock: RedisLockFactory) -> None:
    with pytest.raises(KeyError):
        with person_lock.acquire(1).releasing():
            raise KeyError("boom")
    assert person_lock.info(1) is None


def test_releasing_keep_on_keeps_the_lease(person_lock: RedisLockFactory) -> None:
    handle = person_lock.acquire(1)
    with pytest.raises(KeyError):
        with handle.releasing(keep_on=KeyError):
            raise KeyError("retry me")
    assert person_lock.info(1).lease_id == handle.id
    with pytest.raises(ValueError):
        with handle.releasing(keep_on=KeyError):
            raise ValueError("not kept")
    assert person_lock.info(1) is None


def test_release_of_an_expired_lease_is_an_error(person_lock: RedisLockFactory) -> None:
    handle = person_lock.acquire(1, ttl=0.05)
    time.sleep(0.15)
    with pytest.raises(LockNotHeld) as caught:
        handle.release()
    assert str(caught.value).startswith("NOTHELD ")
    assert (caught.value.key, caught.value.lease_id) == (handle.key, handle.id)


def test_releasing_reports_a_lost_lease(person_lock: RedisLockFactory) -> None:
    handle = person_lock.acquire(1, ttl=0.05)
    with pytest.raises(LeaseLost):
        with handle.releasing():
            time.sleep(0.15)


def test_lost_lease_does_not_mask_the_block_error(person_lock: RedisLockFactory) -> None:
    handle = person_lock.acquire(1, ttl=0.05)
    with pytest.raises(ZeroDivisionError) as caught:
        with handle.releasing():
            time.sleep(0.15)
            1 / 0
    if hasattr(caught.value, "__notes__"):
        assert "NOTHELD" in caught.value.__notes__[0]


def test_expired_then_taken_by_another_is_not_owned(person_lock: RedisLockFactory) -> None:
    mine = person_lock.acquire(1, ttl=0.05)
    time.sleep(0.15)
    theirs = person_lock.acquire(1)
    for call in (mine.confirm, mine.extend, mine.release):
        with pytest.raises(LockNotOwned) as caught:
            call()
        assert str(caught.value).startswith("NOTOWNED ")
    assert person_lock.info(1).lease_id == theirs.id  # untouched
    with pytest.raises(LockNotOwned):
        person_lock.get_handle(1, mine.id)


def test_get_handle_confirms_the_lease(person_lock: RedisLockFactory) -> None:
    handle = person_lock.acquire("a:b")
    got = person_lock.get_handle("a:b", handle.id)
    assert (got.key, got.id, got.token) == (handle.key, handle.id, handle.token)
    kw = person_lock.get_handle("a:b", lease_id=handle.id)
    assert kw.token == handle.token
    got.release()
    with pytest.raises(LockNotHeld):
        person_lock.get_handle("a:b", handle.id)


def test_get_handle_extend(person_lock: RedisLockFactory) -> None:
    handle = person_lock.acquire(1, ttl=1)
    got = person_lock.get_handle(1, handle.id, extend=timedelta(seconds=30))
    assert got.ttl_ms > 29_000


def test_confirm_and_extend(person_lock: RedisLockFactory) -> None:
    handle = person_lock.acquire(1, ttl=2)
    assert handle.confirm() is handle and 0 < handle.ttl_ms <= 2_000
    handle.extend(20)
    assert 19_000 < handle.ttl_ms <= 20_000
    handle.extend()  # the factory's ttl
    assert handle.ttl_ms > 59_000


def test_wait_blocks_until_released(person_lock: RedisLockFactory) -> None:
    first = person_lock.acquire(1)
    timer = threading.Timer(0.3, first.release)
    timer.start()
    start = time.monotonic()
    second = person_lock.acquire(1, wait=10)
    timer.join(5)
    assert 0.2 < time.monotonic() - start < 5
    assert second.id != first.id and second.token > first.token


def test_wait_times_out(person_lock: RedisLockFactory) -> None:
    person_lock.acquire(1)
    start = time.monotonic()
    with pytest.raises(LockAlreadyHeld):
        person_lock.acquire(1, wait=0.2)
    assert time.monotonic() - start >= 0.15


def test_wait_forever(person_lock: RedisLockFactory) -> None:
    first = person_lock.acquire(1, ttl=0.3)
    second = person_lock.acquire(1, wait=math.inf)  # served when the first lease expires
    assert second.token > first.token


def test_decode_responses_client(server, uniq: str) -> None:
    client = server.client(decode_responses=True)
    lock = RedisLockFactory(client, prefix="p", ttl=10, arity=2, root_prefix=uniq)
    handle = lock.acquire("x", "y")
    assert isinstance(handle.id, str)
    assert lock.info("x", "y").lease_id == handle.id
    lock.get_handle("x", "y", handle.id).release()


@pytest.mark.parametrize("protocol", [2, 3])
def test_resp2_and_resp3_clients(server, uniq: str, protocol: int) -> None:
    client = server.client(protocol=protocol)
    lock = RedisLockFactory(client, prefix="p", ttl=10, arity=1, root_prefix=uniq)
    handle = lock.acquire(1)
    assert lock.info(1).token == handle.token
    handle.release()


def test_other_server_errors_pass_through(r: redis.Redis, person_lock: RedisLockFactory) -> None:
    r.set(person_lock.key(9), "a string")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        person_lock.acquire(9)
    assert r.get(person_lock.key(9)) == b"a string"


def test_lease_id_too_long_is_the_servers_error(person_lock: RedisLockFactory) -> None:
    with pytest.raises(redis.ResponseError, match="invalid lease id"):
        person_lock.acquire(1, lease_id="x" * 129)


# --- checks made before any network call: a client on a closed port proves none is made ---

@pytest.fixture
def offline_lock() -> RedisLockFactory:
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    return RedisLockFactory(dead, prefix="person", ttl=60, arity=1)


@pytest.mark.parametrize("parts", [(), (1, 2)])
def test_wrong_number_of_parts_fails_before_the_network(offline_lock: RedisLockFactory, parts) -> None:
    with pytest.raises(TypeError, match="takes 1 part"):
        offline_lock.acquire(*parts)
    with pytest.raises(TypeError, match="takes 1 part"):
        offline_lock.info(*parts)
    with pytest.raises(TypeError, match="takes 1 part"):
        offline_lock.get_handle(*parts, "lease")
    with pytest.raises(TypeError, match="takes 1 part"):
        offline_lock.get_handle(*parts, lease_id="lease")


def test_get_handle_without_lease_fails_before_the_network(offline_lock: RedisLockFactory) -> None:
    with pytest.raises(TypeError):
        offline_lock.get_handle()
    with pytest.raises(TypeError, match="takes 1 part"):
        offline_lock.get_handle(42)  # 42 is taken as the lease id: zero parts


@pytest.mark.parametrize("ttl", [0, -1, 0.0, math.nan, math.inf, timedelta(0)])
def test_bad_ttl_fails_before_the_network(offline_lock: RedisLockFactory, ttl) -> None:
    with pytest.raises(ValueError):
        RedisLockFactory(offline_lock.redis, prefix="p", ttl=ttl, arity=1)
    with pytest.raises(ValueError):
        offline_lock.acquire(1, ttl=ttl)


def test_bad_arity_and_types() -> None:
    client = redis.Redis(port=1)
    with pytest.raises(ValueError):
        RedisLockFactory(client, prefix="p", ttl=1, arity=-1)
    with pytest.raises(TypeError):
        RedisLockFactory(client, prefix="p", ttl="60", arity=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        RedisLockFactory(client, prefix="p", ttl=True, arity=1)


def test_sub_millisecond_ttl_rounds_up(person_lock: RedisLockFactory) -> None:
    handle = person_lock.acquire(1, ttl=0.0001)
    assert handle.ttl_ms <= 1
