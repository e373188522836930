"""Locks and leases over redis-py's blocking (synchronous) client.

Every rule lives in the server (the ``pylock`` Redis module): this module only builds keys,
sends ``PYLOCK.ACQUIRE/CONFIRM/RELEASE/INFO`` and turns their replies into handles and errors.

Times given to this API are in **seconds** (``int``, ``float`` or :class:`datetime.timedelta`),
like the original library's ``ttl=60``; they go over the wire as whole milliseconds.

Example::

    import redis
    from pylocks.blocking import RedisLockFactory
    from pylocks.errors import LockAlreadyHeld

    person_lock = RedisLockFactory(redis.Redis(), prefix="person", ttl=60, arity=1,
                                   root_prefix="locks_example")
    handle = person_lock.acquire(42)           # raises LockAlreadyHeld if someone else has it
    with handle.releasing():                   # RELEASE on the way out; raises if the lease was lost
        ...
"""

from __future__ import annotations

import logging
import math
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Iterator, List, NoReturn, Optional, Tuple, Type, Union

import redis
from redis.exceptions import ResponseError

from .errors import LockAlreadyHeld, lease_error
from .keys import lock_key

__all__ = ["RedisLockFactory", "SingleLockHandle", "LockInfo", "LeaseWatch", "Seconds", "LEASE_ENDS"]

#: What :meth:`SingleLockHandle.watch` can answer: why the lease is not (or no longer) held.
#: ``"demoted"`` also stands for the server's own ``UNBLOCKED`` error on a role change.
LEASE_ENDS = ("notheld", "notowned", "claimed", "released", "expired", "deleted", "flushed",
              "moved", "demoted")

logger = logging.getLogger(__name__)

#: A duration in seconds: a number or a :class:`datetime.timedelta`.
Seconds = Union[int, float, timedelta]

ExcTypes = Union[Type[BaseException], Tuple[Type[BaseException], ...]]


def _to_ms(value: Seconds, what: str) -> int:
    """Convert a duration in seconds to whole milliseconds (rounded up), refusing values < 1 ms."""
    if isinstance(value, bool):
        raise TypeError(f"{what} must be a number of seconds or a timedelta, not bool")
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)):
        seconds = float(value)
    else:
        raise TypeError(f"{what} must be a number of seconds or a timedelta, not {type(value).__name__}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{what} must be a positive, finite number of seconds, got {value!r}")
    return max(1, math.ceil(seconds * 1000))


def _text(value: Union[bytes, str]) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _raise_lease_error(err: ResponseError, key: str, lease_id: str) -> NoReturn:
    """Turn the server's NOTHELD / NOTOWNED / CLAIMED error into ours, keeping its message;
    re-raise others."""
    lost = lease_error(str(err), key, lease_id)
    if lost is not None:
        raise lost from None
    raise err


@dataclass(frozen=True)
class LockInfo:
    """What ``PYLOCK.INFO`` says about a held lock."""

    lease_id: str
    token: int
    ttl_ms: int
    waiters: int


class SingleLockHandle:
    """A lease on one lock, as granted or confirmed by the server.

    :ivar redis: the client the commands go through.
    :ivar key: the lock's Redis key.
    :ivar id: the lease id; hand it to a task so it can :meth:`confirm` the lease.
    :ivar token: the fencing token of the lease (strictly increasing per key across grants).
    :ivar ttl_ms: milliseconds left on the lease when the server last replied.
    :ivar default_ttl_ms: what :meth:`extend` uses when no ttl is given (the factory's ttl).
    """

    def __init__(
        self,
        client: "redis.Redis",
        key: str,
        lease_id: str,
        token: int,
        ttl_ms: int,
        default_ttl_ms: int,
    ) -> None:
        self.redis = client
        self.key = key
        self.id = lease_id
        self.token = token
        self.ttl_ms = ttl_ms
        self.default_ttl_ms = default_ttl_ms

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

    def _update(self, reply: List[Any]) -> "SingleLockHandle":
        self.token = int(reply[1])
        self.ttl_ms = int(reply[2])
        return self

    def confirm(self) -> "SingleLockHandle":
        """Check with the server that this lease still holds the lock (``PYLOCK.CONFIRM``).

        Refreshes :attr:`token` and :attr:`ttl_ms`. Raises :class:`~pylocks.errors.LockNotHeld`
        if nobody holds the lock (the lease expired or was released), or
        :class:`~pylocks.errors.LockNotOwned` if another lease holds it.
        """
        try:
            reply = self.redis.execute_command("PYLOCK.CONFIRM", self.key, self.id)
        except ResponseError as err:
            _raise_lease_error(err, self.key, self.id)
        return self._update(reply)

    def extend(self, ttl: Optional[Seconds] = None) -> "SingleLockHandle":
        """Confirm the lease and reset its time left to ``ttl`` seconds from now.

        ``ttl`` defaults to the factory's ttl. Raises like :meth:`confirm`; a lost lease is not
        revived.
        """
        ttl_ms = self.default_ttl_ms if ttl is None else _to_ms(ttl, "ttl")
        try:
            reply = self.redis.execute_command("PYLOCK.CONFIRM", self.key, self.id, "EXTEND", ttl_ms)
        except ResponseError as err:
            _raise_lease_error(err, self.key, self.id)
        return self._update(reply)

    def release(self) -> None:
        """Release the lock if, and only if, this lease holds it (``PYLOCK.RELEASE``).

        A lost lease is an error, never a silent no-op: :class:`~pylocks.errors.LockNotHeld` if
        the lease had expired (or was already released) and nobody holds the lock,
        :class:`~pylocks.errors.LockNotOwned` if another lease holds it (that lock is untouched).
        Either way, whatever ran under this handle may have run without the lock.
        """
        try:
            self.redis.execute_command("PYLOCK.RELEASE", self.key, self.id)
        except ResponseError as err:
            _raise_lease_error(err, self.key, self.id)
        self.ttl_ms = 0

    def claim(self, new_id: Optional[str] = None, extend: Optional[Seconds] = None) -> "SingleLockHandle":
        """Take this lease over under a new id, with a new, larger fencing token
        (``PYLOCK.CONFIRM … CLAIM``), and return the new lease's handle.

        For "lock before enqueuing": each run of a task claims the lease id its message
        carries, and only one run of one message can. The lock is never free in between.

        :param new_id: the new lease id; by default a UUID4 made here, before sending, so a call
            that redis-py retries after a lost reply sends the same id and gets the same
            success (the server answers a repeated claim with the same lease).
        :param extend: also set the lease's time left to this many seconds (``EXTEND``);
            otherwise the deadline stays.
        :raises LockClaimed: another run claimed this lease first under its own id.
        :raises LockNotHeld: nobody holds the lock (the lease expired or was released).
        :raises LockNotOwned: another lease holds it.
        :raises ValueError: ``new_id`` is this lease's own id (before any network call).
        """
        new = str(uuid.uuid4()) if new_id is None else new_id
        if new == self.id:
            raise ValueError("a lease cannot be claimed under its own id")
        args: List[Any] = ["PYLOCK.CONFIRM", self.key, self.id]
        if extend is not None:
            args += ["EXTEND", _to_ms(extend, "extend")]
        args += ["CLAIM", new]
        try:
            reply = self.redis.execute_command(*args)
        except ResponseError as err:
            _raise_lease_error(err, self.key, self.id)
        return SingleLockHandle(self.redis, self.key, _text(reply[0]), int(reply[1]), int(reply[2]),
                                self.default_ttl_ms)

    def watch(self, timeout: Optional[Seconds] = None) -> Optional[str]:
        """Wait until this lease stops holding the lock, and return why (``PYLOCK.WATCH``).

        One of :data:`LEASE_ENDS`: ``"notheld"``, ``"notowned"`` or ``"claimed"`` at once if it
        does not hold the lock now; else, when it ends, ``"released"``, ``"expired"``,
        ``"claimed"``, ``"deleted"``, ``"flushed"``, ``"moved"`` or ``"demoted"``. ``None`` when
        ``timeout`` seconds pass with the lease still held (``None``: wait forever).

        It blocks the connection it runs on: the client's ``socket_timeout``, if set, must be
        longer than ``timeout``. :meth:`watching` runs it in the background.
        """
        args: List[Any] = ["PYLOCK.WATCH", self.key, self.id]
        if timeout is not None:
            args += ["TIMEOUT", _to_ms(timeout, "timeout")]
        try:
            reply = self.redis.execute_command(*args)
        except ResponseError as err:
            if str(err).startswith("UNBLOCKED"):
                return "demoted"  # the server ended every blocked client on a role change
            raise
        return None if reply is None else _text(reply)

    def watching(self, on_lost: Optional[Callable[[str], None]] = None,
                 poll: Seconds = 1.0) -> "LeaseWatch":
        """Watch this lease from a background thread, on a connection of its own.

        Returns a :class:`LeaseWatch` whose :attr:`~LeaseWatch.lost` event is set, and
        ``on_lost(reason)`` called (from the watcher thread), the moment the lease ends, with
        the reason :meth:`watch` gives. Use it as a context manager around long work, and check
        ``watch.lost`` (or ``watch.check()``, which raises) before each step that needs the lock::

            with handle.watching() as watch:
                for chunk in work:
                    watch.check()          # raises LeaseLost subclasses once the lease is gone
                    process(chunk)

        :param poll: how long each server-side wait lasts (``TIMEOUT``) before the thread looks
            whether it was stopped; stopping takes at most this long.
        """
        return LeaseWatch(self, on_lost, _to_ms(poll, "poll"))

    @contextmanager
    def releasing(self, keep_on: ExcTypes = ()) -> Iterator["SingleLockHandle"]:
        """Context manager that releases the lease when the block exits.

        - Block ends normally: :meth:`release`; a lost lease raises
          :class:`~pylocks.errors.LeaseLost` (``LockNotHeld`` / ``LockNotOwned``).
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
                logger.error(
                    "releasing lease %s on %s after %s failed: %s",
                    self.id, self.key, type(exc).__name__, release_err,
                )
                if hasattr(exc, "add_note"):
                    exc.add_note(f"pylocks: releasing lease {self.id} on {self.key} failed: {release_err}")
            raise
        else:
            self.release()


class LeaseWatch:
    """A background watch of one lease (made by :meth:`SingleLockHandle.watching`).

    :ivar lost: a :class:`threading.Event`, set once the lease has ended.
    :ivar reason: why it ended (one of :data:`LEASE_ENDS`), or ``None`` while it holds.
    :ivar error: an error the watcher thread met (the connection failed), or ``None``; the
        event is set then too, since the lease can no longer be vouched for.
    """

    def __init__(self, handle: SingleLockHandle, on_lost: Optional[Callable[[str], None]],
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
        # redis-py clients are thread safe: the blocked WATCH holds a pooled connection of its
        # own, and the task's commands take others.
        watcher = SingleLockHandle(self.handle.redis, self.handle.key, self.handle.id, self.handle.token,
                                   self.handle.ttl_ms, self.handle.default_ttl_ms)
        try:
            while not self._stop.is_set():
                reason = watcher.watch(timeout=self._poll_ms / 1000.0)
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
            except Exception:  # noqa: BLE001 - a callback's failure must not kill silently
                logger.exception("on_lost callback for lease %s failed", self.handle.id)

    def check(self) -> None:
        """Raise if the lease has ended: :class:`~pylocks.errors.LockClaimed`,
        :class:`~pylocks.errors.LockNotOwned` or :class:`~pylocks.errors.LockNotHeld` by the
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


class RedisLockFactory:
    """Makes locks on keys ``[root_prefix:]prefix:part1:...:partN`` with ``N == arity``.

    :param redis: the redis-py client of the lock store (a ``redis.Redis`` with the pylock
        module loaded). It is safe to create it at import time in a Celery worker: redis-py
        resets its connection pool in a forked child.
    :param prefix: names the kind of lock, e.g. ``"person"``.
    :param ttl: lease duration in seconds (number or timedelta), e.g. ``60``.
    :param arity: how many parts identify one lock, e.g. ``1`` for a person id.
    :param root_prefix: first key component shared by all your locks, or ``None`` to leave it out.

    Keys are built exactly like the Rust client's (``testdata/key-vectors.json``).
    """

    def __init__(
        self,
        redis: "redis.Redis",
        prefix: str,
        ttl: Seconds,
        arity: int,
        root_prefix: Optional[str] = None,
    ) -> None:
        if not isinstance(arity, int) or isinstance(arity, bool) or arity < 0:
            raise ValueError(f"arity must be a non-negative int, got {arity!r}")
        if not isinstance(prefix, str):
            raise TypeError("prefix must be a str")
        if root_prefix is not None and not isinstance(root_prefix, str):
            raise TypeError("root_prefix must be a str or None")
        self.redis = redis
        self.prefix = prefix
        self.ttl_ms = _to_ms(ttl, "ttl")
        self.arity = arity
        self.root_prefix = root_prefix

    @property
    def ttl(self) -> float:
        """The default lease duration, in seconds."""
        return self.ttl_ms / 1000.0

    def __repr__(self) -> str:
        return (f"RedisLockFactory(prefix={self.prefix!r}, ttl={self.ttl}, arity={self.arity}, "
                f"root_prefix={self.root_prefix!r})")

    def key(self, *parts: Any) -> str:
        """The Redis key of the lock on ``parts``; raises ``TypeError`` unless there are ``arity``."""
        if len(parts) != self.arity:
            raise TypeError(
                f"the {self.prefix!r} lock takes {self.arity} part(s), got {len(parts)}: {parts!r}"
            )
        return lock_key(self.root_prefix, self.prefix, parts)

    def acquire(
        self,
        *parts: Any,
        ttl: Optional[Seconds] = None,
        lease_id: Optional[str] = None,
        wait: Optional[Seconds] = None,
    ) -> SingleLockHandle:
        """Take the lock on ``parts`` and return the new lease's handle (``PYLOCK.ACQUIRE``).

        :param ttl: lease duration in seconds; defaults to the factory's ttl.
        :param lease_id: the lease id to use (1 to 128 bytes). By default a random UUID4 is made
            here, so a call that redis-py retries after a lost reply is granted to the same
            lease instead of finding the lock held by a lease nobody knows.
        :param wait: if the lock is held, wait up to this many seconds for it, first come first
            served (``BLOCK``); ``math.inf`` waits forever. The client's ``socket_timeout``, if
            set, must be longer.
        :raises LockAlreadyHeld: another lease holds the lock (after ``wait``, if given).
        :raises TypeError: wrong number of parts (checked before any network call).
        """
        key = self.key(*parts)
        ttl_ms = self.ttl_ms if ttl is None else _to_ms(ttl, "ttl")
        lease = str(uuid.uuid4()) if lease_id is None else lease_id
        args: List[Any] = ["PYLOCK.ACQUIRE", key, ttl_ms, "LEASE", lease]
        if wait is not None:
            block_ms = 0 if wait == math.inf else _to_ms(wait, "wait")
            args += ["BLOCK", block_ms]
        reply = self.redis.execute_command(*args)
        if reply is None:
            raise LockAlreadyHeld(f"lock {key} is held by another lease", key, lease)
        return SingleLockHandle(self.redis, key, _text(reply[0]), int(reply[1]), int(reply[2]), self.ttl_ms)

    def get_handle(
        self, *args: Any, lease_id: Optional[str] = None, extend: Optional[Seconds] = None
    ) -> SingleLockHandle:
        """Return the handle of an existing lease, after confirming it with the server.

        Call it as ``get_handle(*parts, lease_id)`` (the original API) or
        ``get_handle(*parts, lease_id=lease_id)``.

        :param extend: also reset the lease's time left to this many seconds (``EXTEND``).
        :raises LockNotHeld: nobody holds the lock (the lease expired or was released).
        :raises LockNotOwned: another lease holds the lock.
        :raises TypeError: wrong number of parts, or no lease id (before any network call).
        """
        if lease_id is None:
            if not args:
                raise TypeError("get_handle(*parts, lease_id): the lease id is missing")
            parts, lease = args[:-1], args[-1]
        else:
            parts, lease = args, lease_id
        key = self.key(*parts)
        lease = _text(lease)
        if not isinstance(lease, str):
            raise TypeError(f"lease_id must be a str, got {type(lease).__name__}")
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
        :raises LockNotHeld: nobody holds the lock (the lease expired or was released).
        :raises LockNotOwned: another lease holds the lock.
        """
        if lease_id is None:
            if not args:
                raise TypeError("claim(*parts, lease_id): the lease id is missing")
            parts, lease = args[:-1], args[-1]
        else:
            parts, lease = args, lease_id
        key = self.key(*parts)
        lease = _text(lease)
        return SingleLockHandle(self.redis, key, lease, 0, 0, self.ttl_ms).claim(new_id, extend)

    def info(self, *parts: Any) -> Optional[LockInfo]:
        """Who holds the lock on ``parts`` (``PYLOCK.INFO``), or ``None`` if nobody does."""
        key = self.key(*parts)
        reply = self.redis.execute_command("PYLOCK.INFO", key)
        if reply is None:
            return None
        if isinstance(reply, dict):  # defensive: a RESP3 map, should a client build one
            fields = {_text(k): v for k, v in reply.items()}
        else:
            fields = {_text(reply[i]): reply[i + 1] for i in range(0, len(reply), 2)}
        return LockInfo(
            lease_id=_text(fields["lease"]),
            token=int(fields["token"]),
            ttl_ms=int(fields["ttl"]),
            waiters=int(fields["waiters"]),
        )
