"""Pattern 2 across languages: a Python Celery 5 producer, Rust workers on the ``celery`` crate.

The producer takes each person's lock with the Python client and sends the very task of
``lockapp`` (``pattern2.add_to_person``) with ``apply_async(..., queue=<rust queue>)``. Two
processes of ``celery-worker`` (rusty-celery 0.5.5 + the ``pylocks`` crate) consume that queue:
each confirms the lease with ``get_handle``, claims it under an id of its own (``CONFIRM … CLAIM``),
does GET then SET on the person's counter (db 3), and releases. Nothing here is mocked; see ``python/CELERY.md`` for what the test shows.

The binary is built by ``scripts/test-python``
(``cargo build --release --manifest-path celery-worker/Cargo.toml``); ``PYLOCKS_CELERY_WORKER``
points at another build.

The Rust worker has no result backend, so the test reads outcomes from the workers' logs: every
task ends with one ``applied task=<id> …`` or ``refused task=<id> … code=NOTHELD|NOTOWNED|CLAIMED`` line,
prefixed with the Unix time in milliseconds.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Dict, Iterator, List, Optional, Tuple

import pytest

from celery_support import load_lockapp, wait_for
from conftest import REPO, Server, register_log

WORKER_BINARY = Path(os.environ.get(
    "PYLOCKS_CELERY_WORKER", REPO / "celery-worker/target/release/pylocks-celery-worker"))
WORKER_READY_TIMEOUT = 20.0
#: Rust worker processes consuming the queue: they compete for its messages.
WORKERS = 2
#: Seconds between the workers' starts (see ``rust_env``).
POLL_OFFSET = 0.5
OUTCOME = re.compile(r"^(?P<ms>\d+) \w+ \S+: (?P<what>applied|refused) task=(?P<task>\S+) (?P<rest>.*)$")


def person() -> str:
    return uuid.uuid4().hex[:10]


@dataclass
class Outcome:
    """One task's end as a Rust worker logged it."""

    what: str  # "applied" or "refused"
    at_ms: int  # Unix time in milliseconds when the line was written
    worker: str
    fields: Dict[str, str]  # key=value pairs of the line (person, key, lease, code or amount...)


class RustWorker:
    """One ``pylocks-celery-worker`` process in its own process group, logging to a file."""

    def __init__(self, server: Server, lockapp: ModuleType, queue: str, name: str, log: Path) -> None:
        if not WORKER_BINARY.exists():
            pytest.fail(f"{WORKER_BINARY} not found: run "
                        "`cargo build --release --manifest-path celery-worker/Cargo.toml`")
        self.name = name
        self.log = log
        argv = [
            str(WORKER_BINARY),
            "--broker", server.url(1), "--locks", server.url(0), "--data", server.url(3),
            "--queue", queue, "--root-prefix", lockapp.ROOT_PREFIX, "--hostname", name,
        ]
        self._log_file = open(log, "ab")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log_file,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = WORKER_READY_TIMEOUT) -> None:
        """Until the worker logs that it consumes (messages sent before then wait in the queue)."""
        deadline = time.monotonic() + timeout
        while f"ready hostname={self.name} " not in self.log_text():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready in {timeout}s:\n{self.log_text()[-3000:]}")
            time.sleep(0.05)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def outcomes(self) -> List[Outcome]:
        found = []
        for line in self.log_text().splitlines():
            m = OUTCOME.match(line)
            if m:
                fields = dict(re.findall(r"(\w+)=(\S+)", m["rest"].split(": ", 1)[0]))
                fields["task"] = m["task"]
                found.append(Outcome(m["what"], int(m["ms"]), self.name, fields))
        return found

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (the crate's warm shutdown), then SIGKILL if it has not exited in ``timeout``."""
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            if self.proc.poll() is not None:
                break
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                pass
        self._log_file.close()


class RustEnv:
    """The producer side (this server's copy of ``lockapp``) and the Rust workers of one queue."""

    def __init__(self, server: Server, lockapp: ModuleType, queue: str, workers: List[RustWorker]) -> None:
        self.server = server
        self.lockapp = lockapp
        self.queue = queue
        self.workers = workers
        self.people = server.client(db=3)
        self.broker = server.client(db=1)

    def send(self, person_id: str, amount: int, *, ttl: Optional[float] = None,
             wait: Optional[float] = None, countdown: Optional[float] = None,
             delay: float = 0.0) -> Tuple[str, str]:
        """Pattern 2's producer: acquire the person's lock, send the task with the lease id to
        the Rust workers' queue. Returns (task id, lease id)."""
        handle = self.lockapp.person_lock.acquire(person_id, ttl=ttl, wait=wait)
        # Without a delay, the seed's three arguments; the Rust task's `delay` is optional.
        args = [person_id, handle.id, amount] + ([delay] if delay else [])
        result = self.lockapp.add_to_person_with_lease.apply_async(
            args, queue=self.queue, countdown=countdown,
            ignore_result=True)  # the Rust worker has no result backend
        return result.id, handle.id

    def outcomes(self) -> Dict[str, Outcome]:
        """Every task's outcome so far, by task id; fails if a task ended twice."""
        found: Dict[str, Outcome] = {}
        for worker in self.workers:
            for outcome in worker.outcomes():
                assert outcome.fields["task"] not in found, f"task ended twice: {outcome}"
                found[outcome.fields["task"]] = outcome
        return found

    def wait_outcomes(self, task_ids: List[str], timeout: float = 60.0) -> Dict[str, Outcome]:
        wait_for(lambda: set(task_ids) <= set(self.outcomes()), timeout, interval=0.1,
                 what=f"{len(task_ids)} task outcomes in the Rust workers' logs")
        return self.outcomes()

    def counter(self, person_id: str) -> Optional[int]:
        value = self.people.get("person:%s" % person_id)
        return None if value is None else int(value)


@pytest.fixture(scope="module")
def rust_env(server: Server) -> Iterator[RustEnv]:
    """Two Rust worker processes per server on a queue of their own, and the Python producer."""
    tmp = Path(tempfile.mkdtemp(prefix=f"pylocks-rust-{server.kind}-"))
    lockapp = load_lockapp(server.port)
    queue = f"rust-{uuid.uuid4().hex[:8]}"
    workers: List[RustWorker] = []
    try:
        for i in range(WORKERS):
            if i:
                # The crate's Redis broker polls (RPOP, then a 1 s sleep when the queue is
                # empty). Workers started together poll in step and the first always wins;
                # half a second apart, they take turns, as workers started at random times do.
                time.sleep(POLL_OFFSET)
            name = f"rust{i}-{server.kind}@pylocks"
            workers.append(RustWorker(server, lockapp, queue, name, tmp / f"rust-worker-{i}.log"))
            workers[-1].wait_ready()
        yield RustEnv(server, lockapp, queue, workers)
    finally:
        for worker in workers:
            worker.stop()
        lockapp.celery_app.close()


@pytest.fixture
def rust(rust_env: RustEnv, request: pytest.FixtureRequest) -> Iterator[RustEnv]:
    for worker in rust_env.workers:
        register_log(request, worker.log)
    yield rust_env
    # after each test: every message was taken off the queue and acknowledged (the crate's own "unacked" hash)
    assert rust_env.broker.llen(rust_env.queue) == 0
    assert rust_env.broker.hlen(f"_celery.{rust_env.queue}_process_map") == 0
    assert all(w.proc.poll() is None for w in rust_env.workers), "a Rust worker died"


def test_rust_workers_apply_python_produced_tasks_exactly(rust: RustEnv) -> None:
    """24 tasks over 4 persons, each with its own amount. The producer acquires with ``wait``,
    so each person has one task in flight and the next enqueue waits for the Rust worker's
    release. Every task is applied once, the counters are exact, both clients named the same
    lock, and every lock is free at the end."""
    persons = [person() for _ in range(4)]
    expected = {p: 0 for p in persons}
    sent: Dict[str, Tuple[str, str, int]] = {}
    for i in range(24):
        p = persons[i % len(persons)]
        amount = i + 1
        task_id, lease_id = rust.send(p, amount, wait=30, delay=0.05)
        sent[task_id] = (p, lease_id, amount)
        expected[p] += amount
    outcomes = rust.wait_outcomes(list(sent))

    for task_id, (p, lease_id, amount) in sent.items():
        outcome = outcomes[task_id]
        assert outcome.what == "applied", outcome
        assert outcome.fields["person"] == p and outcome.fields["lease"] == lease_id
        assert int(outcome.fields["amount"]) == amount
        assert outcome.fields["key"] == rust.lockapp.person_lock.key(p)  # same key format
    assert {p: rust.counter(p) for p in persons} == expected

    # each person's writes form one chain (every GET saw the previous SET): none overlapped
    for p in persons:
        steps = sorted((int(o.fields["before"]), int(o.fields["after"]))
                       for o in outcomes.values() if o.fields.get("person") == p)
        assert [after for _, after in steps[:-1]] == [before for before, _ in steps[1:]]
        assert steps[0][0] == 0 and steps[-1][1] == expected[p]

    assert all(rust.lockapp.person_lock.info(p) is None for p in persons)
    # Both processes took tasks: they compete for the queue (each runs its tasks concurrently).
    split = {w.name: sum(outcomes[t].worker == w.name for t in sent) for w in rust.workers}
    print(f"tasks per Rust worker: {split}")
    assert all(split.values()), split


def test_rust_worker_refuses_tasks_whose_lease_expired(rust: RustEnv) -> None:
    """Leases of 0.5 s, tasks with ``countdown=1.5``: the Rust worker holds each message until
    its ETA (the crate honours Celery's ``eta`` header), then ``get_handle`` gets NOTHELD. The
    task is refused and logged, nothing is written, and the lock stays free. Meanwhile the
    worker keeps running other tasks."""
    expired = [person() for _ in range(3)]
    sent: Dict[str, Tuple[str, str, float]] = {}
    for p in expired:
        sent_at = time.time()
        task_id, lease_id = rust.send(p, 1000, ttl=0.5, countdown=1.5)
        sent[task_id] = (p, lease_id, sent_at)
    live = person()  # runs while the expired ones wait for their ETA
    live_task, _ = rust.send(live, 7)

    outcomes = rust.wait_outcomes([live_task, *sent])
    assert outcomes[live_task].what == "applied" and rust.counter(live) == 7
    assert all(outcomes[live_task].at_ms < outcomes[t].at_ms for t in sent)
    for task_id, (p, lease_id, sent_at) in sent.items():
        outcome = outcomes[task_id]
        assert outcome.what == "refused", outcome
        assert outcome.fields["code"] == "NOTHELD" and outcome.fields["lease"] == lease_id
        # it ran at its ETA, not on receipt (2 ms: the crate rounds the wait down to ms)
        assert outcome.at_ms >= (sent_at + 1.5) * 1000 - 2, (outcome.at_ms, sent_at)
        worker_log = next(w for w in rust.workers if w.name == outcome.worker).log_text()
        assert f"lease {lease_id} on person {p} expired" in worker_log
        assert rust.counter(p) is None
        assert rust.lockapp.person_lock.info(p) is None


def test_rust_worker_refuses_a_task_whose_lock_another_lease_took(rust: RustEnv) -> None:
    """The lease expired and someone else took the lock before the task ran: NOTOWNED. The task
    changes nothing and the other holder's lock is untouched."""
    p = person()
    task_id, lease_id = rust.send(p, 1000, ttl=0.5, countdown=2.0)
    time.sleep(0.8)
    other = rust.lockapp.person_lock.acquire(p, ttl=30)
    try:
        outcome = rust.wait_outcomes([task_id])[task_id]
        assert outcome.what == "refused" and outcome.fields["code"] == "NOTOWNED", outcome
        assert outcome.fields["lease"] == lease_id
        assert rust.counter(p) is None
        info = rust.lockapp.person_lock.info(p)
        assert info is not None and info.lease_id == other.id
    finally:
        other.release()
    assert rust.lockapp.person_lock.info(p) is None


def test_rust_worker_runs_a_duplicated_message_once(rust: RustEnv) -> None:
    """The same task (same person, lease and amount) delivered twice, as a redelivery or a retry
    while the first run is alive would: the run that claims the lease first applies it, the
    other gets CLAIMED and is acknowledged without writing. The critical section ran once."""
    p = person()
    handle = rust.lockapp.person_lock.acquire(p, ttl=30)
    args = [p, handle.id, 5, 1.5]  # the first run holds the claimed lease for 1.5 s
    sent = [rust.lockapp.add_to_person_with_lease.apply_async(
        args, queue=rust.queue, ignore_result=True).id for _ in range(2)]
    outcomes = rust.wait_outcomes(sent)
    got = sorted((outcomes[t].what, outcomes[t].fields.get("code")) for t in sent)
    assert got == [("applied", None), ("refused", "CLAIMED")], [outcomes[t] for t in sent]
    applied = next(outcomes[t] for t in sent if outcomes[t].what == "applied")
    assert applied.fields["lease"] == handle.id and applied.fields["claimed"] != handle.id
    assert int(applied.fields["token"]) > handle.token  # the claim's token is the greater
    assert rust.counter(p) == 5
    assert rust.lockapp.person_lock.info(p) is None  # the claimed lease was released
