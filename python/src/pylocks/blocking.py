"""Locks and leases over a blocking (synchronous) client: redis-py's ``redis.Redis`` or
valkey-py's ``valkey.Valkey``.

Every rule lives in the server (the ``pylock`` Redis module): this module only builds keys,
sends ``PYLOCK.ACQUIRE/CONFIRM/RELEASE/INFO`` (as :mod:`pylocks._wire` spells them, the same
for :mod:`pylocks.asyncio`) and turns their replies into handles and errors.

Times given to this API are in **seconds** (``int``, ``float`` or :class:`datetime.timedelta`),
like the original library's ``ttl=60``; they go over the wire as whole milliseconds.

Example::

    from pylocks.blocking import RedisLockFactory
    from pylocks.errors import LockAlreadyHeld

    # no client given: PYLOCKS_REDIS_URL, else redis://127.0.0.1:6379/0
    person_lock = RedisLockFactory(prefix="person", ttl=60, arity=1, root_prefix="locks_example")
    handle = person_lock.acquire(42)           # raises LockAlreadyHeld if someone else has it
    with handle.releasing():                   # RELEASE on the way out; raises if the lease was lost
        ...
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
import time
import uuid
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Callable, Dict, Hashable, Iterator, List, Mapping, Optional, Sequence, Tuple, Type, TypeVar, Union

import redis

from . import _core, _wire
from ._core import Seconds
from .keys import DEFAULT_ROOT_PREFIX
from ._wire import Lease, LockInfo, SemaphoreInfo
from .errors import LeaseLost, LeaseUnconfirmed, LockExpired, lease_error

__all__ = ["RedisLockFactory", "SingleLockHandle", "Keeper", "LeaseWatch", "LockInfo", "SemaphoreInfo", "Seconds",
           "DEFAULT_ROOT_PREFIX", "LEASE_ENDS"]

#: What :meth:`SingleLockHandle.watch` can answer (see :data:`pylocks._wire.LEASE_ENDS`).
LEASE_ENDS = _wire.LEASE_ENDS

logger = logging.getLogger(__name__)

T = TypeVar("T")
ExcTypes = Union[Type[BaseException], Tuple[Type[BaseException], ...]]

#: A blocking client: ``redis.Redis``, ``valkey.Valkey``, or anything with their
#: ``execute_command`` and ``pipeline``.
Client = Any


def _run(client: Client, cmd: "_wire.Command[T]") -> T:
    try:
        reply = client.execute_command(*cmd.args)
    except Exception as err:
        mapped = cmd.error(err)
        if mapped is err:
            raise
        raise mapped from None
    return cmd.parse(reply)


def _run_many(client: Client, cmds: Sequence["_wire.Command[Any]"]) -> List[Any]:
    """Send ``cmds`` in one pipeline (not a transaction); each result is a value or an error."""
    pipe = client.pipeline(transaction=False)
    for cmd in cmds:
        pipe.execute_command(*cmd.args)
    replies = pipe.execute(raise_on_error=False)
    return [cmd.settle(reply) for cmd, reply in zip(cmds, replies)]


def _run_queued(client: Client, first: Sequence["_wire.Command[Any]"], queue: _core.Queue,
                last: Sequence["_wire.Command[Any]"], what: str) -> Tuple[List[Any], List[Any], List[Any]]:
    """``first``, the commands ``queue(pipe)`` adds, and ``last`` in one pipeline (one round
    trip, not a transaction): (``first``'s results, the caller's replies, ``last``'s results),
    each a value or an error."""
    pipe, added = _core.queued_pipeline(client, first, queue, last, what)
    replies = pipe.execute(raise_on_error=False)
    return _core.split_replies(first, added, last, replies)


# --- the default client: made on first use, once per process --------------------------------

_default_lock = threading.Lock()
_default_clients: Dict[Tuple[int, str], Client] = {}


def default_client() -> Client:
    """The client of factories given none: ``redis.Redis.from_url(PYLOCKS_REDIS_URL)``, or
    redis-py's default ``redis://127.0.0.1:6379/0``.

    Made on first use, so importing a module that creates factories connects nowhere, and made
    again in a forked child (a Celery prefork worker), which never shares the parent's sockets.
    """
    key = (os.getpid(), _core.default_url())
    with _default_lock:
        client = _default_clients.get(key)
        if client is None:
            for stale in [k for k in _default_clients if k[0] != key[0]]:
                del _default_clients[stale]  # the parent's: its sockets are not ours to close
            client = _default_clients[key] = redis.Redis.from_url(key[1])
        return client


class _LeaseLostInterrupt(BaseException):
    """Raised inside a block guarded by ``keep_alive(interrupt=True)`` when the lease is lost.

    A ``BaseException``, like ``KeyboardInterrupt``, so that ``except Exception`` in the block
    does not swallow it; the keeper turns it into the :class:`LeaseLost` on the way out.
    """


def _async_raise(thread_id: int, exc: Optional[Type[BaseException]]) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id),
                                               ctypes.py_object(exc) if exc else ctypes.c_void_p(0))


class Keeper:
    """Renews a lease in a background thread every third of its TTL (``handle.keep_alive()``).

    Each renewal is ``PYLOCK.CONFIRM key lease EXTEND ttl``. When one fails:

    - ``NOTHELD``/``NOTOWNED``: the lease is lost at once;
    - anything else (a connection error, a timeout): it retries until the moment the lease
      may have expired, then reports :class:`~pylocks.errors.LeaseUnconfirmed`.

    A loss is signalled at once: :attr:`lost` (a ``threading.Event``) is set, :attr:`error`
    holds the error, and ``on_lost(error)`` is called (in the keeper thread). Used as a
    context manager with ``interrupt=True``, the block is also stopped: the error is raised in
    the thread that entered it, at its next Python instruction (a call blocked in C, such as a
    socket read, finishes first), and leaves the ``with`` as the ``LeaseLost``.

    :meth:`stop` ends the renewals and sends nothing; the lease then ends at its TTL unless it
    is released.
    """

    def __init__(self, handle: "SingleLockHandle", interval_ms: int,
                 on_lost: Optional[Callable[[LeaseLost], Any]], interrupt: bool) -> None:
        self.handle = handle
        self.interval = interval_ms / 1000.0
        self.on_lost = on_lost
        self.interrupt = interrupt
        self.lost = threading.Event()
        self.error: Optional[LeaseLost] = None
        self._stopping = threading.Event()
        self._guard = threading.Lock()
        self._guarded_thread: Optional[int] = None
        self._interrupt_sent = False
        self._valid_until = time.monotonic() + handle.ttl_ms / 1000.0
        self._thread = threading.Thread(target=self._renew_until_stopped, daemon=True,
                                        name=f"pylocks-keeper {handle.key}")
        self._thread.start()

    def __repr__(self) -> str:
        return f"<Keeper {self.handle.key!r} lease={self.handle.id!r} lost={self.lost.is_set()}>"

    @property
    def held(self) -> bool:
        """Whether every renewal so far succeeded."""
        return not self.lost.is_set()

    def _renew_until_stopped(self) -> None:
        delay = self.interval
        while not self._stopping.wait(delay):
            sent = time.monotonic()
            try:
                self.handle.extend(self.handle.lease_ttl_ms / 1000.0)
            except LeaseLost as err:
                self._lose(err)
                return
            except Exception as err:  # noqa: BLE001 - transport trouble: retry while the lease may live
                if time.monotonic() >= self._valid_until:
                    lost = LeaseUnconfirmed(
                        f"lease {self.handle.id} on {self.handle.key} could not be renewed before it "
                        f"was due to end: {err}", self.handle.key, self.handle.id)
                    lost.__cause__ = err
                    self._lose(lost)
                    return
                delay = min(self.interval, max(0.01, self._valid_until - time.monotonic()) / 4)
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
        with self._guard:
            if self.interrupt and self._guarded_thread is not None:
                self._interrupt_sent = True
                _async_raise(self._guarded_thread, _LeaseLostInterrupt)

    def stop(self) -> SingleLockHandle:
        """End the renewals (no network call) and return the handle."""
        self._stopping.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
        return self.handle

    def release(self, ignore_failure: bool = False, *, before: Optional[_core.Queue] = None) -> bool:
        """Stop, then release the lease (see :meth:`SingleLockHandle.release`, ``before=`` too)."""
        return self.stop().release(ignore_failure=ignore_failure, before=before)

    def __enter__(self) -> "Keeper":
        with self._guard:
            self._guarded_thread = threading.get_ident()
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        interrupted = exc_type is _LeaseLostInterrupt
        try:
            with self._guard:
                self._guarded_thread = None
                if self._interrupt_sent and not interrupted:
                    _async_raise(threading.get_ident(), None)  # not delivered yet: withdraw it
            self.stop()
        except _LeaseLostInterrupt:
            interrupted = True  # delivered here, after the block: the loss stands all the same
            self.stop()
        if interrupted:
            assert self.error is not None
            raise self.error from None


class SingleLockHandle:
    """A lease on one lock, as granted or confirmed by the server.

    :ivar redis: the client the commands go through.
    :ivar key: the lock's Redis key.
    :ivar id: the lease id; hand it to a task so it can :meth:`confirm` the lease.
    :ivar token: the fencing token of the lease (strictly increasing per key across grants).
    :ivar ttl_ms: milliseconds left on the lease when the server last replied.
    :ivar default_ttl_ms: what :meth:`extend` uses when no ttl is given (the factory's ttl).
    :ivar lease_ttl_ms: the TTL the lease was asked for, which :meth:`keep_alive` renews.
    :ivar then_results: the replies of the commands that ``acquire(..., then=fn)`` queued,
        in order; ``None`` for a handle acquired without ``then=``.
    :ivar before_results: the replies of the commands that ``release(before=fn)`` queued,
        in order (set before the release's outcome is raised); ``None`` until then.
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
        """Seconds left on the lease when the server last replied (``ttl_ms / 1000``)."""
        return self.ttl_ms / 1000.0

    def __repr__(self) -> str:
        return f"<SingleLockHandle key={self.key!r} id={self.id!r} token={self.token} ttl_ms={self.ttl_ms}>"

    def _update(self, lease: Lease) -> "SingleLockHandle":
        self.token = lease.token
        self.ttl_ms = lease.ttl_ms
        return self

    def confirm(self) -> "SingleLockHandle":
        """Check with the server that this lease still holds the lock (``PYLOCK.CONFIRM``).

        Refreshes :attr:`token` and :attr:`ttl_ms`.

        :raises LockExpired: nobody holds the lock (the lease expired or was released);
            a ``LockNotHeld`` and a ``LockNotOwned``.
        :raises LockNotOwned: another lease holds the lock.
        """
        return self._update(_run(self.redis, _wire.confirm(self.key, self.id)))

    def check_if_owned(self) -> "SingleLockHandle":
        """The original library's name for :meth:`confirm`: raises unless this lease holds the
        lock, as the server says now (``LockExpired`` or ``LockNotOwned``)."""
        return self.confirm()

    def do_i_still_have_lock(self) -> bool:
        """Whether this lease holds the lock, as the server says now (``PYLOCK.CONFIRM``).

        ``False`` for a lost lease; other errors (connection, ``WRONGTYPE``) are raised.
        """
        try:
            self.confirm()
        except LeaseLost:
            return False
        return True

    def extend(self, ttl: Optional[Seconds] = None) -> "SingleLockHandle":
        """Confirm the lease and reset its time left to ``ttl`` seconds from now.

        ``ttl`` defaults to the factory's ttl. Raises like :meth:`confirm`; a lost lease is not
        revived.
        """
        ttl_ms = self.default_ttl_ms if ttl is None else _core.to_ms(ttl, "ttl")
        return self._update(_run(self.redis, _wire.confirm(self.key, self.id, ttl_ms)))

    def release(self, ignore_failure: bool = False, *, before: Optional[_core.Queue] = None) -> bool:
        """Release the lock if, and only if, this lease holds it (``PYLOCK.RELEASE``).

        Returns ``True``. A lost lease is an error, never a silent no-op:
        :class:`~pylocks.errors.LockExpired` if nobody holds the lock (the lease expired or was
        already released), :class:`~pylocks.errors.LockNotOwned` if another lease holds it
        (that lock is untouched). Either way, whatever ran under this handle may have run
        without the lock. With ``ignore_failure=True`` a lost lease returns ``False`` instead
        (other errors are still raised).

        :param before: ``before(pipe)`` queues commands (writes, typically) on a pipeline
            that is sent in one round trip with the ``RELEASE`` after them; their replies are
            set as :attr:`before_results`. The RELEASE's outcome is raised or returned exactly
            as above; then, if one of the queued commands failed, its error is raised (the
            lease was released all the same).

            .. warning:: The queued commands are **not conditional on the lease**: the server
               runs them even when the lease was already lost, and only the RELEASE after them
               fails. A successful release does prove that the lease held while they ran (a lost
               lease never comes back); a ``LeaseLost`` means they ran anyway, possibly after
               another holder got the lock. Where that matters, make the data check the lease's
               fencing token (:attr:`token`).

            Not with a cluster client (``ValueError``, before anything is sent).
        """
        if before is not None:
            cmd = _wire.release(self.key, self.id)
            _, written, (released,) = _run_queued(self.redis, [], before, [cmd], "release(before=...)")
            self.before_results = written
            return _core.release_outcome(self, released, written, ignore_failure)
        try:
            _run(self.redis, _wire.release(self.key, self.id))
        except LeaseLost:
            if ignore_failure:
                return False
            raise
        self.ttl_ms = 0
        return True

    @contextmanager
    def releasing(self, ignore_failure: bool = False, keep_on: ExcTypes = ()) -> Iterator["SingleLockHandle"]:
        """Context manager that releases the lease when the block exits.

        - Block ends normally: :meth:`release`; a lost lease raises
          :class:`~pylocks.errors.LeaseLost` unless ``ignore_failure=True``.
        - Block raises: the lease is released, and the block's exception goes on. If the release
          fails too, that failure is logged and added as a note to the block's exception
          (Python 3.11+), so the original error is never masked.
        - Block raises an instance of ``keep_on``: the lease is kept (not released), e.g.
          ``keep_on=celery.exceptions.Retry`` so that a retried task can confirm the same
          lease again. The lease still expires at its TTL; extend it to cover the retry delay.
        """
        try:
            yield self
        except BaseException as exc:
            if keep_on and isinstance(exc, keep_on):
                raise
            try:
                self.release()
            except Exception as release_err:  # noqa: BLE001 - reported, never masks exc
                _core.report_failed_release(self, exc, release_err)
            raise
        else:
            self.release(ignore_failure=ignore_failure)

    def claim(self, new_id: Optional[str] = None, extend: Optional[Seconds] = None) -> "SingleLockHandle":
        """Take this lease over under a new id, with a new, larger fencing token
        (``PYLOCK.CONFIRM … CLAIM``), and return the new lease's handle.

        For "lock before enqueuing": each run of a task claims the lease id its message
        carries, and only one run of one message can. The lock is never free in between.

        :param new_id: the new lease id; by default a UUID4 made here, before sending, so a
            call that the client retries after a lost reply sends the same id and gets the same
            success (the server answers a repeated claim with the same lease).
        :param extend: also set the lease's time left to this many seconds (``EXTEND``);
            otherwise the deadline stays.
        :raises LockClaimed: another run claimed this lease first under its own id.
        :raises LockExpired: nobody holds the lock (the lease expired or was released).
        :raises LockNotOwned: another lease holds it.
        :raises ValueError: ``new_id`` is this lease's own id (before any network call).
        """
        new = str(uuid.uuid4()) if new_id is None else _core.lease_id(new_id)
        if new == self.id:
            raise ValueError("a lease cannot be claimed under its own id")
        extend_ms = None if extend is None else _core.to_ms(extend, "extend")
        lease = _run(self.redis, _wire.claim(self.key, self.id, new, extend_ms))
        return SingleLockHandle(self.redis, self.key, lease.lease_id, lease.token, lease.ttl_ms,
                                self.default_ttl_ms, self.lease_ttl_ms)

    def watch(self, timeout: Optional[Seconds] = None) -> Optional[str]:
        """Wait until this lease stops holding the lock, and return why (``PYLOCK.WATCH``).

        One of :data:`LEASE_ENDS`: ``"notheld"``, ``"notowned"`` or ``"claimed"`` at once if
        it does not hold the lock now; else, when it ends, ``"released"``, ``"expired"``,
        ``"claimed"``, ``"deleted"``, ``"flushed"``, ``"moved"`` or ``"demoted"``. ``None`` when
        ``timeout`` seconds pass with the lease still held (``None``: wait forever).

        It blocks the connection it runs on: a client ``socket_timeout``, if set, must be
        longer than ``timeout``. :meth:`watching` runs it in the background.
        """
        timeout_ms = None if timeout is None else _core.to_ms(timeout, "timeout")
        cmd = _wire.watch(self.key, self.id, timeout_ms)
        try:
            return _run(self.redis, cmd)
        except Exception as err:
            demoted = _wire.watch_error(err)
            if demoted is None:
                raise
            return demoted

    def watching(self, on_lost: Optional[Callable[[str], Any]] = None,
                 poll: Seconds = 1.0) -> "LeaseWatch":
        """Watch this lease from a background thread; see :class:`LeaseWatch`.

        :param on_lost: called with the reason, in the watcher thread, when the lease ends.
        :param poll: how long each server-side wait lasts before the thread looks whether it
            was stopped; stopping takes at most this long.
        """
        return LeaseWatch(self, on_lost, _core.to_ms(poll, "poll"))

    def keep_alive(self, on_lost: Optional[Callable[[LeaseLost], Any]] = None, *,
                   interval: Optional[Seconds] = None, interrupt: bool = False) -> Keeper:
        """Start renewing this lease in the background; see :class:`Keeper`.

        :param on_lost: called with the error, in the keeper thread, when the lease is lost.
        :param interval: seconds between renewals; a third of the lease's TTL by default.
        :param interrupt: used as ``with handle.keep_alive(interrupt=True):``, stop the block
            with the ``LeaseLost`` when the lease is lost.
        """
        return Keeper(self, _core.keeper_interval_ms(self.lease_ttl_ms, interval), on_lost, interrupt)


class LeaseWatch:
    """A background ``PYLOCK.WATCH`` of one lease (made by :meth:`SingleLockHandle.watching`).

    The moment the lease ends, :attr:`lost` is set and ``on_lost(reason)`` called. Use it
    around long work, and check before each step that needs the lock::

        with handle.watching() as watch:
            for chunk in work:
                watch.check()          # raises LockClaimed / LockNotOwned / LockExpired
                process(chunk)

    Where :class:`Keeper` renews a lease and learns of a loss at its next renewal, a watch
    learns of it within milliseconds, and says why; the two can run side by side.

    :ivar lost: a :class:`threading.Event`, set once the lease has ended (or the watch failed).
    :ivar reason: why it ended (one of :data:`LEASE_ENDS`), or ``None`` while it holds.
    :ivar error: an error the watcher thread met (the connection failed), or ``None``; the
        event is set then too, since the lease can no longer be vouched for.
    """

    def __init__(self, handle: SingleLockHandle, on_lost: Optional[Callable[[str], Any]],
                 poll_ms: int) -> None:
        self.handle = handle
        self.lost = threading.Event()
        self.reason: Optional[str] = None
        self.error: Optional[BaseException] = None
        self._on_lost = on_lost
        self._poll_ms = poll_ms
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"pylocks-watch-{handle.key}",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # Clients are thread safe: the blocked WATCH holds a pooled connection of its own.
        try:
            while not self._stop.is_set():
                reason = self.handle.watch(timeout=self._poll_ms / 1000.0)
                if reason is not None:
                    self.reason = reason
                    break
        except Exception as err:  # noqa: BLE001 - reported through .error and the event
            self.error = err
            logger.error("watching lease %s on %s failed: %s", self.handle.id, self.handle.key, err)
        if self.reason is None and self.error is None:
            return  # stopped
        self.lost.set()
        if self._on_lost is not None and self.reason is not None:
            try:
                self._on_lost(self.reason)
            except Exception:  # noqa: BLE001 - a callback's failure is logged, not lost
                logger.exception("on_lost callback for lease %s failed", self.handle.id)

    def check(self) -> None:
        """Raise if the lease has ended: :class:`~pylocks.errors.LockClaimed`,
        :class:`~pylocks.errors.LockNotOwned` or :class:`~pylocks.errors.LockExpired` by the
        reason, or the watcher's own error."""
        if not self.lost.is_set():
            return
        if self.error is not None:
            raise self.error
        reason = self.reason or "notheld"
        code = {"claimed": "CLAIMED", "notowned": "NOTOWNED"}.get(reason, "NOTHELD")
        err = lease_error(f"{code} the lease ended: {reason}", self.handle.key, self.handle.id)
        if err is not None:
            raise err

    def stop(self) -> None:
        """Stop watching; returns once the thread has (at most ``poll`` later)."""
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> "LeaseWatch":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class RedisLockFactory(_core.FactoryCore[Client]):
    """Makes locks on keys ``[root_prefix:]prefix:part1:...:partN`` with ``N == arity``.

    :param redis: the client of the lock store (``redis.Redis`` or ``valkey.Valkey`` with the
        pylock module loaded), first positional argument or ``redis=``. Without one, the
        factory asks :meth:`get_redis_connection` (override it in a subclass), else uses
        :func:`default_client` (``PYLOCKS_REDIS_URL``, else ``redis://127.0.0.1:6379/0``),
        made on first use and again after a fork. :meth:`build` returns a copy bound to a
        given client.
    :param prefix: names the kind of lock, e.g. ``"person"``.
    :param ttl: lease duration in seconds (number or timedelta), e.g. ``60``.
    :param arity: how many parts identify one lock, e.g. ``1`` for a person id.
    :param root_prefix: first key component shared by all your locks; ``"pylocks"`` by
        default, ``None`` leaves it out.
    :param durability: ``(replicas, timeout_seconds)``: after each grant, ``WAIT`` until that
        many replicas have it; otherwise release it and raise
        :class:`~pylocks.errors.NotReplicated`.
    :param limit: make each key a semaphore of up to ``limit`` leases at once (``LIMIT n``,
        1 to 100,000): every acquire, blocking acquire, keeper, claim, extend and release
        works per lease as for a lock, and :meth:`info` returns a
        :class:`~pylocks.blocking.SemaphoreInfo` with every holder when ``limit > 1``. All
        clients of one key must use the same limit (else
        :class:`~pylocks.errors.LimitMismatch`). ``None`` (the default): a lock.

    Keys are built exactly like the Rust client's (``testdata/key-vectors.json``).
    """

    @property
    def redis(self) -> Client:
        """The client this factory's commands go through, found as the class doc says."""
        found = self._explicit_or_override()
        return default_client() if found is None else found

    def build(self, redis_conn: Optional[Client] = None) -> "RedisLockFactory":
        """A copy of this factory bound to ``redis_conn`` (by default, to the client this one
        would use now), as in the original library."""
        bound = _copy(self)
        bound._redis = self.redis if redis_conn is None else redis_conn
        return bound

    def _handle(self, client: Client, key: str, lease: Lease, lease_ttl_ms: int) -> SingleLockHandle:
        return SingleLockHandle(client, key, lease.lease_id, lease.token, lease.ttl_ms, self.ttl_ms, lease_ttl_ms)

    def acquire(
        self,
        *parts: Any,
        ttl: Optional[Seconds] = None,
        lease_id: Optional[str] = None,
        wait: Optional[Seconds] = None,
        durability: Optional[Tuple[int, Seconds]] = None,
        then: Optional[_core.Queue] = None,
    ) -> SingleLockHandle:
        """Take the lock on ``parts`` and return the new lease's handle (``PYLOCK.ACQUIRE``).

        :param ttl: lease duration in seconds; defaults to the factory's ttl.
        :param lease_id: the lease id to use (1 to 128 bytes). By default a random UUID4 is made
            here, so a call that the client retries after a lost reply is granted to the same
            lease instead of finding the lock held by a lease nobody knows.
        :param wait: if the lock is held, wait up to this many seconds for it, first come first
            served (``BLOCK``); ``math.inf`` waits forever. The client's ``socket_timeout``, if
            set, must be longer.
        :param durability: overrides the factory's ``(replicas, timeout)`` for this call.
        :param then: ``then(pipe)`` queues reads on a pipeline (not a transaction) that is sent
            in one round trip together with the ``ACQUIRE`` (and the durability ``WAIT``),
            after them. The server runs one connection's commands in order, so with ``wait=``
            the reads run only once the lock is granted and see what the previous holder wrote
            before releasing. Their replies are set as :attr:`SingleLockHandle.then_results`
            when the lease is granted; otherwise they are dropped and the call raises as it
            would without ``then=``. If the grant succeeded but a queued command failed, the
            lease is released and that error is raised.

            .. warning:: The queued commands run whether or not the lock is granted (a held
               lock without ``wait=``, or a ``wait=`` that times out, still runs them, after
               the ACQUIRE's answer): queue reads only.

            Not with a cluster client (``ValueError``, before anything is sent).
        :raises LockAlreadyHeld: another lease holds the lock (after ``wait``, if given).
        :raises NotReplicated: too few replicas acknowledged the grant; it was released.
        :raises ArityError: wrong number of parts (checked before any network call).
        """
        key = self.key(*parts)
        ttl_ms = self.ttl_ms if ttl is None else _core.to_ms(ttl, "ttl")
        lease = _core.lease_id(lease_id)
        acquire = _wire.acquire(key, ttl_ms, lease, _core.block_ms(wait), self.limit)
        wanted = self.durability if durability is None else _core.durability(durability)
        client = self.redis
        if wanted is None and then is None:
            granted = _core.lease_or_held(key, lease, _run(client, acquire))
            return self._handle(client, key, granted, ttl_ms)
        # WAIT counts this connection's writes: one pipeline keeps both on one connection.
        cmds: List[_wire.Command[Any]] = [acquire] if wanted is None else [acquire, _wire.wait(*wanted)]
        queued: List[Any] = []
        if then is None:
            results = _run_many(client, cmds)
        else:
            results, queued, _ = _run_queued(client, cmds, then, [], "acquire(then=...)")
        got = results[0]
        if isinstance(got, BaseException):
            raise got
        granted = _core.lease_or_held(key, lease, got)
        handle = self._handle(client, key, granted, ttl_ms)
        acked: Any = results[1] if wanted is not None else None
        if wanted is not None and (isinstance(acked, BaseException) or acked < wanted[0]):
            release_error: Optional[BaseException] = None
            try:
                handle.release()
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
                    handle.release()
                except Exception as err:  # noqa: BLE001 - noted on the error raised
                    release_error = err
                raise _core.then_failed(handle, failed, release_error)
            handle.then_results = queued
        return handle

    def macquire(self, parts_list: Sequence[Any], *, ttl: Optional[Seconds] = None
                 ) -> Tuple[Dict[Hashable, SingleLockHandle], List[Hashable]]:
        """Take every free lock of ``parts_list`` in one round trip (pipelined ACQUIREs).

        Each element names one lock: a tuple (or list) of ``arity`` parts, or for arity 1 the
        part itself (``['x', 'y']`` or ``[('x',), ('y',)]``). Locks held by others are left
        alone. Returns ``(handles_by_parts, missing)``: a dict from each element as given (a
        list made a tuple) to its handle, and the list of elements that were held.

        With durability, one ``WAIT`` follows the ACQUIREs; too few acknowledgements release
        every grant and raise :class:`~pylocks.errors.NotReplicated`. Any other error reply
        (``WRONGTYPE``) releases this call's grants and is raised.

        :raises ArityError: an element with the wrong number of parts (before any network call).
        :raises ValueError: one lock named twice.
        """
        named = self._keys_for(parts_list)
        ttl_ms = self.ttl_ms if ttl is None else _core.to_ms(ttl, "ttl")
        cmds: List[_wire.Command[Any]] = [_wire.acquire(key, ttl_ms, _core.lease_id(None), None, self.limit)
                                          for _, key in named]
        if self.durability is not None:
            cmds.append(_wire.wait(*self.durability))
        client = self.redis
        results = _run_many(client, cmds) if cmds else []
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
                _run_many(client, [_wire.release(h.key, h.id) for h in handles.values()])
            raise failure
        return handles, missing

    def get_handle(self, *args: Any, lease_id: Optional[str] = None,
                   extend: Optional[Seconds] = None) -> SingleLockHandle:
        """Return the handle of an existing lease, after confirming it with the server.

        Call it as ``get_handle(*parts, lease_id)`` (the original API) or
        ``get_handle(*parts, lease_id=lease_id)``.

        :param extend: also reset the lease's time left to this many seconds (``EXTEND``).
        :raises LockExpired: nobody holds the lock (the lease expired or was released).
        :raises LockNotOwned: another lease holds the lock.
        :raises ArityError: wrong number of parts; ``TypeError``: no lease id (before any
            network call).
        """
        parts, lease = _core.split_lease(args, lease_id)
        key = self.key(*parts)
        lease = _core.lease_id(lease)
        handle = SingleLockHandle(self.redis, key, lease, 0, 0, self.ttl_ms)
        if extend is None:
            return handle.confirm()
        return handle.extend(extend)

    def claim(self, *args: Any, lease_id: Optional[str] = None, new_id: Optional[str] = None,
              extend: Optional[Seconds] = None) -> SingleLockHandle:
        """Claim the lease ``lease_id`` on ``parts`` for this run (``CONFIRM … CLAIM``): the
        task side of "lock before enqueuing" when a message can be delivered twice.

        Call it as ``claim(*parts, lease_id)`` or ``claim(*parts, lease_id=lease_id)``. See
        :meth:`SingleLockHandle.claim` for ``new_id`` and ``extend``.

        :raises LockClaimed: another run of the same message claimed it first: do not run.
        :raises LockExpired: nobody holds the lock (the lease expired or was released).
        :raises LockNotOwned: another lease holds the lock.
        """
        parts, lease = _core.split_lease(args, lease_id)
        key = self.key(*parts)
        lease = _core.lease_id(lease)
        return SingleLockHandle(self.redis, key, lease, 0, 0, self.ttl_ms).claim(new_id, extend)

    def info(self, *parts: Any) -> Optional[Union[LockInfo, SemaphoreInfo]]:
        """Who holds the lock on ``parts`` (``PYLOCK.INFO``), or ``None`` if nobody does."""
        return _run(self.redis, _wire.info(self.key(*parts)))

    def is_held(self, *parts: Any) -> bool:
        """Whether any lease holds the lock on ``parts`` now (``PYLOCK.INFO``)."""
        return self.info(*parts) is not None

    def release_expected(self, parts: Any, lease_id: str) -> bool:
        """Release the lock on ``parts`` if, and only if, ``lease_id`` holds it (``PYLOCK.RELEASE``).

        ``parts`` is a tuple (or list) of parts, or for arity 1 the part itself. Returns
        ``True``; raises ``LockExpired`` / ``LockNotOwned`` like :meth:`SingleLockHandle.release`.
        """
        key = self.make_key(parts)
        return _run(self.redis, _wire.release(key, _core.lease_id(lease_id)))

    def mrelease_expected(self, expected: Mapping[Any, str]) -> Tuple[List[Hashable], List[Hashable]]:
        """Release several locks in one round trip, each only if its given lease holds it.

        ``expected`` maps parts (as for :meth:`macquire`) to lease ids. Returns
        ``(released, missing)``: the parts released, and those whose lease did not hold the
        lock (``NOTHELD``/``NOTOWNED``; those locks are untouched). Any other error reply is
        raised after every release was sent.
        """
        named = self._expected_for(expected)
        results = _run_many(self.redis, [_wire.release(key, lease) for _, key, lease in named]) if named else []
        return _core.sort_releases(named, results)

    def release_hard(self, parts: Any) -> bool:
        """Delete the lock on ``parts`` whoever holds it: a plain ``DEL``.

        .. warning:: Dangerous. The holder is not asked and does not learn of it until its
           next confirm; the lock is free at once (waiters are served), so two workers may
           then act at the same time. The ``DEL`` does not check that the key is a lock: it
           deletes whatever value is there. Prefer :meth:`release_expected`; keep this for
           operators clearing a lock they know is abandoned.

        Returns ``True``. :raises LockExpired: nothing was there to delete.
        """
        key = self.make_key(parts)
        if not _run(self.redis, _wire.delete(key)):
            raise LockExpired(f"lock {key} is not held by any lease", key)
        return True


def _copy(factory: "RedisLockFactory") -> "RedisLockFactory":
    import copy
    return copy.copy(factory)
