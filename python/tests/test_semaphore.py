"""Semaphores from Python (``limit=``, ``PYLOCK.ACQUIRE … LIMIT n``) against real servers (Redis
7.0 and Valkey, see conftest.py): every lease is a lease of its own, and the key's n is fixed."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import List

import pytest
import redis

import pylocks.asyncio as pylocks_asyncio
from pylocks import (LimitMismatch, LockAlreadyHeld, LockClaimed, LockExpired, LockInfo, LockNotOwned,
                     SemaphoreInfo)
from pylocks.blocking import RedisLockFactory


@pytest.fixture
def exports(r: redis.Redis, uniq: str) -> RedisLockFactory:
    """At most 3 heavy exports per tenant at once."""
    return RedisLockFactory(r, prefix="export", ttl=60, arity=1, root_prefix=f"t{uniq}", limit=3)


def test_up_to_n_leases_each_its_own(exports: RedisLockFactory) -> None:
    held = [exports.acquire("acme", ttl=ttl) for ttl in (50, 40, 30)]
    assert len({h.id for h in held}) == 3
    assert held[0].token < held[1].token < held[2].token
    with pytest.raises(LockAlreadyHeld):
        exports.acquire("acme")
    info = exports.info("acme")
    assert isinstance(info, SemaphoreInfo)
    assert (info.limit, info.holders, info.waiters) == (3, 3, 0)
    # Earliest deadline first, each with its own id, token and time left.
    assert [lease.lease_id for lease in info.leases] == [held[2].id, held[1].id, held[0].id]
    assert [lease.token for lease in info.leases] == [held[2].token, held[1].token, held[0].token]
    assert 25_000 < info.leases[0].ttl_ms <= 30_000 < info.leases[1].ttl_ms <= 40_000 < info.leases[2].ttl_ms
    assert exports.is_held("acme")
    # Another tenant is another key.
    assert exports.acquire("globex").id not in {h.id for h in held}


def test_each_lease_confirms_extends_claims_and_releases_alone(exports: RedisLockFactory) -> None:
    a, b = exports.acquire("acme"), exports.acquire("acme")
    a.extend(5)
    assert 4_000 < a.ttl_ms <= 5_000
    b.confirm()
    assert b.ttl_ms > 50_000, "extending one lease leaves the others' deadlines alone"
    c = exports.claim("acme", b.id)
    assert c.id != b.id and c.token > max(a.token, b.token)
    with pytest.raises(LockClaimed):
        b.confirm()
    assert a.release() is True
    # Others still hold the key: a released lease is not ours any more (NOTOWNED).
    with pytest.raises(LockNotOwned):
        a.confirm()
    info = exports.info("acme")
    assert isinstance(info, SemaphoreInfo)
    assert [lease.lease_id for lease in info.leases] == [c.id]
    c.release()
    assert exports.info("acme") is None
    # Nobody holds it now: NOTHELD.
    with pytest.raises(LockExpired):
        c.confirm()


def test_the_keys_limit_is_fixed_while_a_lease_holds_it(r: redis.Redis, uniq: str,
                                                          exports: RedisLockFactory) -> None:
    first = exports.acquire("acme")
    before = exports.info("acme")
    for other in (RedisLockFactory(r, prefix="export", ttl=60, arity=1, root_prefix=f"t{uniq}", limit=2),
                  RedisLockFactory(r, prefix="export", ttl=60, arity=1, root_prefix=f"t{uniq}")):
        with pytest.raises(LimitMismatch) as caught:
            other.acquire("acme")
        assert isinstance(caught.value, ValueError)
        assert str(caught.value).startswith("LIMITMISMATCH") and "3" in str(caught.value)
        assert caught.value.key == first.key
    after = exports.info("acme")
    assert isinstance(before, SemaphoreInfo) and isinstance(after, SemaphoreInfo)
    assert [x.lease_id for x in after.leases] == [x.lease_id for x in before.leases]
    # Once the last lease is gone, the key can be made again with another limit.
    first.release()
    lock = RedisLockFactory(r, prefix="export", ttl=60, arity=1, root_prefix=f"t{uniq}")
    plain = lock.acquire("acme")
    assert isinstance(lock.info("acme"), LockInfo)
    with pytest.raises(LimitMismatch):
        exports.acquire("acme")
    plain.release()


def test_limit_one_is_a_lock(r: redis.Redis, uniq: str) -> None:
    one = RedisLockFactory(r, prefix="job", ttl=60, arity=1, root_prefix=f"t{uniq}", limit=1)
    lock = RedisLockFactory(r, prefix="job", ttl=60, arity=1, root_prefix=f"t{uniq}")
    held = one.acquire(7)
    with pytest.raises(LockAlreadyHeld):
        lock.acquire(7)
    info = lock.info(7)
    assert isinstance(info, LockInfo) and info.lease_id == held.id


@pytest.mark.parametrize("bad", [0, -1, 100_001, True, 2.5, "3"])
def test_a_bad_limit_is_refused_before_any_call(r: redis.Redis, bad: object) -> None:
    with pytest.raises(ValueError):
        RedisLockFactory(r, prefix="x", ttl=1, arity=1, limit=bad)  # type: ignore[arg-type]


def test_waiters_get_freed_places_first_come_first_served(exports: RedisLockFactory) -> None:
    held = [exports.acquire("acme") for _ in range(3)]
    got: List[str] = []
    done = threading.Event()

    def wait_for_place(name: str) -> None:
        h = exports.acquire("acme", wait=20)
        got.append(name)
        if len(got) == 2:
            done.set()
        h.release()

    threads = []
    for name in ("first", "second"):
        t = threading.Thread(target=wait_for_place, args=(name,))
        t.start()
        threads.append(t)
        deadline = time.monotonic() + 10
        while True:  # queue them in a known order
            info = exports.info("acme")
            if isinstance(info, SemaphoreInfo) and info.waiters == len(threads):
                break
            assert time.monotonic() < deadline, "the waiter never queued"
            time.sleep(0.01)
    # One place frees: it goes to the longest waiter. (Freeing two at once would grant both
    # in order, but the two threads could then note it in either order.) "second" can only get
    # in after "first" has noted its grant and released, or after the next place frees here.
    held[1].release()
    deadline = time.monotonic() + 15
    while not got:
        assert time.monotonic() < deadline, "nobody got the freed place"
        time.sleep(0.01)
    assert got[0] == "first"
    held[2].release()
    assert done.wait(15)
    for t in threads:
        t.join(10)
    assert got == ["first", "second"]
    held[0].release()


def test_asyncio_twin(server, uniq: str) -> None:  # type: ignore[no-untyped-def]
    async def run() -> None:
        import redis.asyncio as aioredis
        client = aioredis.Redis(host="127.0.0.1", port=server.port)
        try:
            f = pylocks_asyncio.RedisLockFactory(client, prefix="api", ttl=30, arity=1,
                                                 root_prefix=f"t{uniq}", limit=2)
            a, b = await f.acquire("vendor"), await f.acquire("vendor")
            with pytest.raises(LockAlreadyHeld):
                await f.acquire("vendor")
            info = await f.info("vendor")
            assert isinstance(info, SemaphoreInfo) and info.holders == 2
            waiter = asyncio.ensure_future(f.acquire("vendor", wait=10))
            await asyncio.sleep(0.2)
            assert not waiter.done()
            await a.release()
            c = await asyncio.wait_for(waiter, 10)
            assert c.token > b.token
            with pytest.raises(LimitMismatch):
                await pylocks_asyncio.RedisLockFactory(client, prefix="api", ttl=30, arity=1,
                                                       root_prefix=f"t{uniq}").acquire("vendor")
            await b.release()
            await c.release()
            assert await f.info("vendor") is None
        finally:
            await client.aclose()

    asyncio.run(run())
