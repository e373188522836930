"""What the blocking and the asyncio client share besides the wire format: argument checks,
key naming, the factory's settings and connection lookup, and the keeper's schedule. No I/O.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import sys
import uuid
from datetime import timedelta
from typing import Any, Callable, Dict, Generic, Hashable, Iterable, List, Mapping, Optional, Sequence, Tuple, TypeVar, Union

from . import _wire
from .errors import ArityError, LeaseLost, LockAlreadyHeld, NotReplicated
from .keys import DEFAULT_ROOT_PREFIX, lock_key

#: A duration in seconds: a number or a :class:`datetime.timedelta`.
Seconds = Union[int, float, timedelta]

#: The environment variable that names the default lock store.
URL_ENV = "PYLOCKS_REDIS_URL"
#: redis-py's own default server, used when ``PYLOCKS_REDIS_URL`` is not set.
DEFAULT_URL = "redis://127.0.0.1:6379/0"

C = TypeVar("C")

logger = logging.getLogger("pylocks")


def to_ms(value: Seconds, what: str) -> int:
    """A duration in seconds as whole milliseconds (rounded up); refuses values that are not > 0."""
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


def block_ms(wait: Optional[Seconds]) -> Optional[int]:
    """``wait=`` as the BLOCK argument: ``None`` (no BLOCK), ``math.inf`` is 0 (forever)."""
    if wait is None:
        return None
    if isinstance(wait, float) and wait == math.inf:
        return 0
    return to_ms(wait, "wait")


def durability(value: Optional[Tuple[int, Seconds]]) -> Optional[Tuple[int, int]]:
    """``durability=(replicas, timeout)`` as ``(replicas, timeout_ms)`` for ``WAIT``."""
    if value is None:
        return None
    if not isinstance(value, tuple) or len(value) != 2:
        raise TypeError(f"durability must be a (replicas, timeout_seconds) tuple, got {value!r}")
    replicas, timeout = value
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 1:
        raise ValueError(f"durability replicas must be an int >= 1, got {replicas!r}")
    return replicas, to_ms(timeout, "durability timeout")


def lease_id(value: Optional[str]) -> str:
    """The lease id to send: ``value``, or a new UUID4 when it is ``None``."""
    if value is None:
        return str(uuid.uuid4())
    value = _wire.text(value)
    if not isinstance(value, str):
        raise TypeError(f"lease_id must be a str, got {type(value).__name__}")
    return value


def default_url() -> str:
    return os.environ.get(URL_ENV) or DEFAULT_URL


def lease_or_held(key: str, lease: str, granted: Optional[_wire.Lease]) -> _wire.Lease:
    if granted is None:
        raise LockAlreadyHeld(f"lock {key} is held by another lease", key, lease)
    return granted


def not_replicated(key: str, lease: str, wanted: int, acknowledged: Optional[int],
                   cause: Optional[BaseException], release_error: Optional[BaseException]) -> NotReplicated:
    got = f"{acknowledged} acknowledged" if acknowledged is not None else f"WAIT failed: {cause}"
    then = (f"; releasing it failed too ({release_error}), so it ends at its TTL"
            if release_error is not None else "; the lease was released")
    return NotReplicated(f"grant of lock {key} to lease {lease} not replicated: {wanted} replica(s) "
                         f"wanted, {got}{then}", key, lease, acknowledged, wanted)


def parts_of(item: Any, arity: int) -> Tuple[Any, ...]:
    """One element of ``macquire``'s list, or a key of ``mrelease_expected``'s dict, as parts.

    A tuple or list is the parts; for arity 1 a bare value is the one part (``['x', 'y']``
    and ``[('x',), ('y',)]`` both work, as in the original library).
    """
    if isinstance(item, (tuple, list)):
        return tuple(item)
    if arity == 1:
        return (item,)
    raise ArityError(f"with arity {arity}, each lock is a tuple of {arity} parts, got {item!r}")


def result_key(item: Any) -> Hashable:
    """How ``macquire`` names a lock in its result: as given, with a list made a tuple."""
    return tuple(item) if isinstance(item, list) else item


class FactoryCore(Generic[C]):
    """Settings and key naming of a factory; ``C`` is the client type of the flavour."""

    def __init__(
        self,
        redis: Optional[C] = None,
        prefix: Optional[str] = None,
        ttl: Optional[Seconds] = None,
        arity: Optional[int] = None,
        root_prefix: Optional[str] = DEFAULT_ROOT_PREFIX,
        *,
        durability: Optional[Tuple[int, Seconds]] = None,
        limit: Optional[int] = None,
    ) -> None:
        if isinstance(redis, str):
            raise TypeError(
                "the first positional argument of RedisLockFactory is the Redis client; "
                f"pass the prefix by keyword: RedisLockFactory(prefix={redis!r}, ttl=..., arity=...)")
        if prefix is None or ttl is None or arity is None:
            missing = [n for n, v in (("prefix", prefix), ("ttl", ttl), ("arity", arity)) if v is None]
            raise TypeError(f"RedisLockFactory needs {', '.join(missing)}")
        if not isinstance(arity, int) or isinstance(arity, bool) or arity < 0:
            raise ValueError(f"arity must be a non-negative int, got {arity!r}")
        if not isinstance(prefix, str):
            raise TypeError("prefix must be a str")
        if root_prefix is not None and not isinstance(root_prefix, str):
            raise TypeError("root_prefix must be a str or None")
        self._redis = redis
        self.prefix = prefix
        self.ttl_ms = to_ms(ttl, "ttl")
        self.arity = arity
        self.root_prefix = root_prefix
        self.durability = _durability_of(durability)
        self.limit = semaphore_limit(limit)

    @property
    def ttl(self) -> float:
        """The default lease duration, in seconds."""
        return self.ttl_ms / 1000.0

    def __repr__(self) -> str:
        limit = "" if self.limit is None else f", limit={self.limit}"
        return (f"{type(self).__name__}(prefix={self.prefix!r}, ttl={self.ttl}, arity={self.arity}, "
                f"root_prefix={self.root_prefix!r}{limit})")

    def key(self, *parts: Any) -> str:
        """The Redis key of the lock on ``parts``.

        :raises ArityError: unless there are exactly ``arity`` parts.
        """
        if len(parts) != self.arity:
            raise ArityError(
                f"the {self.prefix!r} lock takes {self.arity} part(s), got {len(parts)}: {parts!r}")
        return lock_key(self.root_prefix, self.prefix, parts)

    def make_key(self, parts: Any) -> str:
        """The original library's spelling: the key of one lock given as a parts list."""
        return self.key(*parts_of(parts, self.arity))

    def get_redis_connection(self) -> Optional[C]:
        """Override in a subclass to give the factory its connection (the original library's
        hook). Used when no client was passed; the default raises ``NotImplementedError``,
        and then the factory uses its default client (``PYLOCKS_REDIS_URL``)."""
        raise NotImplementedError

    def _explicit_or_override(self) -> Optional[C]:
        if self._redis is not None:
            return self._redis
        try:
            return self.get_redis_connection()
        except NotImplementedError:
            return None

    def _keys_for(self, items: Iterable[Any]) -> List[Tuple[Hashable, str]]:
        named: List[Tuple[Hashable, str]] = []
        seen: Dict[str, Hashable] = {}
        for item in items:
            key = self.key(*parts_of(item, self.arity))
            name = result_key(item)
            if key in seen:
                raise ValueError(f"lock {name!r} is named twice (as {seen[key]!r})")
            seen[key] = name
            named.append((name, key))
        return named

    def _expected_for(self, mapping: Mapping[Any, str]) -> List[Tuple[Hashable, str, str]]:
        if not isinstance(mapping, Mapping):
            raise TypeError(f"mrelease_expected takes a dict of parts to lease ids, got {type(mapping).__name__}")
        return [(name, key, lease_id(mapping[name])) for name, key in self._keys_for(mapping)]


#: The largest ``limit`` the module admits.
MAX_LIMIT = 100_000


def semaphore_limit(limit: Optional[int]) -> Optional[int]:
    """``limit`` checked: ``None`` (a lock), or an int from 1 to :data:`MAX_LIMIT`."""
    if limit is None:
        return None
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be an int from 1 to {MAX_LIMIT}, got {limit!r}")
    return limit


def _durability_of(value: Optional[Tuple[int, Seconds]]) -> Optional[Tuple[int, int]]:
    return durability(value)


def keeper_interval_ms(ttl_ms: int, interval: Optional[Seconds]) -> int:
    """How often a keeper renews: a third of the lease TTL unless told."""
    if interval is not None:
        return to_ms(interval, "interval")
    return max(1, ttl_ms // 3)


def report_failed_release(handle: Any, exc: BaseException, release_err: BaseException) -> None:
    logger.error("releasing lease %s on %s after %s failed: %s",
                 handle.id, handle.key, type(exc).__name__, release_err)
    if hasattr(exc, "add_note"):
        exc.add_note(f"pylocks: releasing lease {handle.id} on {handle.key} failed: {release_err}")


def split_lease(args: Tuple[Any, ...], lease_id: Optional[str]) -> Tuple[Tuple[Any, ...], Any]:
    if lease_id is not None:
        return args, lease_id
    if not args:
        raise TypeError("get_handle(*parts, lease_id): the lease id is missing")
    return args[:-1], args[-1]


def sort_releases(named: Sequence[Tuple[Hashable, str, str]],
                   results: Sequence[Any]) -> Tuple[List[Hashable], List[Hashable]]:
    released: List[Hashable] = []
    missing: List[Hashable] = []
    failure: Optional[BaseException] = None
    for (name, _, _), result in zip(named, results):
        if isinstance(result, LeaseLost):
            missing.append(name)
        elif isinstance(result, BaseException):
            failure = failure or result
        else:
            released.append(name)
    if failure is not None:
        raise failure
    return released, missing


# --- then= / before=: the caller's commands in the lock command's pipeline ------------------

#: ``then=`` / ``before=``: a plain function that queues commands on the pipeline it is given
#: (``pipe.get(key)``, ``pipe.set(key, value)``) and sends nothing itself.
Queue = Callable[[Any], Any]

#: The cluster clients, as (module, class): a pipeline of one lock command and the caller's
#: commands is one connection's, and a cluster client would send the keys to other nodes.
_CLUSTER_CLIENTS = (("redis.cluster", "RedisCluster"), ("redis.asyncio.cluster", "RedisCluster"),
                    ("valkey.cluster", "ValkeyCluster"), ("valkey.asyncio.cluster", "ValkeyCluster"))


def refuse_cluster(client: Any, what: str) -> None:
    """Raise ``ValueError`` if ``client`` is a cluster client (``then=``/``before=`` need the
    lock command and the caller's commands on one connection to one server, in order).

    Only modules already imported are looked at: a client cannot be an instance of a class
    that was never loaded.
    """
    for module_name, class_name in _CLUSTER_CLIENTS:
        module = sys.modules.get(module_name)
        cls = getattr(module, class_name, None) if module is not None else None
        if isinstance(cls, type) and isinstance(client, cls):
            raise ValueError(
                f"{what} is not supported with a cluster client ({type(client).__name__}): its commands "
                "and the lock's must go to one server on one connection, and a cluster may keep "
                "their keys on other nodes")


def queued_pipeline(client: Any, first: Sequence["_wire.Command[Any]"], queue: Queue,
                    last: Sequence["_wire.Command[Any]"], what: str) -> Tuple[Any, int]:
    """A non-transactional pipeline of ``first``, what ``queue(pipe)`` adds, then ``last``,
    and how many commands ``queue`` added. Nothing is sent here."""
    refuse_cluster(client, what)
    pipe = client.pipeline(transaction=False)
    for cmd in first:
        pipe.execute_command(*cmd.args)
    before = len(pipe)
    returned = queue(pipe)
    # (an asyncio pipeline is awaitable itself, and its commands return it)
    if returned is not pipe and inspect.isawaitable(returned):
        if inspect.iscoroutine(returned):
            returned.close()
        raise TypeError(f"{what} takes a plain function that queues commands on the pipeline, "
                        "not a coroutine function: nothing was sent")
    added = len(pipe) - before
    if added < 0:
        raise ValueError(f"{what}'s function must only queue commands, not execute the pipeline")
    for cmd in last:
        pipe.execute_command(*cmd.args)
    return pipe, added


def split_replies(first: Sequence["_wire.Command[Any]"], added: int,
                  last: Sequence["_wire.Command[Any]"], replies: Sequence[Any]
                  ) -> Tuple[List[Any], List[Any], List[Any]]:
    """A queued pipeline's replies as (``first``'s settled, the caller's as they came,
    ``last``'s settled); errors are values, not raised."""
    n = len(first)
    ours = [cmd.settle(reply) for cmd, reply in zip(first, replies[:n])]
    theirs = list(replies[n:n + added])
    tail = [cmd.settle(reply) for cmd, reply in zip(last, replies[n + added:])]
    return ours, theirs, tail


def first_error(results: Sequence[Any]) -> Optional[BaseException]:
    for result in results:
        if isinstance(result, BaseException):
            return result
    return None


def then_failed(handle: Any, err: BaseException, release_err: Optional[BaseException]) -> BaseException:
    """The error of a ``then=`` command after a grant, noted with what became of the lease."""
    if hasattr(err, "add_note"):
        if release_err is None:
            err.add_note(f"pylocks: a then= command failed after lease {handle.id} on {handle.key} "
                         "was granted; the lease was released")
        else:
            err.add_note(f"pylocks: a then= command failed after lease {handle.id} on {handle.key} "
                         f"was granted, and releasing it failed too ({release_err}): it ends at its TTL")
    if release_err is not None:
        logger.error("releasing lease %s on %s after a failed then= command failed: %s",
                     handle.id, handle.key, release_err)
    return err


def release_outcome(handle: Any, released: Any, written: Sequence[Any], ignore_failure: bool) -> bool:
    """What ``release(before=...)`` returns or raises, from the RELEASE's settled reply and the
    replies of the commands queued before it (already set as ``handle.before_results``).

    The RELEASE decides first, exactly as a plain release: a lost lease raises its
    :class:`~pylocks.errors.LeaseLost` (``False`` with ``ignore_failure=True``), any other
    error is raised. Then, if one of the queued commands failed, its error is raised.
    """
    failed = first_error(written)
    if isinstance(released, BaseException):
        if failed is not None and hasattr(released, "add_note"):
            released.add_note(f"pylocks: a before= command failed as well: {failed}")
        if isinstance(released, LeaseLost) and ignore_failure:
            if failed is not None:
                if hasattr(failed, "add_note"):
                    failed.add_note(f"pylocks: a before= command failed, and the RELEASE found the "
                                    f"lease lost: {released}")
                raise failed
            return False
        raise released
    handle.ttl_ms = 0
    if failed is not None:
        if hasattr(failed, "add_note"):
            failed.add_note(f"pylocks: a before= command failed; lease {handle.id} on {handle.key} "
                            "was released all the same")
        raise failed
    return True
