"""Locks and leases over an asyncio client: ``redis.asyncio.Redis`` or ``valkey.asyncio.Valkey``.

The same names, arguments and errors as :mod:`pylocks.blocking`, with ``await``; commands and
replies are read by the same code (:mod:`pylocks._wire`)::

    import redis.asyncio
    from pylocks.asyncio import RedisLockFactory

    person_lock = RedisLockFactory(redis.asyncio.Redis(), prefix="person", ttl=60, arity=1)

    async def add(person_id: int) -> None:
        handle = await person_lock.acquire(person_id, wait=10)
        async with handle.releasing():
            async with handle.keep_alive():   # renews; a lost lease cancels this block
                ...

Cancelling a task that waits in ``acquire(..., wait=...)`` takes it out of the server's queue:
the client drops the connection the ``BLOCK`` was sent on, and the server forgets a waiter
whose connection is gone.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import sys
import uuid
import weakref
from contextlib import asynccontextmanager
from types import TracebackType
from typing import (Any, AsyncIterator, Awaitable, Callable, Dict, Hashable, List, Mapping, Optional, Sequence,
                    Tuple, Type, TypeVar, Union)

import redis.asyncio

from . import _core, _wire
from ._core import Seconds
from .keys import DEFAULT_ROOT_PREFIX
from ._wire import Lease, LockInfo, SemaphoreInfo
from .errors import LeaseLost, LeaseUnconfirmed, LockExpired

__all__ = ["RedisLockFactory", "SingleLockHandle", "Keeper", "LockInfo", "SemaphoreInfo", "Seconds", "DEFAULT_ROOT_PREFIX",
           "LEASE_ENDS"]

#: What :meth:`SingleLockHandle.watch` can answer (see :data:`pylocks._wire.LEASE_ENDS`).
LEASE_ENDS = _wire.LEASE_ENDS

logger = logging.getLogger(__name__)

T = TypeVar("T")
ExcTypes = Union[Type[BaseException], Tuple[Type[BaseException], ...]]

#: An asyncio client: ``redis.asyncio.Redis``, ``valkey.asyncio.Valkey``, or anything with
#: their ``execute_command`` and ``pipeline``.
Client = Any


async def _run(client: Client, cmd: "_wire.Command[T]") -> T:
    try:
        reply = await client.execute_command(*cmd.args)
    except Exception as err:
        mapped = cmd.error(err)
        if mapped is err:
            raise
        raise mapped from None
    return cmd.parse(reply)


async def _run_many(client: Client, cmds: Sequence["_wire.Command[Any]"]) -> List[Any]:
    """Send ``cmds`` in one pipeline (not a transaction); each result is a value or an error."""
    pipe = client.pipeline(transaction=False)
    for cmd in cmds:
        pipe.execute_command(*cmd.args)
    replies = await pipe.execute(raise_on_error=False)
    return [cmd.settle(reply) for cmd, reply in zip(cmds, replies)]


async def _run_queued(client: Client, first: Sequence["_wire.Command[Any]"], queue: _core.Queue,
                      last: Sequence["_wire.Command[Any]"], what: str
                      ) -> Tuple[List[Any], List[Any], List[Any]]:
    """``first``, what ``queue(pipe)`` adds, and ``last`` in one pipeline (one round trip)."""
    pipe, added = _core.queued_pipeline(client, first, queue, last, what)
    replies = await pipe.execute(raise_on_error=False)
    return _core.split_replies(first, added, last, replies)


_default_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Tuple[int, str, Client]]" = (
    weakref.WeakKeyDictionary())


def default_client() -> Client:
    """The client of factories given none: ``redis.asyncio.Redis.from_url(PYLOCKS_REDIS_URL)``,
    or ``redis://127.0.0.1:6379/0``.

    Made on first use in each event loop (an asyncio connection belongs to the loop that
    opened it) and again after a fork.
    """
    loop = asyncio.get_running_loop()
    pid, url = os.getpid(), _core.default_url()
    found = _default_clients.get(loop)
    if found is None or found[:2] != (pid, url):
        found = (pid, url, redis.asyncio.Redis.from_url(url))
        _default_clients[loop] = found
    return found[2]


class Keeper:
    """Renews a lease in an asyncio task every third of its TTL (``handle.keep_alive()``).

    Each renewal is ``PYLOCK.CONFIRM key lease EXTEND ttl``. ``NOTHELD``/``NOTOWNED`` lose the
    lease at once; other failures are retried until the lease may have expired, then
    reported as :class:`~pylocks.errors.LeaseUnconfirmed`.

    A loss is signalled at once: :attr:`lost` (an ``asyncio.Event``) is set, :attr:`error`
    holds the error, ``on_lost(error)`` is called, and inside ``async with`` (unless
    ``cancel=False``) the task running the block is cancelled; the block then leaves with the
    ``LeaseLost`` rather than ``CancelledError``. A cancellation from elsewhere stays a
    cancellation.

    ``await keeper.stop()`` ends the renewals and sends nothing.
    """

    def __init__(self, handle: "SingleLockHandle", interval_ms: int,
                 on_lost: Optional[Callable[[LeaseLost], Any]], cancel: bool) -> None:
        self.handle = handle
        self.interval = interval_ms / 1000.0
        self.on_lost = on_lost
        self.cancel = cancel
        self.lost = asyncio.Event()
        self.error: Optional[LeaseLost] = None
        self._loop = asyncio.get_running_loop()
        self._valid_until = self._loop.time() + handle.ttl_ms / 1000.0
        self._guarded: Optional["asyncio.Task[Any]"] = None
        self._cancelled_guarded = False
        self._task = asyncio.ensure_future(self._renew_until_stopped())

    def __repr__(self) -> str:
        return f"<Keeper {self.handle.key!r} lease={self.handle.id!r} lost={self.lost.is_set()}>"

    @property
    def held(self) -> bool:
        """Whether every renewal so far succeeded."""
        return not self.lost.is_set()

    async def _renew_until_stopped(self) -> None:
        delay = self.interval
        while True:
            await asyncio.sleep(delay)
            sent = self._loop.time()
            try:
                await self.handle.extend(self.handle.lease_ttl_ms / 1000.0)
            except LeaseLost as err:
                self._lose(err)
                return
            except Exception as err:  # noqa: BLE001 - transport trouble: retry while the lease may live
                if self._loop.time() >= self._valid_until:
                    lost = LeaseUnconfirmed(
                        f"lease {self.handle.id} on {self.handle.key} could not be renewed before it "
                        f"was due to end: {err}", self.handle.key, self.handle.id)
                    lost.__cause__ = err
                    self._lose(lost)
                    return
                delay = min(self.interval, max(0.01, self._valid_until - self._loop.time()) / 4)
                continue
            self._valid_until = sent + self.handle.ttl_ms / 1000.0
            delay = self.interval

    def _lose(self, err: LeaseLost) -> None:
        self.error = err
        self.lost.set()
        logger.warning("keeper lost lease %s on %s: %s", self.handle.id, self.handle.key, err)
        if self.on_lost is not None:
            try:
                self.on_lost(err)
            except Exception:  # noqa: BLE001 - a failing callback must not hide the loss
                logger.exception("on_lost callback of lease %s failed", self.handle.id)
        if self.cancel and self._guarded is not None and not self._guarded.done():
            self._cancelled_guarded = True
            self._guarded.cancel()

    async def wait_lost(self) -> LeaseLost:
        """Wait until the lease is lost, and return the error."""
        await self.lost.wait()
        assert self.error is not None
        return self.error

    async def stop(self) -> "SingleLockHandle":
        """End the renewals (no network call) and return the handle."""
        if not self._task.done():
            self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            if not self._task.cancelled():
                raise  # the caller itself is being cancelled
        return self.handle

    async def release(self, ignore_failure: bool = False, *, before: Optional[_core.Queue] = None) -> bool:
        """Stop, then release the lease (see :meth:`SingleLockHandle.release`, ``before=`` too)."""
        return await (await self.stop()).release(ignore_failure=ignore_failure, before=before)

    async def __aenter__(self) -> "Keeper":
        self._guarded = asyncio.current_task()
        return self

    async def __aexit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                        tb: Optional[TracebackType]) -> None:
        guarded, self._guarded = self._guarded, None
        ours = self._cancelled_guarded
        if ours and exc_type is not asyncio.CancelledError:
            try:  # our cancellation may still be pending: take it here, not after the block
                await asyncio.sleep(0)
            except asyncio.CancelledError:
                pass
        if ours and guarded is not None and sys.version_info >= (3, 11):
            if guarded.uncancel() > 0 and exc_type is asyncio.CancelledError:
                ours = False  # cancelled from elsewhere as well: that cancellation goes on
        await self.stop()
        if ours:
            assert self.error is not None
            raise self.error from None


class SingleLockHandle:
    """A lease on one lock; the asyncio twin of :class:`pylocks.blocking.SingleLockHandle`.

    Same attributes (``key``, ``id``, ``token``, ``ttl_ms``, ``default_ttl_ms``,
    ``lease_ttl_ms``, ``then_results``, ``before_results``); the methods that talk to the
    server are coroutines.
    """

    def __init__(self, client: Client, key: str, lease_id: str, token: int, ttl_ms: int,
                 default_ttl_ms: int, lease_ttl_ms: Optional[int] = None) -> None:
        self.redis = client
        self.key = key
        self.id = lease_id
        self.token = token
        self.ttl_ms = ttl_ms
        self.default_ttl_ms = default_ttl_ms
        self.lease_ttl_ms = default_ttl_ms if lease_ttl_ms is None else lease_ttl_ms
        self.then_results: Optional[List[Any]] = None
        self.before_results: Optional[List[Any]] = None

    @property
    def lease_id(self) -> str:
        """Alias of :attr:`id`."""
        return self.id

    @property
    def ttl(self) -> float:
        """Seconds left on the lease when the server last replied."""
        return self.ttl_ms / 1000.0

    def __repr__(self) -> str:
        return f"<SingleLockHandle key={self.key!r} id={self.id!r} token={self.token} ttl_ms={self.ttl_ms}>"

    def _update(self, lease: Lease) -> "SingleLockHandle":
        self.token = lease.token
        self.ttl_ms = lease.ttl_ms
        return self

    async def confirm(self) -> "SingleLockHandle":
        """``PYLOCK.CONFIRM``; raises ``LockExpired`` / ``LockNotOwned`` for a lost lease."""
        return self._update(await _run(self.redis, _wire.confirm(self.key, self.id)))

    async def check_if_owned(self) -> "SingleLockHandle":
        """The original library's name for :meth:`confirm` (asks the server)."""
        return await self.confirm()

    async def do_i_still_have_lock(self) -> bool:
        """Whether this lease holds the lock, as the server says now."""
        try:
            await self.confirm()
        except LeaseLost:
            return False
        return True

    async def extend(self, ttl: Optional[Seconds] = None) -> "SingleLockHandle":
        """Confirm the lease and reset its time left to ``ttl`` seconds (the factory's by default)."""
        ttl_ms = self.default_ttl_ms if ttl is None else _core.to_ms(ttl, "ttl")
        return self._update(await _run(self.redis, _wire.confirm(self.key, self.id, ttl_ms)))

    async def release(self, ignore_failure: bool = False, *, before: Optional[_core.Queue] = None) -> bool:
        """``PYLOCK.RELEASE``: ``True``; a lost lease raises (or returns ``False`` with
        ``ignore_failure=True``).

        ``before(pipe)`` (a plain function) queues commands sent in the same round trip, ahead
        of the RELEASE; see :meth:`pylocks.blocking.SingleLockHandle.release`: they run even
        when the lease was lost.
        """
        if before is not None:
            cmd = _wire.release(self.key, self.id)
            _, written, (released,) = await _run_queued(self.redis, [], before, [cmd], "release(before=...)")
            self.before_results = written
            return _core.release_outcome(self, released, written, ignore_failure)
        try:
            await _run(self.redis, _wire.release(self.key, self.id))
        except LeaseLost:
            if ignore_failure:
                return False
            raise
        self.ttl_ms = 0
        return True

    @asynccontextmanager
    async def releasing(self, ignore_failure: bool = False, keep_on: ExcTypes = ()
                        ) -> AsyncIterator["SingleLockHandle"]:
        """``async with handle.releasing():`` releases on the way out, as the blocking one does.

        A block that is cancelled also releases (the release is shielded from the same
        cancellation), and the ``CancelledError`` goes on.
        """
        try:
            yield self
        except BaseException as exc:
            if keep_on and isinstance(exc, keep_on):
                raise
            try:
                await asyncio.shield(self.release())
            except Exception as release_err:  # noqa: BLE001 - reported, never masks exc
                _core.report_failed_release(self, exc, release_err)
            raise
        else:
            await self.release(ignore_failure=ignore_failure)

    async def claim(self, new_id: Optional[str] = None, extend: Optional[Seconds] = None
                    ) -> "SingleLockHandle":
        """``PYLOCK.CONFIRM … CLAIM``: this lease under a new id (made here unless given) with
        a new token; the new lease's handle. Raises ``LockClaimed`` when another run claimed
        it first, else as :meth:`confirm` (see the blocking client)."""
        new = str(uuid.uuid4()) if new_id is None else _core.lease_id(new_id)
        if new == self.id:
            raise ValueError("a lease cannot be claimed under its own id")
        extend_ms = None if extend is None else _core.to_ms(extend, "extend")
        lease = await _run(self.redis, _wire.claim(self.key, self.id, new, extend_ms))
        return SingleLockHandle(self.redis, self.key, lease.lease_id, lease.token, lease.ttl_ms,
                                self.default_ttl_ms, self.lease_ttl_ms)

    async def watch(self, timeout: Optional[Seconds] = None) -> Optional[str]:
        """``PYLOCK.WATCH``: wait until this lease ends and return why (one of
        :data:`LEASE_ENDS`), or ``None`` when ``timeout`` seconds pass with it held. A
        cancelled watch leaves the server at once (the connection is dropped)."""
        timeout_ms = None if timeout is None else _core.to_ms(timeout, "timeout")
        try:
            return await _run(self.redis, _wire.watch(self.key, self.id, timeout_ms))
        except Exception as err:
            demoted = _wire.watch_error(err)
            if demoted is None:
                raise
            return demoted

    def keep_alive(self, on_lost: Optional[Callable[[LeaseLost], Any]] = None, *,
                   interval: Optional[Seconds] = None, cancel: bool = True) -> Keeper:
        """Start renewing this lease in a task of the running loop; see :class:`Keeper`.

        :param on_lost: called with the error when the lease is lost.
        :param interval: seconds between renewals; a third of the lease's TTL by default.
        :param cancel: inside ``async with``, cancel the block's task when the lease is lost.
        """
        return Keeper(self, _core.keeper_interval_ms(self.lease_ttl_ms, interval), on_lost, cancel)

    async def while_held(self, work: Awaitable[T], *, interval: Optional[Seconds] = None) -> T:
        """Run ``work`` while a keeper renews the lease; a lost lease cancels it and raises."""
        async with self.keep_alive(interval=interval):
            return await work


class RedisLockFactory(_core.FactoryCore[Client]):
    """The asyncio twin of :class:`pylocks.blocking.RedisLockFactory`: same arguments, same
    connection lookup (an explicit client, :meth:`get_redis_connection`, :meth:`build`, else
    :func:`default_client`), same keys."""

    @property
    def redis(self) -> Client:
        """The client this factory's commands go through."""
        found = self._explicit_or_override()
        return default_client() if found is None else found

    def build(self, redis_conn: Optional[Client] = None) -> "RedisLockFactory":
        """A copy of this factory bound to ``redis_conn`` (by default, the client it would use now)."""
        bound = copy.copy(self)
        bound._redis = self.redis if redis_conn is None else redis_conn
        return bound

    def _handle(self, client: Client, key: str, lease: Lease, lease_ttl_ms: int) -> SingleLockHandle:
        return SingleLockHandle(client, key, lease.lease_id, lease.token, lease.ttl_ms, self.ttl_ms, lease_ttl_ms)

    async def acquire(
        self,
        *parts: Any,
        ttl: Optional[Seconds] = None,
        lease_id: Optional[str] = None,
        wait: Optional[Seconds] = None,
        durability: Optional[Tuple[int, Seconds]] = None,
        then: Optional[_core.Queue] = None,
    ) -> SingleLockHandle:
        """``PYLOCK.ACQUIRE``; see :meth:`pylocks.blocking.RedisLockFactory.acquire`
        (``then=`` too: a plain function that queues reads; they run even when the lock is
        not granted).

        Cancelling the awaiting task while it waits (``wait=``) leaves the server's queue.
        """
        key = self.key(*parts)
        ttl_ms = self.ttl_ms if ttl is None else _core.to_ms(ttl, "ttl")
        lease = _core.lease_id(lease_id)
        acquire = _wire.acquire(key, ttl_ms, lease, _core.block_ms(wait), self.limit)
        wanted = self.durability if durability is None else _core.durability(durability)
        client = self.redis
        if wanted is None and then is None:
            granted = _core.lease_or_held(key, lease, await _run(client, acquire))
            return self._handle(client, key, granted, ttl_ms)
        cmds: List[_wire.Command[Any]] = [acquire] if wanted is None else [acquire, _wire.wait(*wanted)]
        queued: List[Any] = []
        if then is None:
            results = await _run_many(client, cmds)
        else:
            results, queued, _ = await _run_queued(client, cmds, then, [], "acquire(then=...)")
        got = results[0]
        if isinstance(got, BaseException):
            raise got
        granted = _core.lease_or_held(key, lease, got)
        handle = self._handle(client, key, granted, ttl_ms)
        acked: Any = results[1] if wanted is not None else None
        if wanted is not None and (isinstance(acked, BaseException) or acked < wanted[0]):
            release_error: Optional[BaseException] = None
            try:
                await handle.release()
            except Exception as err:  # noqa: BLE001 - reported in the NotReplicated
                release_error = err
            cause = acked if isinstance(acked, BaseException) else None
            raise _core.not_replicated(key, lease, wanted[0], None if cause else acked, cause,
                                       release_error) from cause
        if then is not None:
            failed = _core.first_error(queued)
            if failed is not None:
                release_error = None
                try:
                    await asyncio.shield(handle.release())
                except Exception as err:  # noqa: BLE001 - noted on the error raised
                    release_error = err
                raise _core.then_failed(handle, failed, release_error)
            handle.then_results = queued
        return handle

    async def macquire(self, parts_list: Sequence[Any], *, ttl: Optional[Seconds] = None
                       ) -> Tuple[Dict[Hashable, SingleLockHandle], List[Hashable]]:
        """Pipelined ACQUIREs; see :meth:`pylocks.blocking.RedisLockFactory.macquire`."""
        named = self._keys_for(parts_list)
        ttl_ms = self.ttl_ms if ttl is None else _core.to_ms(ttl, "ttl")
        cmds: List[_wire.Command[Any]] = [_wire.acquire(key, ttl_ms, _core.lease_id(None), None, self.limit)
                                          for _, key in named]
        if self.durability is not None:
            cmds.append(_wire.wait(*self.durability))
        client = self.redis
        results = await _run_many(client, cmds) if cmds else []
        handles: Dict[Hashable, SingleLockHandle] = {}
        missing: List[Hashable] = []
        failure: Optional[BaseException] = None
        for (name, key), result in zip(named, results):
            if isinstance(result, BaseException):
                failure = failure or result
            elif result is None:
                missing.append(name)
            else:
                handles[name] = self._handle(client, key, result, ttl_ms)
        if failure is None and self.durability is not None and handles:
            acked = results[-1]
            if isinstance(acked, BaseException) or acked < self.durability[0]:
                failure = _core.not_replicated(
                    ", ".join(h.key for h in handles.values()), "(one per lock)", self.durability[0],
                    None if isinstance(acked, BaseException) else acked,
                    acked if isinstance(acked, BaseException) else None, None)
        if failure is not None:
            if handles:
                await _run_many(client, [_wire.release(h.key, h.id) for h in handles.values()])
            raise failure
        return handles, missing

    async def get_handle(self, *args: Any, lease_id: Optional[str] = None,
                         extend: Optional[Seconds] = None) -> SingleLockHandle:
        """Confirm an existing lease and return its handle (``get_handle(*parts, lease_id)``)."""
        parts, lease = _core.split_lease(args, lease_id)
        key = self.key(*parts)
        handle = SingleLockHandle(self.redis, key, _core.lease_id(lease), 0, 0, self.ttl_ms)
        if extend is None:
            return await handle.confirm()
        return await handle.extend(extend)

    async def claim(self, *args: Any, lease_id: Optional[str] = None, new_id: Optional[str] = None,
                    extend: Optional[Seconds] = None) -> SingleLockHandle:
        """Claim the lease ``lease_id`` on ``parts`` for this run (``claim(*parts, lease_id)``);
        ``LockClaimed`` when another run of the same message claimed it first."""
        parts, lease = _core.split_lease(args, lease_id)
        key = self.key(*parts)
        handle = SingleLockHandle(self.redis, key, _core.lease_id(lease), 0, 0, self.ttl_ms)
        return await handle.claim(new_id, extend)

    async def info(self, *parts: Any) -> Optional[Union[LockInfo, SemaphoreInfo]]:
        """``PYLOCK.INFO``: who holds the lock, or ``None``."""
        return await _run(self.redis, _wire.info(self.key(*parts)))

    async def is_held(self, *parts: Any) -> bool:
        """Whether any lease holds the lock on ``parts`` now."""
        return (await self.info(*parts)) is not None

    async def release_expected(self, parts: Any, lease_id: str) -> bool:
        """Release the lock on ``parts`` only if ``lease_id`` holds it."""
        key = self.make_key(parts)
        return await _run(self.redis, _wire.release(key, _core.lease_id(lease_id)))

    async def mrelease_expected(self, expected: Mapping[Any, str]) -> Tuple[List[Hashable], List[Hashable]]:
        """Pipelined conditional releases: ``(released, missing)``."""
        named = self._expected_for(expected)
        results = (await _run_many(self.redis, [_wire.release(key, lease) for _, key, lease in named])
                   if named else [])
        return _core.sort_releases(named, results)

    async def release_hard(self, parts: Any) -> bool:
        """A plain ``DEL`` of the lock, whoever holds it. Dangerous: see
        :meth:`pylocks.blocking.RedisLockFactory.release_hard`."""
        key = self.make_key(parts)
        if not await _run(self.redis, _wire.delete(key)):
            raise LockExpired(f"lock {key} is not held by any lease", key)
        return True
