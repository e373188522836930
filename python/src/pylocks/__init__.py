"""pylocks: locks and leases for Celery-style task workers, enforced by Redis itself.

The lock logic runs in the ``pylock`` Redis module; this package is a thin client over
redis-py or valkey-py. :mod:`pylocks.blocking` is the synchronous API, :mod:`pylocks.asyncio`
its asyncio twin (same names), :mod:`pylocks.errors` the errors both raise.
"""

from .blocking import Keeper, LeaseWatch, LockInfo, RedisLockFactory, SemaphoreInfo, SingleLockHandle
from .errors import (ArityError, BaseLocksError, LeaseLost, LeaseUnconfirmed, LockAlreadyHeld, LockClaimed,
                     LockError, LockExpired, LockNotHeld, LockNotOwned, LimitMismatch, NotReplicated,
                     lease_error)
from .keys import DEFAULT_ROOT_PREFIX, lock_key

__all__ = [
    "RedisLockFactory",
    "SingleLockHandle",
    "Keeper",
    "LeaseWatch",
    "LockInfo",
    "SemaphoreInfo",
    "BaseLocksError",
    "ArityError",
    "LockError",
    "LockAlreadyHeld",
    "NotReplicated",
    "LimitMismatch",
    "LeaseLost",
    "LockNotHeld",
    "LockNotOwned",
    "LockExpired",
    "LockClaimed",
    "LeaseUnconfirmed",
    "lease_error",
    "lock_key",
    "DEFAULT_ROOT_PREFIX",
]
__version__ = "0.2.0"
