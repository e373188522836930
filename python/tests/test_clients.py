"""One suite for every client: pylocks.blocking and pylocks.asyncio, each over redis-py and
valkey-py (``flavor`` fixture, conftest.py), against real Redis 7.0 and Valkey servers.

Every test calls the real API of the flavour's module; ``run`` awaits what the asyncio client
returns, so the two clients are held to the same behaviour by the same lines.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from typing import Any

import pytest
import redis

import pylocks.asyncio
import pylocks.blocking
from pylocks.errors import (ArityError, BaseLocksError, LeaseLost, LockAlreadyHeld, LockError, LockExpired,
                            LockNotHeld, LockNotOwned, NotReplicated)


@pytest.fixture
def lock(flavor, uniq: str):
    return flavor.factory(prefix="person", ttl=60, arity=1, root_prefix=f"t{uniq}")


def plain(server) -> redis.Redis:
    """A blocking redis-py client for looking at the server from outside the client under test."""
    return server.client()


def waiters(server, key: str) -> int:
    info = plain(server).execute_command("PYLOCK.INFO", key)
    return 0 if info is None else int(dict(zip(info[::2], info[1::2]))[b"waiters"])


def later(seconds: float, fn, *args: Any) -> threading.Timer:
    """Run ``fn`` on a thread after ``seconds`` (through its own blocking client)."""
    timer = threading.Timer(seconds, fn, args)
    timer.start()
    return timer


# --- acquire, confirm, release --------------------------------------------------------------

def test_acquire_confirm_release(flavor, lock, uniq: str) -> None:
    run = flavor.run
    handle = run(lock.acquire(42))
    assert handle.key == f"t{uniq}:person:42"
    uuid.UUID(handle.id)
    assert handle.token > 0 and 59_000 <= handle.ttl_ms <= 60_000
    info = run(lock.info(42))
    assert (info.lease_id, info.token, info.waiters) == (handle.id, handle.token, 0)
    assert run(lock.is_held(42)) is True
    assert run(handle.confirm()) is handle
    assert run(handle.do_i_still_have_lock()) is True
    assert run(handle.check_if_owned()) is handle
    assert run(handle.release()) is True
    assert run(lock.is_held(42)) is False and run(lock.info(42)) is None


def test_contention_raises_lock_already_held(flavor, lock) -> None:
    run = flavor.run
    first = run(lock.acquire(1))
    with pytest.raises(LockAlreadyHeld) as caught:
        run(lock.acquire(1))
    assert isinstance(caught.value, LockError) and isinstance(caught.value, RuntimeError)
    assert caught.value.key == first.key
    assert run(lock.info(1)).lease_id == first.id


def test_an_expired_lease_is_lock_expired_everywhere(flavor, lock) -> None:
    run = flavor.run
    handle = run(lock.acquire(1, ttl=0.05))
    flavor.sleep(0.15)
    for call in (handle.confirm, handle.extend, handle.check_if_owned, handle.release):
        with pytest.raises(LockExpired) as caught:
            run(call())
        err = caught.value
        assert isinstance(err, LockNotHeld) and isinstance(err, LockNotOwned) and isinstance(err, LeaseLost)
        assert str(err).startswith("NOTHELD ") and (err.key, err.lease_id) == (handle.key, handle.id)
    assert run(handle.do_i_still_have_lock()) is False
    assert run(handle.release(ignore_failure=True)) is False
    with pytest.raises(LockExpired):
        run(lock.get_handle(1, handle.id))


def test_a_lease_taken_by_another_is_lock_not_owned(flavor, lock) -> None:
    run = flavor.run
    mine = run(lock.acquire(1, ttl=0.05))
    flavor.sleep(0.15)
    theirs = run(lock.acquire(1))
    for call in (mine.confirm, mine.check_if_owned, mine.release):
        with pytest.raises(LockNotOwned) as caught:
            run(call())
        assert type(caught.value) is LockNotOwned and str(caught.value).startswith("NOTOWNED ")
    assert run(mine.do_i_still_have_lock()) is False
    assert run(mine.release(ignore_failure=True)) is False
    assert run(lock.info(1)).lease_id == theirs.id  # untouched


def test_get_handle_positional_keyword_and_extend(flavor, lock) -> None:
    run = flavor.run
    handle = run(lock.acquire("a:b", ttl=1))
    got = run(lock.get_handle("a:b", handle.id))
    assert (got.key, got.id, got.token) == (handle.key, handle.id, handle.token)
    assert run(lock.get_handle("a:b", lease_id=handle.id)).token == handle.token
    assert run(lock.get_handle("a:b", handle.id, extend=30)).ttl_ms > 29_000
    run(got.extend(20))
    assert 19_000 < got.ttl_ms <= 20_000
    run(got.release())


def test_a_retried_acquire_with_the_same_lease_is_granted_again(flavor, lock) -> None:
    run = flavor.run
    first = run(lock.acquire(1, lease_id="job-7", ttl=5))
    again = run(lock.acquire(1, lease_id="job-7", ttl=30))
    assert (again.id, again.token) == ("job-7", first.token) and again.ttl_ms > 5_000


# --- releasing -------------------------------------------------------------------------------

def test_releasing_releases_on_every_exit(flavor, lock) -> None:
    run = flavor.run
    with flavor.cm(run(lock.acquire(1)).releasing()) as handle:
        assert run(lock.info(1)).lease_id == handle.id
    assert run(lock.info(1)) is None
    with pytest.raises(KeyError):
        with flavor.cm(run(lock.acquire(1)).releasing()):
            raise KeyError("boom")
    assert run(lock.info(1)) is None


def test_releasing_reports_a_lost_lease_unless_told_to_ignore_it(flavor, lock) -> None:
    run = flavor.run
    with pytest.raises(LockExpired):
        with flavor.cm(run(lock.acquire(1, ttl=0.05)).releasing()):
            flavor.sleep(0.15)
    with flavor.cm(run(lock.acquire(1, ttl=0.05)).releasing(ignore_failure=True)) as handle:
        flavor.sleep(0.15)
    assert run(handle.do_i_still_have_lock()) is False


def test_releasing_keep_on_keeps_the_lease(flavor, lock) -> None:
    run = flavor.run
    handle = run(lock.acquire(1))
    with pytest.raises(KeyError):
        with flavor.cm(handle.releasing(keep_on=KeyError)):
            raise KeyError("retry me")
    assert run(lock.info(1)).lease_id == handle.id
    with pytest.raises(ValueError):
        with flavor.cm(handle.releasing(keep_on=KeyError)):
            raise ValueError("not kept")
    assert run(lock.info(1)) is None


def test_a_lost_lease_does_not_mask_the_block_error(flavor, lock) -> None:
    run = flavor.run
    with pytest.raises(ZeroDivisionError) as caught:
        with flavor.cm(run(lock.acquire(1, ttl=0.05)).releasing()):
            flavor.sleep(0.15)
            1 / 0
    if hasattr(caught.value, "__notes__"):
        assert "NOTHELD" in caught.value.__notes__[0]


# --- waiting ---------------------------------------------------------------------------------

def test_wait_is_served_when_the_holder_releases(flavor, lock, server) -> None:
    run = flavor.run
    first = run(lock.acquire(1))
    timer = later(0.3, plain(server).execute_command, "PYLOCK.RELEASE", first.key, first.id)
    start = time.monotonic()
    second = run(lock.acquire(1, wait=10))
    timer.join(5)
    assert 0.2 < time.monotonic() - start < 5
    assert second.id != first.id and second.token > first.token


def test_wait_times_out_with_lock_already_held(flavor, lock) -> None:
    run = flavor.run
    run(lock.acquire(1))
    start = time.monotonic()
    with pytest.raises(LockAlreadyHeld):
        run(lock.acquire(1, wait=0.2))
    assert time.monotonic() - start >= 0.15


def test_a_cancelled_waiting_acquire_leaves_the_servers_queue(async_flavor, server, uniq: str) -> None:
    """The asyncio client: cancel a task waiting in acquire(wait=...). The server forgets the
    waiter (PYLOCK.INFO waiters, INFO pylock waiting), and a release then frees the lock
    instead of handing it to the cancelled task."""
    flavor = async_flavor
    lock = flavor.factory(prefix="person", ttl=60, arity=1, root_prefix=f"t{uniq}")
    holder = flavor.run(lock.acquire(1))
    loop = flavor.loop
    waiting = loop.create_task(lock.acquire(1, wait=30))
    deadline = time.monotonic() + 5
    while waiters(server, holder.key) != 1:
        assert time.monotonic() < deadline, "the waiter never queued"
        flavor.sleep(0.02)
    assert int(plain(server).info("pylock")["pylock_waiting"]) >= 1
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        flavor.run(waiting)
    deadline = time.monotonic() + 5
    while waiters(server, holder.key) != 0:
        assert time.monotonic() < deadline, "the cancelled waiter is still queued"
        time.sleep(0.02)
    assert int(plain(server).info("pylock")["pylock_waiting"]) == 0
    assert flavor.run(holder.release()) is True
    assert flavor.run(lock.info(1)) is None, "the lock went to nobody"


# --- the original library's names ------------------------------------------------------------

def test_macquire_takes_what_it_can(flavor, lock) -> None:
    run = flavor.run
    held = run(lock.acquire("y"))
    handles, missing = run(lock.macquire(["x", "y", "z"]))
    assert missing == ["y"] and set(handles) == {"x", "z"}
    assert all(isinstance(h, flavor.module.SingleLockHandle) for h in handles.values())
    for name, handle in handles.items():
        assert run(lock.info(name)).lease_id == handle.id
    assert run(lock.info("y")).lease_id == held.id
    again, missing = run(lock.macquire([("x",), ("w",)]))
    assert missing == [("x",)] and list(again) == [("w",)]


def test_macquire_with_arity_two_and_bad_input(flavor, uniq: str) -> None:
    run = flavor.run
    pairs = flavor.factory(prefix="edge", ttl=10, arity=2, root_prefix=uniq)
    handles, missing = run(pairs.macquire([("a", 1), ["b", 2]]))
    assert missing == [] and set(handles) == {("a", 1), ("b", 2)}
    assert handles[("b", 2)].key == f"{uniq}:edge:b:2"
    with pytest.raises(ArityError):
        run(pairs.macquire(["a"]))
    with pytest.raises(ArityError):
        run(pairs.macquire([("a", 1, 2)]))
    with pytest.raises(ValueError, match="named twice"):
        run(pairs.macquire([("c", 1), ["c", 1]]))
    assert run(pairs.info("c", 1)) is None, "nothing was sent"
    assert run(pairs.macquire([])) == ({}, [])


def test_macquire_other_errors_release_the_calls_grants(flavor, lock, server) -> None:
    run = flavor.run
    plain(server).set(lock.key("s"), "a string")
    with pytest.raises(Exception, match="WRONGTYPE"):
        run(lock.macquire(["r", "s", "t"]))
    assert run(lock.info("r")) is None and run(lock.info("t")) is None
    assert plain(server).get(lock.key("s")) == b"a string"


def test_mrelease_expected(flavor, lock) -> None:
    run = flavor.run
    handles, _ = run(lock.macquire(["a", "b", "c"]))
    other = run(lock.acquire("d"))
    released, missing = run(lock.mrelease_expected({
        "a": handles["a"].id, "b": handles["b"].id, "c": "not-its-lease", ("d",): handles["a"].id,
        "e": "nobody"}))
    assert released == ["a", "b"] and missing == ["c", ("d",), "e"]
    assert run(lock.info("a")) is None and run(lock.info("b")) is None
    assert run(lock.info("c")).lease_id == handles["c"].id
    assert run(lock.info("d")).lease_id == other.id
    assert run(lock.mrelease_expected({})) == ([], [])


def test_release_expected(flavor, lock) -> None:
    run = flavor.run
    handle = run(lock.acquire(5))
    with pytest.raises(LockNotOwned):
        run(lock.release_expected(5, "someone-else"))
    assert run(lock.release_expected([5], handle.id)) is True
    with pytest.raises(LockExpired):
        run(lock.release_expected((5,), handle.id))


def test_release_hard_deletes_whoever_holds_it(flavor, lock) -> None:
    run = flavor.run
    handle = run(lock.acquire(8))
    assert run(lock.release_hard(8)) is True
    assert run(lock.is_held(8)) is False
    assert run(handle.do_i_still_have_lock()) is False
    with pytest.raises(LockExpired):
        run(lock.release_hard((8,)))


def test_error_hierarchy_is_the_originals() -> None:
    assert issubclass(ArityError, BaseLocksError) and issubclass(ArityError, ValueError)
    assert issubclass(ArityError, TypeError)
    assert issubclass(LockError, BaseLocksError) and issubclass(LockError, RuntimeError)
    for cls in (LockAlreadyHeld, LockNotOwned, LockNotHeld, NotReplicated):
        assert issubclass(cls, LockError)
    assert issubclass(LockExpired, LockNotOwned) and issubclass(LockExpired, LockNotHeld)
    assert not issubclass(LockNotOwned, LockNotHeld)


# --- checks before the network ---------------------------------------------------------------

def test_arity_is_checked_before_any_network_call(flavor) -> None:
    run = flavor.run
    dead = flavor.module.RedisLockFactory(
        flavor.client(port=1, socket_connect_timeout=0.2), prefix="p", ttl=1, arity=1)
    for call in (lambda: dead.acquire(), lambda: dead.acquire(1, 2), lambda: dead.info(),
                 lambda: dead.is_held(1, 2), lambda: dead.get_handle("lease"),
                 lambda: dead.release_expected((1, 2), "l"), lambda: dead.release_hard(())):
        with pytest.raises(ArityError, match="takes 1 part"):
            run(call())


def test_bad_arguments_are_clear_errors(flavor) -> None:
    module = flavor.module
    client = flavor.client(port=1)
    with pytest.raises(TypeError, match="prefix by keyword"):
        module.RedisLockFactory("person", 60, 1)
    with pytest.raises(TypeError, match="needs ttl, arity"):
        module.RedisLockFactory(client, prefix="p")
    with pytest.raises(ValueError):
        module.RedisLockFactory(client, prefix="p", ttl=0, arity=1)
    with pytest.raises(TypeError):
        module.RedisLockFactory(client, prefix="p", ttl="60", arity=1)
    with pytest.raises(ValueError, match="replicas"):
        module.RedisLockFactory(client, prefix="p", ttl=1, arity=1, durability=(0, 1))
    with pytest.raises(TypeError, match="durability"):
        module.RedisLockFactory(client, prefix="p", ttl=1, arity=1, durability=1)
    with pytest.raises(TypeError, match="dict"):
        flavor.run(module.RedisLockFactory(client, prefix="p", ttl=1, arity=1).mrelease_expected([1]))


# --- connections -----------------------------------------------------------------------------

def test_root_prefix_defaults_to_pylocks(flavor) -> None:
    run = flavor.run
    lock = flavor.factory(prefix=f"p{uuid.uuid4().hex[:8]}", ttl=10, arity=1)
    handle = run(lock.acquire(3))
    assert handle.key == f"pylocks:{lock.prefix}:3"
    run(handle.release())


def test_get_redis_connection_override_and_build(flavor, uniq: str) -> None:
    run = flavor.run
    client = flavor.client()

    class MyFactory(flavor.module.RedisLockFactory):
        def get_redis_connection(self):
            return client

    lock = MyFactory(prefix="p", ttl=10, arity=1, root_prefix=uniq)
    assert lock.redis is client
    handle = run(lock.acquire(1))
    assert handle.redis is client
    other = flavor.client()
    bound = lock.build(other)
    assert isinstance(bound, MyFactory) and bound.redis is other and lock.redis is client
    assert run(bound.info(1)).lease_id == handle.id
    assert lock.build().redis is client


def test_the_default_connection_comes_from_pylocks_redis_url(flavor, server, uniq: str, monkeypatch) -> None:
    run = flavor.run
    monkeypatch.setenv("PYLOCKS_REDIS_URL", server.url(0))
    lock = flavor.module.RedisLockFactory(prefix="p", ttl=10, arity=1, root_prefix=uniq)

    async def in_loop() -> Any:  # the asyncio default belongs to the running loop
        return lock.redis

    client = run(in_loop()) if flavor.is_async else lock.redis
    assert client.connection_pool.connection_kwargs["port"] == server.port
    handle = run(lock.acquire(1))
    assert plain(server).execute_command("PYLOCK.INFO", handle.key)[1] == handle.id.encode()
    if flavor.is_async:
        run(client.aclose())


def test_the_default_connection_is_made_again_after_a_fork(server, uniq: str, monkeypatch) -> None:
    """A Celery prefork child must not share its parent's sockets: the child gets a client of
    its own, and its locks work."""
    monkeypatch.setenv("PYLOCKS_REDIS_URL", server.url(0))
    lock = pylocks.blocking.RedisLockFactory(prefix="p", ttl=10, arity=1, root_prefix=uniq)
    parent_lease = lock.acquire("parent")
    parent_client = lock.redis
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without running the parent's cleanup
        try:
            handle = lock.acquire("child")
            same = lock.redis is parent_client
            os.write(write, f"{handle.id} {same} {lock.is_held('parent')}".encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child_lease, same, parent_held = pipe.read().split()
    os.waitpid(pid, 0)
    assert same == "False" and parent_held == "True"
    assert lock.info("child").lease_id == child_lease
    assert lock.redis is parent_client
    parent_lease.release()


# --- clients of every kind -------------------------------------------------------------------

@pytest.mark.parametrize("protocol", [2, 3])
@pytest.mark.parametrize("decode", [False, True])
def test_resp2_resp3_and_decoded_clients(flavor, uniq: str, protocol: int, decode: bool) -> None:
    run = flavor.run
    lock = flavor.factory(flavor.client(protocol=protocol, decode_responses=decode),
                          prefix="p", ttl=10, arity=2, root_prefix=uniq)
    handle = run(lock.acquire("x", "y"))
    assert isinstance(handle.id, str)
    assert run(lock.info("x", "y")).token == handle.token
    assert run(lock.get_handle("x", "y", handle.id)).id == handle.id
    assert run(lock.mrelease_expected({("x", "y"): handle.id})) == ([("x", "y")], [])


def test_other_server_errors_pass_through(flavor, lock, server) -> None:
    plain(server).set(lock.key(9), "a string")
    with pytest.raises(Exception, match="WRONGTYPE") as caught:
        flavor.run(lock.acquire(9))
    assert type(caught.value).__name__ == "ResponseError"
    assert type(caught.value).__module__.startswith(flavor.lib)
    assert plain(server).get(lock.key(9)) == b"a string"


# --- the keeper ------------------------------------------------------------------------------

def test_keep_alive_renews_past_the_ttl(flavor, lock) -> None:
    run = flavor.run
    handle = run(lock.acquire(1, ttl=0.6))
    token = handle.token
    assert handle.lease_ttl_ms == 600
    keeper = flavor.call(handle.keep_alive)
    assert keeper.interval == pytest.approx(0.2)  # a third of the TTL
    flavor.sleep(1.5)  # 2.5 TTLs: only renewals keep it
    assert keeper.held and keeper.error is None
    info = run(lock.info(1))
    assert (info.lease_id, info.token) == (handle.id, token), "renewed, not granted anew"
    assert run(keeper.stop()) is handle
    flavor.sleep(0.8)
    assert run(lock.info(1)) is None, "no renewal after stop: the lease ran out"


def test_keep_alive_signals_a_loss_at_once(flavor, lock, server) -> None:
    run = flavor.run
    handle = run(lock.acquire(1, ttl=0.9))
    seen = []
    keeper = flavor.call(handle.keep_alive, seen.append, interval=0.1)
    plain(server).delete(handle.key)
    deadline = time.monotonic() + 3
    while not keeper.lost.is_set():
        assert time.monotonic() < deadline, "the loss was not signalled"
        flavor.sleep(0.02)
    assert time.monotonic() < deadline
    assert isinstance(keeper.error, LockExpired) and seen == [keeper.error] and not keeper.held
    run(keeper.stop())


def test_a_lost_lease_stops_the_guarded_block(flavor, lock, server) -> None:
    """Asyncio: the block's task is cancelled and leaves with the LeaseLost. Blocking, with
    interrupt=True: the LeaseLost is raised in the block's thread."""
    run = flavor.run
    handle = run(lock.acquire(1, ttl=0.9))
    thief = later(0.3, plain(server).delete, handle.key)
    start = time.monotonic()
    with pytest.raises(LockExpired):
        if flavor.is_async:
            async def guarded() -> None:
                async with handle.keep_alive(interval=0.1):
                    await asyncio.sleep(20)
            run(guarded())
        else:
            with handle.keep_alive(interval=0.1, interrupt=True):
                while time.monotonic() - start < 20:
                    time.sleep(0.01)
    thief.join(5)
    assert 0.25 < time.monotonic() - start < 3


def test_a_block_that_ends_first_is_not_stopped(flavor, lock) -> None:
    run = flavor.run
    handle = run(lock.acquire(1, ttl=0.6))
    if flavor.is_async:
        async def guarded() -> str:
            async with handle.keep_alive() as keeper:
                await asyncio.sleep(0.8)
            assert keeper.held
            return "done"
        assert run(guarded()) == "done"
        assert run(handle.while_held(asyncio.sleep(0.7, "also"))) == "also"
    else:
        with handle.keep_alive(interrupt=True) as keeper:
            time.sleep(0.8)
        assert keeper.held
    assert run(handle.release()) is True


# --- durability ------------------------------------------------------------------------------

def test_durability_waits_for_a_replica(flavor, replicated, uniq: str) -> None:
    run = flavor.run
    primary, replica = replicated
    lock = flavor.factory(_client_on(flavor, primary), prefix="acct", ttl=30, arity=1,
                          root_prefix=uniq, durability=(1, 5))
    handle = run(lock.acquire("acme"))
    # WAIT returned 1: the replica has the lease already, no polling needed
    on_replica = replica.client().execute_command("PYLOCK.INFO", handle.key)
    assert on_replica[1] == handle.id.encode() and on_replica[3] == handle.token
    handles, missing = run(lock.macquire(["b", "c"]))
    assert missing == [] and replica.client().execute_command("PYLOCK.INFO", handles["c"].key) is not None


def test_too_few_replicas_release_and_raise_not_replicated(flavor, replicated, uniq: str) -> None:
    run = flavor.run
    primary, replica = replicated
    lock = flavor.factory(_client_on(flavor, primary), prefix="acct", ttl=30, arity=1, root_prefix=uniq)
    start = time.monotonic()
    with pytest.raises(NotReplicated) as caught:
        run(lock.acquire("acme", durability=(2, 0.3)))
    assert time.monotonic() - start >= 0.25
    err = caught.value
    assert (err.wanted, err.acknowledged) == (2, 1) and "released" in str(err)
    assert run(lock.info("acme")) is None, "the grant was given back"
    deadline = time.monotonic() + 5
    while replica.client().execute_command("PYLOCK.INFO", err.key) is not None:
        assert time.monotonic() < deadline, "the release did not reach the replica"
        time.sleep(0.02)
    strict = flavor.factory(_client_on(flavor, primary), prefix="acct", ttl=30, arity=1,
                            root_prefix=uniq, durability=(2, 0.2))
    with pytest.raises(NotReplicated):
        run(strict.macquire(["x", "y"]))
    assert run(strict.is_held("x")) is False and run(strict.is_held("y")) is False
    # contention is still LockAlreadyHeld, not NotReplicated
    holder = run(lock.acquire("z"))
    with pytest.raises(LockAlreadyHeld):
        run(lock.acquire("z", durability=(1, 1)))
    run(holder.release())


def _client_on(flavor, server):
    saved = flavor.server
    flavor.server = server
    try:
        return flavor.client()
    finally:
        flavor.server = saved


# --- CLAIM and WATCH ----------------------------------------------------------------------------

def test_claim_and_watch_in_every_client(flavor, lock, server) -> None:
    """The same claim and watch rules through both clients (test_lifecycle.py has the rest)."""
    from pylocks.errors import LockClaimed

    run = flavor.run
    sent = run(lock.acquire(7))
    mine = run(lock.claim(7, sent.id))
    assert mine.id != sent.id and mine.token > sent.token
    again = run(lock.claim(7, sent.id, new_id=mine.id))
    assert (again.id, again.token) == (mine.id, mine.token)
    with pytest.raises(LockClaimed) as caught:
        run(lock.claim(7, sent.id))
    assert isinstance(caught.value, LockNotOwned)
    assert run(sent.watch()) == "claimed"
    assert run(mine.watch(timeout=0.05)) is None
    later(0.1, lambda: plain(server).execute_command("PYLOCK.RELEASE", mine.key, mine.id))
    t0 = time.monotonic()
    assert run(mine.watch(timeout=5)) == "released"
    assert time.monotonic() - t0 < 2
    assert run(mine.watch()) == "notheld"
