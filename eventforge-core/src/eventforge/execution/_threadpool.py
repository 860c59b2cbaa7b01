"""A lean thread pool for :class:`~eventforge.execution.Executor`'s THREAD mode.

``concurrent.futures.ThreadPoolExecutor`` builds a ``Future`` (a ``Condition`` over an ``RLock``)
and a work item per task, which costs several microseconds of the caller's time. A job here is
one slotted object whose "done" signal is a plain lock, held from creation until the job
finishes: waiting is acquiring it. Jobs carry their own outcome, so nothing else is allocated.

Workers are daemon threads; an ``atexit`` hook drains and stops every live pool, so work that
was submitted before the interpreter exits still runs (as with ``ThreadPoolExecutor``).
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import weakref
from collections.abc import Callable
from queue import Empty, SimpleQueue
from typing import Any

__all__ = ["Job", "Outcome", "ThreadPool", "wait_all"]

_PENDING, _RUNNING, _DONE, _CANCELLED = 0, 1, 2, 3

Outcome = tuple[bool, Any, float]
Runner = Callable[[Callable[..., Any], tuple[Any, ...], dict[str, Any]], Outcome]


class Job:
    """One submitted call; the future-like handle the Executor keeps."""

    __slots__ = ("_callbacks", "_done", "_pool", "args", "func", "kwargs", "outcome", "state")

    def __init__(
        self,
        pool: ThreadPool,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self._pool = pool
        self.func = func
        self.args = args
        self.kwargs = kwargs
        self.state = _PENDING
        self.outcome: Outcome | None = None
        self._done = threading.Lock()
        self._done.acquire()
        self._callbacks: list[Callable[[Job], None]] | None = None

    def done(self) -> bool:
        """True once the job finished or was cancelled."""
        return self.state >= _DONE

    def running(self) -> bool:
        """True while a worker runs the job."""
        return self.state == _RUNNING

    def cancelled(self) -> bool:
        """True when the job was cancelled before it started."""
        return self.state == _CANCELLED

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the job is done; return False if ``timeout`` passed first."""
        if self.state >= _DONE:
            return True
        if timeout is None:
            acquired = self._done.acquire()
        elif timeout <= 0:
            acquired = self._done.acquire(False)
        else:
            acquired = self._done.acquire(True, timeout)
        if acquired:
            self._done.release()  # let other waiters through
        return acquired

    def cancel(self) -> bool:
        """Cancel the job if it has not started; return whether it is cancelled."""
        with self._pool._state_lock:
            if self.state == _PENDING:
                self.state = _CANCELLED
            elif self.state != _CANCELLED:
                return False
        self._finish()
        return True

    def add_done_callback(self, callback: Callable[[Job], None]) -> None:
        """Call ``callback(job)`` when done (at once, in this thread, if it already is)."""
        with self._pool._state_lock:
            if self.state < _DONE:
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append(callback)
                return
        callback(self)

    def _finish(self) -> None:
        with self._pool._state_lock:
            callbacks, self._callbacks = self._callbacks, None
        try:
            self._done.release()
        except RuntimeError:
            return  # already released: cancelled twice
        if callbacks:
            for callback in callbacks:
                callback(self)


class ThreadPool:
    """``max_workers`` daemon threads taking jobs from one ``SimpleQueue``."""

    is_eventforge_pool = True  # lets Executor.__del__ recognise it when globals are torn down

    def __init__(self, max_workers: int, runner: Runner, name: str = "eventforge-executor"):
        self.max_workers = max_workers
        self._runner = runner
        self._queue: SimpleQueue[Job | None] = SimpleQueue()
        self._state_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._name = name
        self._stopped = False
        self._spawn_lock = threading.Lock()
        # Workers waiting for a job and not yet promised one. A submit takes one (so the same
        # warm thread serves a caller that submits one job at a time) or spawns a new worker.
        self._idle = 0
        self._idle_lock = threading.Lock()
        _live_pools.add(self)

    def submit(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Job:
        """Queue ``func(*args, **kwargs)``; return its job."""
        if self._stopped:
            raise RuntimeError("cannot submit to a stopped thread pool")
        job = Job(self, func, args, kwargs)
        self._queue.put(job)
        if self._cancelled_by_shutdown(job):
            raise RuntimeError("cannot submit to a stopped thread pool")
        with self._idle_lock:
            if self._idle:
                self._idle -= 1
                return job
        if len(self._threads) < self.max_workers:
            self._spawn()
        return job

    def _cancelled_by_shutdown(self, job: Job) -> bool:
        """Cancel ``job`` if :meth:`shutdown` ran while it was being queued; tell whether it did.

        Such a job may sit behind the workers' stop signals, or have no worker left to run it:
        refusing it beats stranding a caller that waits for it.
        """
        return self._stopped and job.cancel()

    def _spawn(self) -> None:
        with self._spawn_lock:
            if len(self._threads) < self.max_workers and not self._stopped:
                thread = threading.Thread(
                    target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
                )
                thread.start()
                self._threads.append(thread)

    def _work(self) -> None:
        get = self._queue.get
        state_lock = self._state_lock
        runner = self._runner
        idle_lock = self._idle_lock
        while True:
            job = get()
            if job is None:
                return
            with state_lock:
                if job.state != _PENDING:
                    continue
                job.state = _RUNNING
            try:
                job.outcome = runner(job.func, job.args, job.kwargs)
            except BaseException as exc:  # SystemExit & co. from the task: a failure, not our exit
                job.outcome = (False, exc, 0.0)
            job.func = job.args = job.kwargs = None  # type: ignore[assignment]
            job.state = _DONE
            with idle_lock:
                self._idle += 1  # before waking the caller, who may submit again at once
            job._finish()

    def shutdown(self, wait: bool = True, *, cancel_pending: bool | None = None) -> None:
        """Stop the workers once the queued jobs ran, or cancel those (default: ``not wait``).

        ``wait`` also joins the worker threads.
        """
        if cancel_pending is None:
            cancel_pending = not wait
        with self._spawn_lock:
            if self._stopped:
                return
            self._stopped = True
            threads = list(self._threads)
        if cancel_pending:
            while True:
                try:
                    job = self._queue.get_nowait()
                except Empty:
                    break
                if job is not None:
                    job.cancel()
        for _ in threads:
            self._queue.put(None)
        if wait:
            for thread in threads:
                if thread is not threading.current_thread():
                    thread.join()
        _live_pools.discard(self)


_live_pools: weakref.WeakSet[ThreadPool] = weakref.WeakSet()


def wait_all(jobs: list[Job], timeout: float | None) -> None:
    """Wait for every job, within one overall ``timeout``."""
    deadline = None if timeout is None else time.monotonic() + timeout
    for job in jobs:
        if deadline is None:
            job.wait()
        elif not job.wait(max(0.0, deadline - time.monotonic())):
            return


@atexit.register
def _drain_at_exit() -> None:
    for pool in list(_live_pools):
        pool.shutdown(wait=True)


def _reset_after_fork() -> None:
    # A forked child has none of its parent's worker threads: start afresh on the next submit.
    for pool in list(_live_pools):
        pool._threads = []
        pool._queue = SimpleQueue()
        pool._state_lock = threading.Lock()
        pool._spawn_lock = threading.Lock()
        pool._idle_lock = threading.Lock()
        pool._idle = 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
