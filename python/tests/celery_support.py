"""Running real Celery 5 workers for the tests: start, wait until they answer, stop or kill."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Optional

import kombu.exceptions
import redis

TESTS = Path(__file__).resolve().parent
WORKER_READY_TIMEOUT = 45.0


def load_lockapp(port: int) -> ModuleType:
    """A fresh copy of ``lockapp`` whose Celery app and lock store point at the server on ``port``."""
    os.environ["PYLOCKS_TEST_REDIS_PORT"] = str(port)
    spec = importlib.util.spec_from_file_location(f"lockapp_{port}", TESTS / "lockapp.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Worker:
    """``celery -A lockapp worker`` as a subprocess in its own process group."""

    def __init__(self, lockapp: ModuleType, name: str, log: Path, *, pool: str = "prefork",
                 concurrency: int = 2, queues: str = "celery", app: str = "lockapp",
                 app_dir: Path = TESTS, env_drop: tuple = ()) -> None:
        """``lockapp``: the producer's copy of the app (its ``celery_app`` answers pings);
        ``app``: what the worker imports (``-A``), from ``app_dir``; ``env_drop``: variables
        the worker must not inherit."""
        self.lockapp = lockapp
        self.name = name
        self.log = log
        env = {k: v for k, v in os.environ.items() if k not in env_drop}
        if hasattr(lockapp, "PORT"):
            env["PYLOCKS_TEST_REDIS_PORT"] = str(lockapp.PORT)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(app_dir), env.get("PYTHONPATH")]))
        argv = [
            sys.executable, "-m", "celery", "-A", app, "worker",
            "-P", pool, "-c", str(concurrency), "-Q", queues, "-n", name,
            "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "INFO",
        ]
        self._log_file = open(log, "ab")
        self.proc = subprocess.Popen(argv, cwd=app_dir, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self._log_file, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def wait_ready(self, timeout: float = WORKER_READY_TIMEOUT) -> None:
        """Until the worker answers a broadcast ping (it consumes from then on)."""
        deadline = time.monotonic() + timeout
        last_error: Optional[BaseException] = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            try:
                replies = self.lockapp.celery_app.control.ping(destination=[self.name], timeout=0.5)
            except (ConnectionError, redis.ConnectionError, kombu.exceptions.OperationalError) as err:
                last_error = err  # a pooled socket of a server that was stopped: the next ping reconnects
                time.sleep(0.1)
                continue
            if any(self.name in reply for reply in replies):
                return
        self.stop()
        raise RuntimeError(f"worker {self.name} not ready in {timeout}s (last ping error: {last_error}):\n"
                           f"{self.log_text()[-3000:]}")

    def log_text(self) -> str:
        self._log_file.flush()
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and pool children): no cleanup runs."""
        self._signal_group(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 10.0) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL if it does not exit in ``timeout`` seconds."""
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self._signal_group(signal.SIGKILL)  # also any orphaned pool child
        if self.proc.poll() is None:
            self.proc.wait(10)
        self._log_file.close()

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass


def wait_for(predicate, timeout: float, interval: float = 0.05, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def get_result(async_result, timeout: float = 30.0):
    """Wait for a task's outcome without raising its exception; returns (state, result)."""
    async_result.get(timeout=timeout, propagate=False, disable_sync_subtasks=False)
    return async_result.state, async_result.result
