"""Errors raised by :mod:`pylocks`.

The hierarchy::

    LockError
    ├── LockAlreadyHeld        acquire: another lease holds the lock (the server replied nil)
    └── LeaseLost              our lease no longer holds the lock
        ├── LockNotHeld        nobody holds it (our lease expired or was released): NOTHELD
        └── LockNotOwned       another lease holds it (ours expired, someone else took it): NOTOWNED
            └── LockClaimed    another run claimed our lease under its own id: CLAIMED

``LockNotHeld`` and ``LockNotOwned`` carry the server's error text unchanged as their message,
e.g. ``"NOTHELD the lock is not held by any lease"``. Catch ``LeaseLost`` to handle both.
"""

from __future__ import annotations

from typing import Any, Optional

__all__ = ["LockError", "LockAlreadyHeld", "LeaseLost", "LockNotHeld", "LockNotOwned", "LockClaimed",
           "lease_error"]


class LockError(Exception):
    """Base class of every pylocks error.

    ``args`` is ``(message,)`` alone, so result backends that rebuild exceptions from their
    message (Celery's JSON serializer does) get an equal error back.

    :ivar key: the Redis key of the lock.
    :ivar lease_id: the lease the call was about, when there was one.
    """

    def __init__(self, message: str, key: Optional[str] = None, lease_id: Optional[str] = None) -> None:
        super().__init__(message)
        self.key = key
        self.lease_id = lease_id

    def __reduce__(self) -> "tuple[Any, ...]":  # keep key/lease_id through pickling (Celery result backends)
        return (type(self), (str(self), self.key, self.lease_id))


class LockAlreadyHeld(LockError):
    """``acquire`` found the lock held by another lease; nothing changed on the server."""


class LeaseLost(LockError):
    """The lease we name does not hold the lock (any more)."""


class LockNotHeld(LeaseLost):
    """Nobody holds the lock: the lease expired or was released (server error ``NOTHELD``)."""


class LockNotOwned(LeaseLost):
    """Another lease holds the lock, which is left untouched (server error ``NOTOWNED``)."""


class LockClaimed(LockNotOwned):
    """The lock is held by a lease claimed from ours under another id (server error ``CLAIMED``).

    With "lock before enqueuing", another run of the same task message (a redelivery, a copy
    restored by the broker, a retry of the same message) claimed the lease first
    (``CONFIRM … CLAIM``): this run must not touch the shared state. It is a kind of
    :class:`LockNotOwned`, so code that catches that keeps working.
    """


def lease_error(message: str, key: Optional[str] = None,
                lease_id: Optional[str] = None) -> Optional[LeaseLost]:
    """The error for a server error text starting with ``NOTHELD``, ``NOTOWNED`` or ``CLAIMED``,
    else ``None``.

    For code that calls the module's commands itself (a Lua script, a pipeline) and wants the
    same errors as this package::

        try:
            client.eval(script, 1, key, lease_id)
        except redis.ResponseError as err:
            raise (lease_error(str(err), key, lease_id) or err) from None
    """
    code = message.split(" ", 1)[0]
    if code == "NOTHELD":
        return LockNotHeld(message, key, lease_id)
    if code == "NOTOWNED":
        return LockNotOwned(message, key, lease_id)
    if code == "CLAIMED":
        return LockClaimed(message, key, lease_id)
    return None
