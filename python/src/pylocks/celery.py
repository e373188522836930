"""Celery integration: one task base class, :class:`LockedTask`, for both ways of working.

Requires Celery 5.3 or later (custom message headers survive retries from 5.3 on).

Lock inside the task (the seed's first example): the worker takes the lock when the task
starts, from named task arguments, and releases it on every way out::

    from pylocks.blocking import RedisLockFactory
    from pylocks.celery import LockedTask

    person_lock = RedisLockFactory(prefix="person", ttl=60, arity=1)

    @app.task(base=LockedTask, bind=True, lock=person_lock, lock_args=("person_id",))
    def add_to_person(self, person_id, amount):
        ...                                  # runs holding the lock; self.lease.token fences

Lock before enqueuing (the seed's second example): ``apply_async``/``delay`` take the lock
first, and the lease travels in the message headers; the task claims it when it runs::

    @app.task(base=LockedTask, bind=True, lock=person_lock, lock_args=("person_id",),
              lock_mode="enqueue")
    def add_to_person(self, person_id, amount):
        ...                                  # self.lease: the claimed lease (id, token)

    add_to_person.delay(42, 5)               # LockAlreadyHeld here if the lock is held
    add_to_person.apply_async((42, 5), graceful=True)   # None instead: not enqueued

Options (task attributes: arguments of ``@app.task``, or of a subclass):

``lock``
    the :class:`pylocks.blocking.RedisLockFactory` (required).
``lock_args``
    names of the task's arguments that give the lock's parts, in order; by default the
    first ``lock.arity`` parameters of the task.
``lock_mode``
    ``"task"`` (default): lock inside the task. ``"enqueue"``: lock before enqueuing.
``lock_held``
    what to do when the lock is held. In the task: ``"raise"`` (default:
    :class:`~pylocks.errors.LockAlreadyHeld`, the task fails), ``"retry"`` (``self.retry``
    after ``lock_retry_countdown`` seconds, within the task's ``max_retries``), ``"wait"``
    (queue for it on the server, first come first served, up to ``lock_wait`` seconds) or
    ``"skip"`` (log it and return ``None`` without running). At the producer (enqueue mode):
    ``"raise"``, ``"skip"`` (``apply_async`` returns ``None``: the enqueue is de-duplicated)
    or ``"wait"`` (``"retry"`` acts as ``"raise"`` there). ``apply_async(..., graceful=True)``
    is ``"skip"`` for one call.
``lock_ttl``
    lease duration in seconds; the factory's ttl by default. A claim resets it to this.
``lock_wait``
    seconds to wait with ``lock_held="wait"``; ``lock_ttl`` by default.
``lock_retry_countdown``
    seconds before a retry with ``lock_held="retry"``; 5 by default.
``lock_on_retry``
    ``"keep"`` (default): across ``self.retry()`` (and ``autoretry_for``) the lease is
    kept, extended to cover the countdown plus ``lock_ttl``, and the retry's message carries
    it: the retried run claims it. ``"release"``: the lease is released before the retry is
    sent, and the retried run takes the lock anew inside the task.
``lock_keep_alive``
    ``False`` (default), ``True`` or a renewal interval in seconds: renew the lease while
    the task runs (a third of ``lock_ttl`` apart), and watch it (``PYLOCK.WATCH``), so
    that ``self.lease.lost`` is set the moment the lease ends, with ``self.lease.reason``.
``lock_limit``
    ``None`` (default): the lock's own kind (a lock, or the factory's ``limit``). An int n
    (1 to 100,000): the task's lock key is a semaphore of up to n leases at once (the
    factory's ``limit``, for this task's acquires): n runs of the task hold a lease at once
    in the task, each under every ``lock_held`` policy (``"wait"`` queues for the next free
    place); in enqueue mode each ``apply_async`` takes one of the n places and its message
    carries it for the run to claim. A factory made with another ``limit`` is a
    ``ValueError``; a key that exists with another n raises
    :class:`~pylocks.errors.LimitMismatch` (the run fails, or ``apply_async`` raises).
``lock_lease_arg``
    the name of a task argument that may carry a lease id, the seed's explicit style:
    a producer that acquired itself passes the id there and ``apply_async`` takes no lock;
    the task claims that lease as it would the header's.

While a task runs, ``self.lease`` is a :class:`TaskLease` (``id``, ``token``, ``key``,
``handle``, ``lost``, ``reason``, ``check()``), or ``None`` outside a run. ``apply_async``
in enqueue mode returns the result with ``result.lease``, the producer's
:class:`~pylocks.blocking.SingleLockHandle`.

How a run gets its lease, in this order: the message's lease header (``pylocks_lease``,
read in ``request.headers``, where eager mode puts it, and at the request's top level, where
a worker puts custom headers, celery issue 4875), then ``lock_lease_arg``, then (lock inside
the task, or a message sent without a lease) an acquire with ``lock_held``'s policy. A
header or argument lease is **claimed** (``PYLOCK.CONFIRM … CLAIM``): the run takes it over
under an id of its own, with a larger fencing token. A lock taken in the task is acquired
under the message's task id and claimed the same way. A second delivery of the same message
then gets ``CLAIMED``: it is logged, and ends with :class:`celery.exceptions.Ignore`, so it
is acknowledged, its body does not run and the first run's result is left alone. A header
or argument lease lost before the run (``NOTHELD``, ``NOTOWNED``) is logged and raised, as
in the seed, unless the result backend has the task as succeeded (a late copy of a message
whose run is over): then it is ignored too. The lease is released on every way out of the
run (in ``__call__``: ``after_return`` does not run for RETRY, IGNORED or REJECTED); a lease
found lost at the end is raised.

A revoked (or expired) task that a worker discards releases the lease its message carries
(the ``task_revoked`` signal), so the lock does not stay held until its TTL. A run already
going holds the lease under its claimed id, which that release leaves alone; a run
terminated with SIGTERM releases it as it unwinds.
"""

from __future__ import annotations

import copy
import inspect
import logging
import threading
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from . import _core
from .blocking import Keeper, LeaseWatch, RedisLockFactory, SingleLockHandle
from .errors import LeaseLost, LimitMismatch, LockAlreadyHeld, LockClaimed

if TYPE_CHECKING:
    # Celery ships no type information: these declare the part of its API this module uses.
    class _Request:
        id: Optional[str]
        headers: Optional[Dict[str, Any]]
        retries: int
        called_directly: bool
        is_eager: bool

    class Task:
        name: str
        request: _Request
        max_retries: Optional[int]
        default_retry_delay: float

        def run(self, *args: Any, **kwargs: Any) -> Any: ...

        def AsyncResult(self, task_id: str, **kwargs: Any) -> Any: ...

        def __call__(self, *args: Any, **kwargs: Any) -> Any: ...

        def apply_async(self, args: Any = None, kwargs: Any = None, task_id: Optional[str] = None,
                        producer: Any = None, link: Any = None, link_error: Any = None,
                        shadow: Optional[str] = None, **options: Any) -> Any: ...

        def retry(self, args: Any = None, kwargs: Any = None, exc: Optional[BaseException] = None,
                  throw: bool = True, eta: Optional[datetime] = None, countdown: Optional[float] = None,
                  max_retries: Optional[int] = None, **options: Any) -> Any: ...

    class Ignore(Exception): ...

    class Retry(Exception): ...

    def _connect_revoked(handler: Callable[..., None]) -> None: ...
else:
    from celery import Task, signals
    from celery.exceptions import Ignore, Retry

    def _connect_revoked(handler):
        signals.task_revoked.connect(handler, weak=False)

__all__ = ["LockedTask", "TaskLease", "LEASE_HEADER", "MODES", "HELD_POLICIES", "RETRY_POLICIES"]

logger = logging.getLogger("pylocks.celery")

#: The message header that carries a lease to the task: ``{"key": key, "id": lease_id}``, or
#: ``None`` for "no lease: take the lock in the task" (a retry after ``lock_on_retry="release"``).
LEASE_HEADER = "pylocks_lease"
#: Values of ``lock_mode``.
MODES = ("task", "enqueue")
#: Values of ``lock_held``: all in the task; ``raise``, ``skip`` and ``wait`` at the producer.
HELD_POLICIES = ("raise", "retry", "wait", "skip")
#: Values of ``lock_on_retry``.
RETRY_POLICIES = ("keep", "release")

_MISSING = object()


class TaskLease:
    """The lease a run of a :class:`LockedTask` holds: ``self.lease`` inside the task.

    :ivar handle: the :class:`~pylocks.blocking.SingleLockHandle` (``confirm()``, ``extend()``).
    :ivar claimed_from: the lease id the message carried, when the run claimed one; ``None``
        when the run acquired the lock itself.
    :ivar lost: a :class:`threading.Event`, set the moment the lease ends while the task
        runs (with ``lock_keep_alive``: a failed renewal or ``PYLOCK.WATCH``).
    :ivar reason: why it ended (``"expired"``, ``"deleted"``, ``"claimed"``, … as
        :meth:`SingleLockHandle.watch` says), or the renewal's error text; ``None`` while held.
    """

    def __init__(self, handle: SingleLockHandle, claimed_from: Optional[str]) -> None:
        self.handle = handle
        self.claimed_from = claimed_from
        self.lost = threading.Event()
        self.reason: Optional[str] = None
        self._keeper: Optional[Keeper] = None
        self._watch: Optional[LeaseWatch] = None
        self._error: Optional[LeaseLost] = None

    @property
    def id(self) -> str:
        """The lease id this run holds (its own, after a claim)."""
        return self.handle.id

    @property
    def token(self) -> int:
        """The fencing token of the lease: hand it to fenced writes."""
        return self.handle.token

    @property
    def key(self) -> str:
        """The lock's Redis key."""
        return self.handle.key

    def __repr__(self) -> str:
        return f"<TaskLease key={self.key!r} id={self.id!r} token={self.token} lost={self.lost.is_set()}>"

    def check(self) -> None:
        """Raise unless the lease still holds the lock.

        With ``lock_keep_alive`` this answers from the watch and the keeper (no round trip);
        otherwise it asks the server (``PYLOCK.CONFIRM``).

        :raises LeaseLost: ``LockClaimed``, ``LockNotOwned`` or ``LockExpired``.
        """
        if self._watch is not None and self._watch.lost.is_set():
            self._watch.check()
        if self._error is not None:
            raise self._error
        if self._watch is None:
            self.handle.confirm()

    def _lose(self, reason: str, error: Optional[LeaseLost] = None) -> None:
        if self.reason is None:
            self.reason = reason
        if error is not None and self._error is None:
            self._error = error
        self.lost.set()

    def _start(self, interval: Optional[float]) -> None:
        self._keeper = self.handle.keep_alive(lambda err: self._lose(str(err), err), interval=interval)
        self._watch = self.handle.watching(on_lost=self._lose, poll=1.0)

    def _stop_keeper(self) -> None:
        if self._keeper is not None:
            self._keeper.stop()
            self._keeper = None

    def _stop(self) -> None:
        self._stop_keeper()
        if self._watch is not None:
            self._watch.stop()


class _Run:
    """What one execution of a locked task holds."""

    def __init__(self) -> None:
        self.lease: Optional[TaskLease] = None
        self.settled = False  # released, or handed on to a retry: the run's exit leaves it alone


# The runs in progress, per thread (a thread pool runs several tasks at once, and eager runs
# nest): task object id -> its stack of runs.
_LOCAL = threading.local()


def _runs_of(task: object) -> List[_Run]:
    stacks: Optional[Dict[int, List[_Run]]] = getattr(_LOCAL, "stacks", None)
    if stacks is None:
        stacks = _LOCAL.stacks = {}
    return stacks.setdefault(id(task), [])


def _read_header(request: Any) -> Any:
    """The lease header of ``request``: ``request.headers`` (eager mode, and Celery's own
    copy on a worker), else the request's top level (where a worker puts custom headers,
    celery issue 4875). ``_MISSING`` when absent."""
    headers = getattr(request, "headers", None)
    if isinstance(headers, Mapping) and LEASE_HEADER in headers:
        return headers[LEASE_HEADER]
    return getattr(request, LEASE_HEADER, _MISSING)


def _set_header(request: Any, value: Optional[Dict[str, str]]) -> None:
    """Make the retry that Celery builds from ``request`` carry ``value`` as the lease header
    (``signature_from_request`` copies ``request.headers``)."""
    headers = getattr(request, "headers", None)
    headers = dict(headers) if isinstance(headers, Mapping) else {}
    headers[LEASE_HEADER] = value
    request.headers = headers
    setattr(request, LEASE_HEADER, value)


def _header_value(handle: SingleLockHandle) -> Dict[str, str]:
    return {"key": handle.key, "id": handle.id}


def _parse_header(value: Any) -> Optional[Tuple[str, str]]:
    if value is None or value is _MISSING:
        return None
    if isinstance(value, Mapping) and isinstance(value.get("key"), str) and isinstance(value.get("id"), str):
        return value["key"], value["id"]
    raise ValueError(f"malformed {LEASE_HEADER} header: {value!r}")


def _retry_delay(eta: Optional[datetime], countdown: Optional[float], default: float) -> float:
    if eta is not None:
        now = datetime.now(timezone.utc) if eta.tzinfo else datetime.now()
        return max(0.0, (eta - now).total_seconds())
    return max(0.0, float(default if countdown is None else countdown))


class LockedTask(Task):
    """A Celery task that runs holding a pylocks lease; see the module docs for the options.

    Use it as ``@app.task(base=LockedTask, bind=True, lock=factory, ...)``. ``bind=True`` is
    only needed to reach ``self.lease`` (and ``self.retry``) from the task.
    """

    lock: Optional[RedisLockFactory] = None
    lock_args: Optional[Sequence[str]] = None
    lock_mode: str = "task"
    lock_held: str = "raise"
    lock_ttl: Optional[float] = None
    lock_wait: Optional[float] = None
    lock_retry_countdown: float = 5.0
    lock_on_retry: str = "keep"
    lock_keep_alive: Union[bool, float] = False
    lock_lease_arg: Optional[str] = None
    lock_limit: Optional[int] = None

    _pylocks_names: Optional[Tuple[str, ...]] = None
    _pylocks_limited: Optional[Tuple[RedisLockFactory, int, RedisLockFactory]] = None

    # --- configuration -------------------------------------------------------------------

    def _factory(self) -> RedisLockFactory:
        if self.lock is None:
            raise TypeError(f"task {self.name}: LockedTask needs lock=<a RedisLockFactory>")
        if self.lock_mode not in MODES:
            raise ValueError(f"task {self.name}: lock_mode must be one of {MODES}, got {self.lock_mode!r}")
        if self.lock_held not in HELD_POLICIES:
            raise ValueError(f"task {self.name}: lock_held must be one of {HELD_POLICIES}, got {self.lock_held!r}")
        if self.lock_on_retry not in RETRY_POLICIES:
            raise ValueError(f"task {self.name}: lock_on_retry must be one of {RETRY_POLICIES}, "
                             f"got {self.lock_on_retry!r}")
        if self.lock_limit is None:
            return self.lock
        return self._limited(self.lock, self.lock_limit)

    def _limited(self, factory: RedisLockFactory, limit: Any) -> RedisLockFactory:
        """``factory`` with ``limit`` (``lock_limit``): a copy made once per task and factory."""
        cached = self._pylocks_limited
        if cached is not None and cached[0] is factory and cached[1] == limit:
            return cached[2]
        try:
            n = _core.semaphore_limit(limit)
        except ValueError:
            raise ValueError(f"task {self.name}: lock_limit must be an int from 1 to {_core.MAX_LIMIT} "
                             f"or None, got {limit!r}") from None
        assert n is not None
        if factory.limit is not None and factory.limit != n:
            raise ValueError(f"task {self.name}: lock_limit={n}, but its lock factory was made with "
                             f"limit={factory.limit}: give one of them, or the same n")
        limited = copy.copy(factory)  # the same client (or lookup), prefix, ttl and class
        limited.limit = n
        self._pylocks_limited = (factory, n, limited)
        return limited

    def _ttl(self) -> float:
        return self._factory().ttl if self.lock_ttl is None else float(self.lock_ttl)

    def _signature(self) -> inspect.Signature:
        return inspect.signature(self.run)

    def _part_names(self) -> Tuple[str, ...]:
        if self._pylocks_names is None:
            factory = self._factory()
            params = list(self._signature().parameters)
            names = tuple(self.lock_args) if self.lock_args is not None else tuple(params[:factory.arity])
            unknown = [n for n in names if n not in params]
            if unknown:
                raise TypeError(f"task {self.name}: lock_args {unknown} are not arguments of the task")
            if len(names) != factory.arity:
                raise TypeError(f"task {self.name}: lock_args {names} name {len(names)} argument(s), "
                                f"the lock takes {factory.arity}")
            self._pylocks_names = names
        return self._pylocks_names

    def _arguments(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Dict[str, Any]:
        bound = self._signature().bind_partial(*args, **kwargs)
        bound.apply_defaults()
        return dict(bound.arguments)

    def _parts(self, arguments: Mapping[str, Any]) -> Tuple[Any, ...]:
        names = self._part_names()
        missing = [n for n in names if n not in arguments]
        if missing:
            raise TypeError(f"task {self.name}: the lock's arguments {missing} were not given")
        return tuple(arguments[n] for n in names)

    def _lease_arg(self, arguments: Mapping[str, Any]) -> Optional[str]:
        if self.lock_lease_arg is None:
            return None
        value = arguments.get(self.lock_lease_arg)
        return None if value is None else str(value)

    # --- the run's state ---------------------------------------------------------------------

    def _runs(self) -> List[_Run]:
        return _runs_of(self)

    @property
    def lease(self) -> Optional[TaskLease]:
        """The lease the current run holds (see :class:`TaskLease`), ``None`` outside a run."""
        runs = self._runs()
        return runs[-1].lease if runs else None

    # --- producer side -----------------------------------------------------------------------

    def apply_async(self, args: Any = None, kwargs: Any = None, task_id: Optional[str] = None,
                    producer: Any = None, link: Any = None, link_error: Any = None,
                    shadow: Optional[str] = None, **options: Any) -> Any:
        """Send the task. In enqueue mode, take the lock first and send the lease in the
        message's headers; a message that already carries one (a retry) is sent as it is.

        :param graceful: (keyword) when the lock is held, return ``None`` instead of raising.
        :raises LockAlreadyHeld: enqueue mode, the lock is held (``lock_held="raise"``).
        """
        graceful = bool(options.pop("graceful", False))
        factory = self._factory()
        headers = dict(options.get("headers") or {})
        send = super().apply_async
        if self.lock_mode != "enqueue" or LEASE_HEADER in headers:
            return send(args, kwargs, task_id, producer, link, link_error, shadow, **options)
        arguments = self._arguments(args or (), kwargs or {})
        if self._lease_arg(arguments) is not None:  # the seed's style: the caller acquired
            return send(args, kwargs, task_id, producer, link, link_error, shadow, **options)
        parts = self._parts(arguments)
        held = "skip" if graceful else self.lock_held
        try:
            handle = factory.acquire(*parts, ttl=self._ttl(),
                                     wait=(self.lock_wait or self._ttl()) if held == "wait" else None)
        except LockAlreadyHeld as err:
            if held == "skip":
                logger.info("task %s not enqueued: %s", self.name, err)
                return None
            raise
        headers[LEASE_HEADER] = _header_value(handle)
        options["headers"] = headers
        try:
            result = send(args, kwargs, task_id, producer, link, link_error, shadow, **options)
        except BaseException:
            handle.release(ignore_failure=True)
            raise
        try:
            result.lease = handle
        except AttributeError:  # a result class with __slots__: the lease is in the headers
            pass
        return result

    # --- worker side -------------------------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        factory = self._factory()
        request = self.request
        arguments = self._arguments(args, kwargs)
        run = _Run()
        runs = self._runs()
        runs.append(run)
        try:
            handle, claimed_from = self._take(factory, request, arguments)
            if handle is None:
                return None  # lock_held="skip"
            run.lease = lease = TaskLease(handle, claimed_from)
            if not getattr(request, "called_directly", True):
                _set_header(request, _header_value(handle))  # a retry claims from this run's id
            if self.lock_keep_alive:
                keep = self.lock_keep_alive
                lease._start(None if keep is True else float(keep))
            try:
                result = super().__call__(*args, **kwargs)
            except Retry:
                self._finish(run, "retry")
                raise
            except BaseException as exc:
                self._finish(run, type(exc).__name__)
                raise
            self._finish(run, None)
            return result
        finally:
            runs.pop()

    def _take(self, factory: RedisLockFactory, request: Any,
              arguments: Mapping[str, Any]) -> Tuple[Optional[SingleLockHandle], Optional[str]]:
        """This run's lease: claimed from the message's header or lease argument, else acquired."""
        ttl = self._ttl()
        raw = _read_header(request)
        carried = _parse_header(raw)
        lease_id: Optional[str] = None
        key: Optional[str] = None
        if carried is not None:
            key, lease_id = carried
        elif raw is _MISSING:  # a None header (a retry that released) means: acquire
            lease_id = self._lease_arg(arguments)
            if lease_id is not None:
                key = factory.key(*self._parts(arguments))
        if key is not None and lease_id is not None:
            given = SingleLockHandle(factory.redis, key, lease_id, 0, 0, factory.ttl_ms, _core.to_ms(ttl, "ttl"))
            try:
                return given.claim(extend=ttl), lease_id
            except LockClaimed as err:
                logger.warning("task %s[%s]: duplicate delivery refused, not run: lease %s on %s: %s",
                               self.name, request.id, lease_id, key, err)
                raise Ignore() from None
            except LeaseLost as err:
                if self._succeeded(request):
                    logger.warning("task %s[%s]: duplicate delivery of a run that succeeded, not run: "
                                   "lease %s on %s: %s", self.name, request.id, lease_id, key, err)
                    raise Ignore() from None
                logger.error("task %s[%s]: lease %s on %s lost before the task ran: %s",
                             self.name, request.id, lease_id, key, err)
                raise
        return self._acquire(factory, request, self._parts(arguments), ttl), None

    def _acquire(self, factory: RedisLockFactory, request: Any, parts: Tuple[Any, ...],
                 ttl: float) -> Optional[SingleLockHandle]:
        """Take the lock inside the task, under ``lock_held``'s policy.

        On a worker (or in eager mode) the lease is first acquired under the message's task
        id, then claimed under an id of this run's own: a second delivery of the same message
        then finds that id claimed (``CLAIMED``) and is refused as a duplicate, as a claimed
        header lease is."""
        held = self.lock_held
        message = self._message_id(request)
        try:
            try:
                handle = factory.acquire(*parts, ttl=ttl, lease_id=message)
            except LockAlreadyHeld as err:
                if message is not None:
                    self._refuse_duplicate(factory, err.key or factory.key(*parts), message, request)
                if held != "wait":
                    raise
                handle = factory.acquire(*parts, ttl=ttl, lease_id=message, wait=self.lock_wait or ttl)
        except LimitMismatch as err:
            logger.error("task %s[%s]: lock_limit=%s does not match the key's: %s", self.name, request.id,
                         factory.limit, err)
            raise
        except LockAlreadyHeld as err:
            if held == "skip":
                logger.info("task %s[%s] skipped: %s", self.name, request.id, err)
                return None
            if held == "retry" and not getattr(request, "called_directly", True):
                logger.info("task %s[%s]: %s; retrying in %ss", self.name, request.id, err,
                            self.lock_retry_countdown)
                raise self.retry(countdown=self.lock_retry_countdown, exc=err)
            logger.error("task %s[%s]: %s", self.name, request.id, err)
            raise
        handle.lease_ttl_ms = _core.to_ms(ttl, "ttl")
        if message is None:
            return handle
        try:
            return handle.claim()
        except LockClaimed as err:  # a second delivery of this message claimed it in between
            logger.warning("task %s[%s]: duplicate delivery refused, not run: %s", self.name, request.id, err)
            raise Ignore() from None

    @staticmethod
    def _message_id(request: Any) -> Optional[str]:
        """The message's task id as a lease id, for a run on a worker or in eager mode."""
        task_id = getattr(request, "id", None)
        if getattr(request, "called_directly", True) or not isinstance(task_id, str):
            return None
        return task_id if 0 < len(task_id.encode()) <= 128 else None

    def _refuse_duplicate(self, factory: RedisLockFactory, key: str, message: str, request: Any) -> None:
        """Raise ``Ignore`` if the lock is held by a run of this message (``CLAIMED``)."""
        try:
            SingleLockHandle(factory.redis, key, message, 0, 0, factory.ttl_ms).confirm()
        except LockClaimed as err:
            logger.warning("task %s[%s]: duplicate delivery refused, not run: lease %s on %s: %s",
                           self.name, request.id, message, key, err)
            raise Ignore() from None
        except LeaseLost:
            pass  # held by another message's lease (or freed meanwhile): the policy decides

    def _succeeded(self, request: Any) -> bool:
        """Whether the result backend has this task id as succeeded (a copy of a message
        whose run released its lease and ended)."""
        if getattr(request, "is_eager", False) or not getattr(request, "id", None):
            return False
        try:
            return bool(self.AsyncResult(request.id).state == "SUCCESS")
        except Exception:  # noqa: BLE001 - no backend, or it failed: cannot tell
            return False

    def _finish(self, run: _Run, why: Optional[str]) -> None:
        """End a run: release its lease unless a retry took it over. ``why`` is how the run
        ended (``None``: it returned); then a lease lost meanwhile is raised."""
        lease = run.lease
        if lease is None:
            return
        lease._stop_keeper()
        try:
            if run.settled:
                return
            run.settled = True
            if why is None:
                try:
                    lease.handle.release()
                except LeaseLost as err:
                    logger.error("task %s[%s]: lease %s on %s was lost before the task ended: %s",
                                 self.name, self.request.id, lease.id, lease.key, err)
                    raise
                return
            self._release(lease, why)
        finally:
            lease._stop()

    def _release(self, lease: TaskLease, why: str) -> None:
        try:
            if not lease.handle.release(ignore_failure=True):
                logger.warning("task %s: lease %s on %s was already lost at %s", self.name, lease.id,
                               lease.key, why)
        except Exception as err:  # noqa: BLE001 - never masks the task's own outcome
            logger.error("task %s: releasing lease %s on %s at %s failed: %s", self.name, lease.id,
                         lease.key, why, err)

    def retry(self, args: Any = None, kwargs: Any = None, exc: Optional[BaseException] = None,
              throw: bool = True, eta: Optional[datetime] = None, countdown: Optional[float] = None,
              max_retries: Optional[int] = None, **options: Any) -> Any:
        """Celery's ``retry``, with the lease settled before the retry is sent, as
        ``lock_on_retry`` says: ``"keep"`` extends it to cover the delay plus ``lock_ttl``,
        and the retry's message carries it (the retried run claims it); ``"release"``
        releases it, and the retried run takes the lock anew. When no retry will be sent
        (``max_retries`` reached) the lease is left to the run's end, which releases it."""
        runs = self._runs()
        run = runs[-1] if runs else None
        request = self.request
        keep = False
        if run is not None and run.lease is not None and not run.settled and not request.called_directly:
            limit = self.max_retries if max_retries is None else max_retries
            if limit is None or request.retries + 1 <= limit:
                lease = run.lease
                if self.lock_on_retry == "keep":
                    delay = _retry_delay(eta, countdown, self.default_retry_delay)
                    lease._stop_keeper()  # it would shorten the lease back to lock_ttl
                    lease.handle.extend(delay + self._ttl())  # a lost lease raises: no retry then
                    _set_header(request, _header_value(lease.handle))
                    keep = True
                else:
                    run.settled = True
                    self._release(lease, "retry")
                    _set_header(request, None)
        sent = False
        try:
            ret = super().retry(args, kwargs, exc, throw, eta, countdown, max_retries, **options)
            sent = True
            return ret
        except Retry:
            sent = True
            raise
        finally:
            if keep and sent and run is not None:
                run.settled = True  # the retry's run claims it


def _release_revoked(sender: Any = None, request: Any = None, **kwargs: Any) -> None:
    """``task_revoked``: a discarded message of a locked task releases the lease it carries.

    A run that had already claimed the lease holds it under its own id, so the release by
    the message's id gets ``CLAIMED`` and changes nothing (a terminated run releases its own
    lease as it unwinds)."""
    if not isinstance(sender, LockedTask) or request is None:
        return
    try:
        carried = _parse_header(_read_header(request))
    except ValueError as err:
        logger.error("revoked task %s: %s", getattr(request, "id", "?"), err)
        return
    if carried is None or sender.lock is None:
        return
    key, lease_id = carried
    handle = SingleLockHandle(sender.lock.redis, key, lease_id, 0, 0, sender.lock.ttl_ms)
    try:
        released = handle.release(ignore_failure=True)
    except Exception as err:  # noqa: BLE001 - a signal handler must not break the worker
        logger.error("revoked task %s: releasing lease %s on %s failed: %s",
                     getattr(request, "id", "?"), lease_id, key, err)
        return
    logger.info("revoked task %s[%s]: lease %s on %s %s", sender.name, getattr(request, "id", "?"),
                lease_id, key, "released" if released else "was no longer held by it")


_connect_revoked(_release_revoked)
