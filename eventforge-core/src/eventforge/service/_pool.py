"""The worker pool behind ``eventforge run --workers N``: start, watch, restart, drain.

Each worker is ``python -m eventforge.service.run TARGET --workers 1 --health-port 0``. The pool
reads each worker's ready line for the address of its health endpoints, restarts a worker that
exits while the pool is running (after a capped, jittered backoff that resets once a worker has
run for a while), serves health for all workers at once, and on SIGTERM / SIGINT sends SIGTERM
to each worker and waits for it to drain.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from eventforge.service.http import HealthServer
from eventforge.transport import Backoff

__all__ = ["POOL_PARENT", "WorkerPool", "stop_when_orphaned"]

log = logging.getLogger("eventforge.run")

READY_PREFIX = "eventforge service ready"
POOL_PARENT = "EVENTFORGE_POOL_PARENT"
"""Set in a worker's environment to the pool's pid: a worker whose pool is gone stops."""
STABLE_AFTER = 30.0
"""A worker that ran this long before exiting is restarted without backing off further."""


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen[str]
    started: float = field(default_factory=time.monotonic)
    health_url: str | None = None
    restarts: int = 0


class WorkerPool:
    """Run ``command`` ``workers`` times, keep them running, and stop them in order."""

    def __init__(
        self,
        command: list[str],
        *,
        workers: int,
        drain_timeout: float,
        reload: bool = False,
        name: str = "service",
        backoff: Backoff | None = None,
    ) -> None:
        self.command = command
        self.workers = workers
        self.drain_timeout = drain_timeout
        self.reload = reload
        self.name = name
        self.backoff = backoff or Backoff(initial=0.5, cap=30.0, jitter=0.2)
        self._stop = threading.Event()
        self._reload_now = threading.Event()
        self._slots: list[_Worker | None] = [None] * workers
        self._failures = [0] * workers
        self._due = [0.0] * workers
        self._restarts = [0] * workers
        self._lock = threading.Lock()

    # -- one worker -------------------------------------------------------------------------

    def _spawn(self, index: int) -> None:
        process = subprocess.Popen(
            self.command,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            env={
                **os.environ,
                "EVENTFORGE_WORKER_INDEX": str(index),
                POOL_PARENT: str(os.getpid()),
            },
        )
        worker = _Worker(index, process, restarts=self._restarts[index])
        with self._lock:
            self._slots[index] = worker
        threading.Thread(
            target=self._read, args=(worker,), name=f"eventforge-run-{index}", daemon=True
        ).start()
        log.info("worker %d started (pid %d)", index, process.pid)

    def _read(self, worker: _Worker) -> None:
        assert worker.process.stdout is not None
        for line in worker.process.stdout:
            if line.startswith(READY_PREFIX):
                for word in line.split():
                    if word.startswith("health="):
                        worker.health_url = word.partition("=")[2]
            sys.stdout.write(line)
            sys.stdout.flush()

    def _terminate(self, workers: list[_Worker]) -> None:
        for worker in workers:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.drain_timeout + 5.0
        for worker in workers:
            try:
                worker.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning(
                    "worker %d (pid %d) did not drain in time; killing it",
                    worker.index,
                    worker.process.pid,
                )
                worker.process.kill()
                worker.process.wait()

    # -- the pool ---------------------------------------------------------------------------

    def _watch_files(self) -> None:
        try:
            import watchfiles  # optional dependency: eventforge-core[reload]
        except ImportError:
            log.error("--reload needs watchfiles: pip install 'eventforge-core[reload]'")
            self._stop.set()
            return
        for _changes in watchfiles.watch(
            os.getcwd(), watch_filter=watchfiles.PythonFilter(), stop_event=self._stop
        ):
            log.info("source changed; restarting the workers")
            self._reload_now.set()

    def _tick(self) -> None:
        now = time.monotonic()
        if self._reload_now.is_set():
            self._reload_now.clear()
            with self._lock:
                running = [w for w in self._slots if w is not None]
                self._slots = [None] * self.workers
            self._terminate(running)
            self._due = [now] * self.workers
        for index in range(self.workers):
            with self._lock:
                worker = self._slots[index]
            if worker is None:
                if now >= self._due[index]:
                    self._spawn(index)
                continue
            code = worker.process.poll()
            if code is None:
                continue
            ran = now - worker.started
            self._failures[index] = 1 if ran >= STABLE_AFTER else self._failures[index] + 1
            delay = self.backoff.delay(self._failures[index])
            self._restarts[index] += 1
            log.warning(
                "worker %d (pid %d) exited with %s after %.1f s; restarting in %.1f s",
                index,
                worker.process.pid,
                code,
                ran,
                delay,
            )
            with self._lock:
                self._slots[index] = None
            self._due[index] = now + delay

    def report(self) -> dict[str, Any]:
        """The health of every worker, gathered from their own endpoints."""
        with self._lock:
            slots = list(self._slots)
        workers: list[dict[str, Any]] = []
        reasons: list[str] = []
        subscriptions: list[dict[str, Any]] = []
        for index, worker in enumerate(slots):
            entry: dict[str, Any] = {"index": index, "restarts": self._restarts[index]}
            if worker is None or worker.process.poll() is not None:
                entry["state"] = "restarting"
                reasons.append(f"worker {index} is restarting")
            elif worker.health_url is None:
                entry.update(state="starting", pid=worker.process.pid)
                reasons.append(f"worker {index} (pid {worker.process.pid}) is starting")
            else:
                entry.update(state="running", pid=worker.process.pid)
                child = _fetch(worker.health_url + "/health")
                if child is None:
                    reasons.append(f"worker {index} (pid {worker.process.pid}) does not answer")
                else:
                    reasons += [f"worker {index}: {r}" for r in child.get("reasons", [])]
                    for sub in child.get("subscriptions", []):
                        subscriptions.append({**sub, "worker": index, "pid": worker.process.pid})
            workers.append(entry)
        return {
            "service": self.name,
            "status": "ready" if not reasons else "unready",
            "live": not self._stop.is_set(),
            "reasons": reasons,
            "workers": workers,
            "subscriptions": subscriptions,
        }

    def run(self, health_host: str = "127.0.0.1", health_port: int | None = None) -> int:
        """Run until SIGTERM / SIGINT; return 0 once every worker has drained."""

        def on_signal(signum: int, frame: FrameType | None) -> None:
            log.info("signal %d: draining %d workers", signum, self.workers)
            self._stop.set()

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        server = (
            HealthServer(self.report, health_host, health_port) if health_port is not None else None
        )
        if server is not None:
            print(f"eventforge pool health={server.url} pid={os.getpid()}", flush=True)
        if self.reload:
            threading.Thread(
                target=self._watch_files, name="eventforge-reload", daemon=True
            ).start()
        try:
            while not self._stop.is_set():
                self._tick()
                self._stop.wait(0.2)
        finally:
            with self._lock:
                running = [w for w in self._slots if w is not None]
            self._terminate(running)
            if server is not None:
                server.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0


def _fetch(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:  # loopback only
            data = json.loads(response.read())
    except urllib.error.HTTPError as exc:  # 503 still carries the report
        try:
            data = json.loads(exc.read())
        except ValueError:
            return None
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def stop_when_orphaned(stop: Callable[[], None], interval: float = 0.5) -> None:
    """In a pool's worker: call ``stop()`` once the pool process is gone (even SIGKILLed).

    A worker started by :class:`WorkerPool` has :data:`POOL_PARENT` in its environment; when
    its parent pid changes (the pool died and the worker was re-parented), it drains and exits
    instead of running on unsupervised.
    """
    parent = os.environ.get(POOL_PARENT)
    if not parent or not parent.isdigit() or os.getppid() != int(parent):
        return  # not started by a pool (or a grandchild that inherited the variable)

    def watch() -> None:
        while os.getppid() == int(parent):
            time.sleep(interval)
        log.warning("the worker pool (pid %s) is gone; this worker stops", parent)
        stop()

    threading.Thread(target=watch, name="eventforge-orphan-watch", daemon=True).start()
