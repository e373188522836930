"""pylocks: locks and leases for Celery-style task workers, enforced by Redis itself.

The lock logic runs in the ``pylock`` Redis module; this package is a thin client over
redis-py. See :mod:`pylocks.blocking` for the API and :mod:`pylocks.errors` for the errors.
"""

from .blocking import LeaseWatch, LockInfo, RedisLockFactory, SingleLockHandle
from .errors import (LeaseLost, LockAlreadyHeld, LockClaimed, LockError, LockNotHeld, LockNotOwned,
                     lease_error)
from .keys import lock_key

__all__ = [
    "RedisLockFactory",
    "SingleLockHandle",
    "LockInfo",
    "LeaseWatch",
    "LockError",
    "LockAlreadyHeld",
    "LeaseLost",
    "LockNotHeld",
    "LockNotOwned",
    "LockClaimed",
    "lease_error",
    "lock_key",
]
__version__ = "0.1.0"
