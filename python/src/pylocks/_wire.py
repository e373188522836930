"""The wire format, once, for the blocking and the asyncio client: no I/O here.

Each module command is a :class:`Command`: the words to send, how to read the reply, and how a
server error becomes one of :mod:`pylocks.errors`. The clients only send ``Command.args``
(``execute_command`` or a pipeline) and hand the reply, or the error raised, back here, so
the two clients cannot read the server differently. A new command (``PYLOCK.WATCH``, the
``CLAIM`` option) is one more constructor function below, used by both clients.

Replies are read the same way from RESP2 and RESP3 clients, with or without
``decode_responses``, and from redis-py or valkey-py (their ``ResponseError`` classes differ;
both are recognised).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Generic, List, Optional, Tuple, Type, TypeVar, Union

from .errors import LimitMismatch, lease_error

T = TypeVar("T")


def _response_error_types() -> Tuple[Type[BaseException], ...]:
    found: List[Type[BaseException]] = []
    try:
        from redis.exceptions import ResponseError as RedisResponseError
        found.append(RedisResponseError)
    except ImportError:  # pragma: no cover - redis-py is a dependency
        pass
    try:
        from valkey.exceptions import ResponseError as ValkeyResponseError  # type: ignore[import-not-found,unused-ignore]
        found.append(ValkeyResponseError)
    except ImportError:
        pass
    return tuple(found)


#: The server-error classes of the client libraries that are installed.
RESPONSE_ERRORS: Tuple[Type[BaseException], ...] = _response_error_types()


def text(value: Union[bytes, str]) -> str:
    """A reply string as ``str`` (``decode_responses`` clients already give one)."""
    return value.decode("utf-8") if isinstance(value, bytes) else value


@dataclass(frozen=True)
class Lease:
    """A lease reply: ``[lease-id, fencing-token, ttl-ms]``."""

    lease_id: str
    token: int
    ttl_ms: int


@dataclass(frozen=True)
class LockInfo:
    """What ``PYLOCK.INFO`` says about a held lock."""

    lease_id: str
    token: int
    ttl_ms: int
    waiters: int


@dataclass(frozen=True)
class SemaphoreInfo:
    """What ``PYLOCK.INFO`` says about a key of ``LIMIT`` n > 1 with at least one live lease:
    every holder's lease, earliest deadline first."""

    limit: int
    holders: int
    waiters: int
    leases: Tuple[Lease, ...]


@dataclass(frozen=True)
class Command(Generic[T]):
    """One command: ``args`` to send, ``parse`` for its reply, and the lock it is about."""

    args: Tuple[Any, ...]
    parse: Callable[[Any], T]
    key: Optional[str] = None
    lease_id: Optional[str] = None

    def error(self, err: BaseException) -> BaseException:
        """The error to raise for ``err``, raised by the client while sending this command.

        ``NOTHELD``/``NOTOWNED`` become :class:`~pylocks.errors.LockExpired` /
        :class:`~pylocks.errors.LockNotOwned` with this command's key and lease id; anything
        else (``WRONGTYPE``, a connection error) is returned unchanged.
        """
        if isinstance(err, RESPONSE_ERRORS):
            lost = lease_error(str(err), self.key, self.lease_id)
            if lost is not None:
                return lost
            if str(err).startswith("LIMITMISMATCH"):
                return LimitMismatch(str(err), self.key)
        return err

    def settle(self, reply: Any) -> Union[T, BaseException]:
        """The parsed reply, or the mapped error, for a pipeline's reply (which may be an error)."""
        if isinstance(reply, BaseException):
            return self.error(reply)
        return self.parse(reply)


def parse_lease(reply: Any) -> Lease:
    if not isinstance(reply, (list, tuple)) or len(reply) != 3:
        raise ValueError(f"not a lease reply: {reply!r}")
    return Lease(text(reply[0]), int(reply[1]), int(reply[2]))


def parse_optional_lease(reply: Any) -> Optional[Lease]:
    return None if reply is None else parse_lease(reply)


def parse_info(reply: Any) -> Optional[Union[LockInfo, SemaphoreInfo]]:
    if reply is None:
        return None
    if isinstance(reply, dict):  # a RESP3 map, should a client build one
        fields = {text(k): v for k, v in reply.items()}
    else:
        fields = {text(reply[i]): reply[i + 1] for i in range(0, len(reply), 2)}
    if "limit" in fields:
        return SemaphoreInfo(
            limit=int(fields["limit"]),
            holders=int(fields["holders"]),
            waiters=int(fields["waiters"]),
            leases=tuple(parse_lease(lease) for lease in fields["leases"]),
        )
    return LockInfo(
        lease_id=text(fields["lease"]),
        token=int(fields["token"]),
        ttl_ms=int(fields["ttl"]),
        waiters=int(fields["waiters"]),
    )


def _released(reply: Any) -> bool:
    return int(reply) == 1


def acquire(key: str, ttl_ms: int, lease_id: str, block_ms: Optional[int] = None,
            limit: Optional[int] = None) -> Command[Optional[Lease]]:
    """``PYLOCK.ACQUIRE key ttl-ms LEASE id [BLOCK ms] [LIMIT n]``: a lease, or ``None``
    (held by n leases)."""
    args: Tuple[Any, ...] = ("PYLOCK.ACQUIRE", key, ttl_ms, "LEASE", lease_id)
    if block_ms is not None:
        args += ("BLOCK", block_ms)
    if limit is not None:
        args += ("LIMIT", limit)
    return Command(args, parse_optional_lease, key, lease_id)


def confirm(key: str, lease_id: str, extend_ms: Optional[int] = None) -> Command[Lease]:
    """``PYLOCK.CONFIRM key id [EXTEND ms]``: the lease, or ``NOTHELD``/``NOTOWNED``."""
    args: Tuple[Any, ...] = ("PYLOCK.CONFIRM", key, lease_id)
    if extend_ms is not None:
        args += ("EXTEND", extend_ms)
    return Command(args, parse_lease, key, lease_id)


def claim(key: str, lease_id: str, new_id: str, extend_ms: Optional[int] = None) -> Command[Lease]:
    """``PYLOCK.CONFIRM key id [EXTEND ms] CLAIM new-id``: the new lease, or
    ``CLAIMED``/``NOTHELD``/``NOTOWNED``."""
    args: Tuple[Any, ...] = ("PYLOCK.CONFIRM", key, lease_id)
    if extend_ms is not None:
        args += ("EXTEND", extend_ms)
    args += ("CLAIM", new_id)
    return Command(args, parse_lease, key, lease_id)


#: What ``PYLOCK.WATCH`` answers: why the lease is not (or no longer) held. ``"demoted"`` also
#: stands for the server's own ``UNBLOCKED`` error on a role change.
LEASE_ENDS = ("notheld", "notowned", "claimed", "released", "expired", "deleted", "flushed",
              "moved", "demoted")


def _parse_watch(reply: Any) -> Optional[str]:
    return None if reply is None else text(reply)


def watch(key: str, lease_id: str, timeout_ms: Optional[int] = None) -> Command[Optional[str]]:
    """``PYLOCK.WATCH key id [TIMEOUT ms]``: the reason the lease ended, or ``None``."""
    args: Tuple[Any, ...] = ("PYLOCK.WATCH", key, lease_id)
    if timeout_ms is not None:
        args += ("TIMEOUT", timeout_ms)
    return Command(args, _parse_watch, key, lease_id)


def watch_error(err: BaseException) -> Optional[str]:
    """``"demoted"`` for the server's ``UNBLOCKED`` error (a role change ended the wait)."""
    if isinstance(err, RESPONSE_ERRORS) and str(err).startswith("UNBLOCKED"):
        return "demoted"
    return None


def release(key: str, lease_id: str) -> Command[bool]:
    """``PYLOCK.RELEASE key id``: ``True``, or ``NOTHELD``/``NOTOWNED``."""
    return Command(("PYLOCK.RELEASE", key, lease_id), _released, key, lease_id)


def info(key: str) -> Command[Optional[Union[LockInfo, SemaphoreInfo]]]:
    """``PYLOCK.INFO key``: who holds the lock (every holder of a semaphore), or ``None``."""
    return Command(("PYLOCK.INFO", key), parse_info, key)


def delete(key: str) -> Command[bool]:
    """``DEL key`` (``release_hard``): whether a key was removed."""
    return Command(("DEL", key), lambda reply: int(reply) > 0, key)


def wait(replicas: int, timeout_ms: int) -> Command[int]:
    """``WAIT replicas timeout-ms``: how many replicas acknowledged this connection's writes."""
    return Command(("WAIT", replicas, timeout_ms), int)
