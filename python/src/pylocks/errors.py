"""Errors raised by :mod:`pylocks` (the same classes for the blocking and the asyncio client).

The hierarchy::

    BaseLocksError
    ├── ArityError (also ValueError, TypeError)   wrong number of lock parts; no network call made
    └── LockError (also RuntimeError)
        ├── LockAlreadyHeld        acquire: another lease holds the lock (the server replied nil)
        ├── NotReplicated          acquire with durability: too few replicas acknowledged the
        │                          grant in time; the lease was released before raising
        ├── LimitMismatch          (also ValueError) acquire with a LIMIT other than the key's:
        │                          server error LIMITMISMATCH; nothing changed
        └── LeaseLost              our lease no longer holds the lock
            ├── LockNotHeld        nobody holds it: server error NOTHELD
            │   └── LockExpired    (also a LockNotOwned) what NOTHELD raises
            ├── LockNotOwned       our lease does not hold it; raised as such for NOTOWNED
            │   │                  (another lease holds it, and is left untouched)
            │   └── LockClaimed    CLAIMED: another run claimed our lease under its own id
            └── LeaseUnconfirmed   a keeper could not reach the server before the lease was due
                                   to end: it may be lost

The names ``BaseLocksError``, ``ArityError``, ``LockError``, ``LockAlreadyHeld``,
``LockNotOwned`` and ``LockExpired`` are the original library's, with its bases. As there,
``except LockNotOwned`` catches every lease of ours that lost its lock, expired or taken: a
``NOTHELD`` reply raises :class:`LockExpired`, which is both a ``LockNotHeld`` and a
``LockNotOwned``. ``LockNotHeld`` and ``LockNotOwned`` errors from the server carry its error
text unchanged as their message, e.g. ``"NOTHELD the lock is not held by any lease"``.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

__all__ = [
    "BaseLocksError",
    "ArityError",
    "LockError",
    "LockAlreadyHeld",
    "NotReplicated",
    "LimitMismatch",
    "LeaseLost",
    "LockNotHeld",
    "LockNotOwned",
    "LockClaimed",
    "LockExpired",
    "LeaseUnconfirmed",
    "lease_error",
]


class BaseLocksError(Exception):
    """Root of every error this package raises itself."""


class ArityError(BaseLocksError, ValueError, TypeError):
    """The number of lock parts is not the factory's arity. Raised before any network call.

    A ``ValueError`` as in the original library, and a ``TypeError`` as in this package's
    earlier releases, so either ``except`` keeps working.
    """


class LockError(BaseLocksError, RuntimeError):
    """A lock or lease could not be had or kept.

    ``args`` is ``(message,)`` alone, so result backends that rebuild exceptions from their
    message (Celery's JSON serializer does) get an equal error back.

    :ivar key: the Redis key of the lock.
    :ivar lease_id: the lease the call was about, when there was one.
    """

    def __init__(self, message: str, key: Optional[str] = None, lease_id: Optional[str] = None) -> None:
        super().__init__(message)
        self.key = key
        self.lease_id = lease_id

    def __reduce__(self) -> Tuple[Any, ...]:  # keep key/lease_id through pickling (Celery result backends)
        return (type(self), (str(self), self.key, self.lease_id))


class LockAlreadyHeld(LockError):
    """``acquire`` found the lock held by another lease; nothing changed on the server."""


class LimitMismatch(LockError, ValueError):
    """``acquire`` asked for a ``limit`` other than the one the key was created with (server
    error ``LIMITMISMATCH``, whose text names the key's limit); nothing changed. Every client
    of one key must use the same limit while any lease holds it."""


class NotReplicated(LockError):
    """Fewer replicas than asked acknowledged a grant (``WAIT``) in time.

    The lease was released before this was raised (unless the release failed too: then the
    failure is in the message and the lease ends at its TTL).

    :ivar acknowledged: how many replicas did acknowledge, or ``None`` if ``WAIT`` failed.
    :ivar wanted: how many were asked for.
    """

    def __init__(self, message: str, key: Optional[str] = None, lease_id: Optional[str] = None,
                 acknowledged: Optional[int] = None, wanted: int = 0) -> None:
        super().__init__(message, key, lease_id)
        self.acknowledged = acknowledged
        self.wanted = wanted

    def __reduce__(self) -> Tuple[Any, ...]:
        return (type(self), (str(self), self.key, self.lease_id, self.acknowledged, self.wanted))


class LeaseLost(LockError):
    """The lease we name does not hold the lock (any more)."""


class LockNotHeld(LeaseLost):
    """Nobody holds the lock: the lease expired or was released (server error ``NOTHELD``)."""


class LockNotOwned(LeaseLost):
    """Our lease does not hold the lock.

    Raised as exactly this class for the server's ``NOTOWNED`` (another lease holds the lock,
    which is left untouched); ``NOTHELD`` raises the subclass :class:`LockExpired`.
    """


class LockExpired(LockNotHeld, LockNotOwned):
    """Our lease ended and nobody holds the lock now (server error ``NOTHELD``).

    The lease expired, or it was released (by a holder of the same lease id, or by a
    generic command such as ``DEL``). A ``LockNotHeld`` and a ``LockNotOwned``.
    """


class LeaseUnconfirmed(LeaseLost):
    """A keeper's renewals failed (transport errors) until the lease was due to end.

    The server could not be asked in time, so the lease may have expired: treat it as lost.
    ``__cause__`` is the last renewal's error.
    """


class LockClaimed(LockNotOwned):
    """The lock is held by a lease claimed from ours under another id (server error ``CLAIMED``).

    With "lock before enqueuing", another run of the same task message (a redelivery, a copy
    the broker restored, a retry that resends the enqueuer's lease id) claimed the lease first
    (``CONFIRM … CLAIM``): this run must not touch the shared state. A kind of
    :class:`LockNotOwned`, so code that catches that keeps working.
    """


def lease_error(message: str, key: Optional[str] = None,
                lease_id: Optional[str] = None) -> Optional[LeaseLost]:
    """The error for a server error text starting with ``NOTHELD`` or ``NOTOWNED``, else ``None``.

    For code that calls the module's commands itself (a Lua script, a pipeline) and wants the
    same errors as this package::

        try:
            client.eval(script, 1, key, lease_id)
        except redis.ResponseError as err:
            raise (lease_error(str(err), key, lease_id) or err) from None
    """
    code = message.split(" ", 1)[0]
    if code == "NOTHELD":
        return LockExpired(message, key, lease_id)
    if code == "NOTOWNED":
        return LockNotOwned(message, key, lease_id)
    if code == "CLAIMED":
        return LockClaimed(message, key, lease_id)
    return None
