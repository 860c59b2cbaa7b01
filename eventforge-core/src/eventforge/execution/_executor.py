"""Executor: run a callable in-process, inline, on a thread pool or on a process pool.

``submit`` returns a task id, ``result(task_id)`` returns a :class:`TaskResult` that carries the
value *or* the error (``result`` never raises the task's exception) and ``map`` runs a function
over many items. Every blocking call has an async twin that never blocks a running loop.

Retention rule: a task's result is kept until it is fetched with ``result`` (then released), and
at most ``max_retained`` unfetched results are kept: submitting beyond that forgets the oldest
task (it still runs; its result can no longer be fetched) and counts it in ``stats["evicted"]``.
``map`` returns its results directly and retains nothing.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import pickle
import threading
import time
from collections.abc import Callable, Coroutine, Iterable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures import wait as wait_futures
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from eventforge.execution._results import (
    ExecutionMode,
    TaskId,
    TaskNotFound,
    TaskResult,
    TaskStatus,
    UnpicklableTaskError,
)
from eventforge.execution._runners import (
    Handle,
    Partial,
    awaitable,
    call,
    call_chunk,
    from_future,
    from_outcome,
    is_coroutine_function,
    pending_result,
    run_coroutine_function,
)
from eventforge.execution._threadpool import Job, ThreadPool, wait_all
from eventforge.message import new_id

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["Executor"]

_perf = time.perf_counter
R = TypeVar("R")
P = ParamSpec("P")


class Executor:
    """Run callables inline (SEQUENTIAL), on threads (THREAD) or on processes (PROCESS).

    The pool starts on first use (or :meth:`start`) and :meth:`stop` releases it; a later
    ``submit`` starts a new one. Use it as a context manager to stop it for sure.

    In PROCESS mode the callable must be a module-level function: ``submit`` and ``map`` raise
    :class:`UnpicklableTaskError` at once for a lambda or a nested function, instead of
    reporting a failure later. Coroutine functions are accepted in every mode (they run to
    completion with their own event loop on the worker).
    """

    def __init__(
        self,
        mode: ExecutionMode | str = ExecutionMode.SEQUENTIAL,
        max_workers: int = 4,
        *,
        max_retained: int = 100_000,
    ) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers}")
        if max_retained < 1:
            raise ValueError(f"max_retained must be >= 1, got {max_retained}")
        self.mode = ExecutionMode(mode)
        self.max_workers = max_workers
        self.max_retained = max_retained
        self._pool: ThreadPool | ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        # task id -> a pool handle, or a finished TaskResult (SEQUENTIAL)
        self._tasks: dict[str, Handle | TaskResult[Any]] = {}
        self._submitted = 0
        self._evicted = 0
        self._picklable: dict[Any, bool] = {}

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> Self:
        """Create the pool now (otherwise the first ``submit`` does). Idempotent."""
        self._ensure_pool()
        return self

    def stop(self, wait: bool = True) -> None:
        """Release the pool. ``wait=False`` cancels queued tasks (they report CANCELLED)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if isinstance(pool, ThreadPool):
            pool.shutdown(wait=wait)
        elif pool is not None:
            pool.shutdown(wait=wait, cancel_futures=not wait)

    def __del__(self) -> None:
        # Forgotten without stop(): let the worker threads finish the queued work, then exit.
        # At interpreter exit module globals may already be gone: duck-type instead of isinstance.
        pool = getattr(self, "_pool", None)
        if pool is not None and getattr(pool, "is_eventforge_pool", False):
            pool.shutdown(wait=False, cancel_pending=False)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop(wait=True)

    def _ensure_pool(self) -> ThreadPool | ProcessPoolExecutor | None:
        pool = self._pool
        if pool is not None or self.mode is ExecutionMode.SEQUENTIAL:
            return pool
        with self._lock:
            if self._pool is None:
                if self.mode is ExecutionMode.THREAD:
                    self._pool = ThreadPool(self.max_workers, call)
                else:
                    self._pool = ProcessPoolExecutor(self.max_workers)
            return self._pool

    # -- submit / result --------------------------------------------------------------------

    @overload
    def submit(
        self, func: Callable[P, Coroutine[Any, Any, R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> TaskId[R]: ...

    @overload
    def submit(self, func: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> TaskId[R]: ...

    def submit(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> TaskId[Any]:
        """Start ``func(*args, **kwargs)``; return its task id (SEQUENTIAL: run it now)."""
        task_id: TaskId[Any] = new_id()  # type: ignore[assignment]  # a str, typed (no call)
        if self.mode is ExecutionMode.SEQUENTIAL:
            if is_coroutine_function(func):
                outcome = call(run_coroutine_function, (func, *args), kwargs)
            else:
                outcome = call(func, args, kwargs)
            self._retain(task_id, from_outcome(task_id, outcome))
            return task_id
        pool = self._pool or self._ensure_pool()
        assert pool is not None
        if is_coroutine_function(func):
            args = (func, *args)
            func = run_coroutine_function
        tasks = self._tasks
        if isinstance(pool, ThreadPool):
            tasks[task_id] = pool.submit(func, args, kwargs)
        else:
            self._check_picklable(func)
            tasks[task_id] = pool.submit(call, func, args, kwargs)
        self._submitted += 1
        if len(tasks) > self.max_retained:
            self._evict()
        return task_id

    def _retain(self, task_id: str, entry: Handle | TaskResult[Any]) -> None:
        tasks = self._tasks
        tasks[task_id] = entry
        self._submitted += 1
        if len(tasks) > self.max_retained:
            self._evict()

    def _evict(self) -> None:
        tasks = self._tasks
        if len(tasks) > self.max_retained:
            with self._lock:
                while len(tasks) > self.max_retained:
                    try:
                        del tasks[next(iter(tasks))]
                    except (KeyError, StopIteration, RuntimeError):
                        continue
                    self._evicted += 1

    @overload
    def result(self, task_id: TaskId[R], timeout: float | None = None) -> TaskResult[R]: ...

    @overload
    def result(self, task_id: str, timeout: float | None = None) -> TaskResult[Any]: ...

    def result(self, task_id: str, timeout: float | None = None) -> TaskResult[Any]:
        """Wait up to ``timeout`` seconds for the task's :class:`TaskResult`.

        The result is released once returned. On TIMEOUT the task is kept (still running) so that
        ``result`` can be asked again. Raises :class:`TaskNotFound` for an unknown id.
        """
        entry = self._tasks.pop(task_id, None)
        if entry is None:
            raise TaskNotFound(task_id)
        if isinstance(entry, TaskResult):
            return entry
        if isinstance(entry, Job):
            if not entry.wait(timeout):
                self._tasks[task_id] = entry
                return TaskResult(task_id, TaskStatus.TIMEOUT)
            outcome = entry.outcome
            if outcome is None:
                return TaskResult(task_id, TaskStatus.CANCELLED)
            ok, value, elapsed = outcome
            if ok:
                return TaskResult(task_id, TaskStatus.SUCCESS, value, None, elapsed)
            return TaskResult(task_id, TaskStatus.FAILED, None, value, elapsed)
        try:
            ok, value, elapsed = entry.result(timeout)
        except FutureTimeout:
            self._tasks[task_id] = entry
            return TaskResult(task_id, TaskStatus.TIMEOUT)
        except BaseException:
            # The pool failed (unpicklable arguments, a dead worker) or the task was cancelled.
            return from_future(task_id, entry)
        if ok:
            return TaskResult(task_id, TaskStatus.SUCCESS, value, None, elapsed)
        return TaskResult(task_id, TaskStatus.FAILED, None, value, elapsed)

    def status(self, task_id: str) -> TaskStatus:
        """The current status of a retained task, without waiting or releasing it."""
        entry = self._tasks.get(task_id)
        if entry is None:
            raise TaskNotFound(task_id)
        if isinstance(entry, TaskResult):
            return entry.status
        return pending_result(task_id, entry, False).status

    def cancel(self, task_id: str) -> bool:
        """Cancel a task that has not started yet; return whether it was cancelled."""
        entry = self._tasks.get(task_id)
        if entry is None:
            raise TaskNotFound(task_id)
        return not isinstance(entry, TaskResult) and entry.cancel()

    # -- map ---------------------------------------------------------------------------------

    def map(
        self, func: Callable[..., Any], items: Iterable[Any], timeout: float | None = None
    ) -> list[TaskResult[Any]]:
        """Run ``func(item)`` for every item; return the results in item order.

        ``timeout`` bounds the whole call: items not finished by then report TIMEOUT (PROCESS
        mode sends items in chunks of ``ceil(len / (max_workers * 4))``, so a chunk that is not
        done reports TIMEOUT for each of its items). Nothing is retained.
        """
        items = list(items)
        if self.mode is ExecutionMode.SEQUENTIAL:
            return [self._inline(func, item) for item in items]
        futures, sizes = self._map_submit(func, items)
        if sizes:
            wait_futures(futures, timeout=timeout)
        else:
            wait_all(futures, timeout)
        return self._map_collect(futures, sizes, timed_out=timeout is not None)

    async def map_async(
        self, func: Callable[..., Any], items: Iterable[Any], timeout: float | None = None
    ) -> list[TaskResult[Any]]:
        """The awaitable twin of :meth:`map` (SEQUENTIAL awaits coroutine functions inline)."""
        items = list(items)
        if self.mode is ExecutionMode.SEQUENTIAL:
            return [await self._inline_async(func, (item,), {}) for item in items]
        futures, sizes = self._map_submit(func, items)
        if futures:
            await asyncio.wait([awaitable(f) for f in futures], timeout=timeout)
        return self._map_collect(futures, sizes, timed_out=timeout is not None)

    def _inline(self, func: Callable[..., Any], item: Any) -> TaskResult[Any]:
        if inspect.iscoroutinefunction(func):
            return from_outcome(new_id(), call(run_coroutine_function, (func, item), {}))
        return from_outcome(new_id(), call(func, (item,), {}))

    def _map_submit(
        self, func: Callable[..., Any], items: list[Any]
    ) -> tuple[list[Any], list[int]]:
        """Jobs (THREAD, one per item, ``sizes`` empty) or chunk futures (PROCESS, with sizes)."""
        pool = self._pool or self._ensure_pool()
        assert pool is not None
        if inspect.iscoroutinefunction(func):
            func = Partial(run_coroutine_function, func)
        if isinstance(pool, ThreadPool):
            return [pool.submit(func, (item,), {}) for item in items], []
        self._check_picklable(func)
        size = max(1, math.ceil(len(items) / (self.max_workers * 4)))
        chunks = [items[i : i + size] for i in range(0, len(items), size)]
        return [pool.submit(call_chunk, func, chunk) for chunk in chunks], [len(c) for c in chunks]

    def _map_collect(
        self, futures: list[Any], sizes: list[int], *, timed_out: bool
    ) -> list[TaskResult[Any]]:
        if not sizes:  # one future per item
            return [pending_result(new_id(), f, timed_out) for f in futures]
        results: list[TaskResult[Any]] = []
        for future, size in zip(futures, sizes, strict=True):
            if future.done() and not future.cancelled() and future.exception() is None:
                results.extend(from_outcome(new_id(), o) for o in future.result())
            else:
                results.extend(pending_result(new_id(), future, timed_out) for _ in range(size))
        return results

    # -- async twins -------------------------------------------------------------------------

    @overload
    async def submit_async(
        self, func: Callable[P, Coroutine[Any, Any, R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> TaskId[R]: ...

    @overload
    async def submit_async(
        self, func: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> TaskId[R]: ...

    async def submit_async(
        self, func: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> TaskId[Any]:
        """The awaitable twin of :meth:`submit`.

        SEQUENTIAL awaits a coroutine function inline on the running loop (a plain function
        runs inline, as in :meth:`submit`); the pool modes only hand the work over.
        """
        if self.mode is not ExecutionMode.SEQUENTIAL:
            return self.submit(func, *args, **kwargs)
        task_id: TaskId[Any] = new_id()  # type: ignore[assignment]  # a str, typed (no call)
        result = await self._inline_async(func, args, kwargs, task_id)
        self._retain(task_id, result)
        return task_id

    async def _inline_async(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        task_id: str | None = None,
    ) -> TaskResult[Any]:
        task_id = task_id or new_id()
        if not inspect.iscoroutinefunction(func):
            return from_outcome(task_id, call(func, args, kwargs))
        start = _perf()
        try:
            value = await func(*args, **kwargs)
        except Exception as exc:
            return TaskResult(task_id, TaskStatus.FAILED, None, exc, _perf() - start)
        return TaskResult(task_id, TaskStatus.SUCCESS, value, None, _perf() - start)

    @overload
    async def result_async(
        self, task_id: TaskId[R], timeout: float | None = None
    ) -> TaskResult[R]: ...

    @overload
    async def result_async(self, task_id: str, timeout: float | None = None) -> TaskResult[Any]: ...

    async def result_async(self, task_id: str, timeout: float | None = None) -> TaskResult[Any]:
        """The awaitable twin of :meth:`result`; the running loop is never blocked."""
        entry = self._tasks.pop(task_id, None)
        if entry is None:
            raise TaskNotFound(task_id)
        if isinstance(entry, TaskResult):
            return entry
        if not entry.done():
            try:
                await asyncio.wait([awaitable(entry)], timeout=timeout)
            except asyncio.CancelledError:
                # The caller gave up (``wait_for``, a cancelled task): the task still runs and
                # its result stays fetchable, as after a TIMEOUT.
                self._tasks[task_id] = entry
                raise
            if not entry.done():
                self._tasks[task_id] = entry
                return TaskResult(task_id, TaskStatus.TIMEOUT)
        return from_future(task_id, entry)

    # -- introspection -----------------------------------------------------------------------

    @property
    def stats(self) -> dict[str, Any]:
        """Counters: ``submitted`` tasks, ``retained`` unfetched results, ``evicted`` ones."""
        return {
            "mode": self.mode.value,
            "max_workers": self.max_workers,
            "submitted": self._submitted,
            "retained": len(self._tasks),
            "evicted": self._evicted,
            "max_retained": self.max_retained,
            "running": self._pool is not None,
        }

    def _check_picklable(self, func: Callable[..., Any]) -> None:
        try:
            if self._picklable.get(func):
                return
        except TypeError:  # unhashable callable: check every time
            pass
        try:
            pickle.dumps(func)
        except Exception as exc:
            raise UnpicklableTaskError(func, exc) from exc
        try:
            if len(self._picklable) < 1024:
                self._picklable[func] = True
        except TypeError:
            pass

    def __repr__(self) -> str:
        return f"Executor(mode={self.mode.name}, max_workers={self.max_workers})"
