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
import enum
import inspect
import math
import pickle
import threading
import time
import types
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures import wait as wait_futures
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, cast, overload

from eventforge.errors import EventforgeError
from eventforge.execution._threadpool import Job, ThreadPool, wait_all
from eventforge.message import new_id

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "ExecutionMode",
    "Executor",
    "TaskId",
    "TaskNotFound",
    "TaskResult",
    "TaskStatus",
    "UnpicklableTaskError",
]

_perf = time.perf_counter
R = TypeVar("R")
P = ParamSpec("P")


class ExecutionMode(str, enum.Enum):
    """Where an :class:`Executor` runs the work."""

    SEQUENTIAL = "sequential"
    """Inline, in the caller's thread, at ``submit`` time."""
    THREAD = "thread"
    """On a thread pool: for I/O-bound work."""
    PROCESS = "process"
    """On a process pool: for CPU-bound work (callables and arguments must pickle)."""


class TaskStatus(str, enum.Enum):
    """The state a :class:`TaskResult` reports."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"


class TaskNotFound(EventforgeError, LookupError):
    """``result`` was asked for an id the executor does not hold (unknown, fetched, evicted)."""

    def __init__(self, task_id: str) -> None:
        super().__init__(
            f"no task {task_id!r} in this executor: it was never submitted here, its result was "
            "already fetched (results are released once fetched), or it was evicted because "
            "more than max_retained results were left unfetched"
        )
        self.task_id = task_id


class UnpicklableTaskError(EventforgeError, TypeError):
    """PROCESS mode was given a callable that cannot be sent to a worker process."""

    def __init__(self, func: object, cause: BaseException) -> None:
        name = getattr(func, "__qualname__", repr(func))
        super().__init__(
            f"ExecutionMode.PROCESS cannot send {name!r} to a worker process: it does not pickle "
            f"({type(cause).__name__}: {cause}). Use a function defined at module level (not a "
            "lambda, a nested function or a bound method of an unpicklable object), or use "
            "ExecutionMode.THREAD"
        )
        self.func = func


class TaskId(str, Generic[R]):
    """The type of a task id returned by :meth:`Executor.submit`, for type checkers only.

    It tells them what the task returns, so ``executor.result(task_id)`` is a
    ``TaskResult[R]``. As with ``typing.NewType``, the value at run time is a plain ``str``
    (no wrapper is built per task).
    """

    __slots__ = ()


class TaskResult(Generic[R]):
    """The outcome of one task: ``value`` on success, ``error`` on failure, and a ``status``.

    ``value`` is ``None`` unless the task succeeded; :meth:`unwrap` returns it typed (or raises).
    ``execution_time`` is the seconds the callable ran (measured where it ran; 0.0 when it never
    ran, for instance on TIMEOUT or CANCELLED).
    """

    __slots__ = ("error", "execution_time", "status", "task_id", "value")

    def __init__(
        self,
        task_id: str,
        status: TaskStatus,
        value: R | None = None,
        error: BaseException | None = None,
        execution_time: float = 0.0,
    ) -> None:
        self.task_id = task_id
        self.status = status
        self.value = value
        self.error = error
        self.execution_time = execution_time

    @property
    def ok(self) -> bool:
        """True when the task returned a value."""
        return self.status is TaskStatus.SUCCESS

    def unwrap(self) -> R:
        """Return the value, or raise the task's error (a TimeoutError/CancelledError if none)."""
        if self.status is TaskStatus.SUCCESS:
            return cast(R, self.value)
        if self.error is not None:
            raise self.error
        if self.status is TaskStatus.TIMEOUT:
            raise TimeoutError(f"task {self.task_id} did not finish in time")
        raise CancelledError(f"task {self.task_id} is {self.status.value}")

    def __repr__(self) -> str:
        detail = f"value={self.value!r}" if self.error is None else f"error={self.error!r}"
        return (
            f"TaskResult({self.task_id!r}, {self.status.name}, {detail}, "
            f"execution_time={self.execution_time:.6f})"
        )


# -- what runs in the worker (module level so that PROCESS mode can pickle it) ------------------

_Outcome = tuple[bool, Any, float]


def _call(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Outcome:
    start = _perf()
    try:
        value = func(*args, **kwargs)
    except Exception as exc:
        return (False, exc, _perf() - start)
    return (True, value, _perf() - start)


def _call_chunk(func: Callable[..., Any], items: list[Any]) -> list[_Outcome]:
    return [_call(func, (item,), {}) for item in items]


def _run_coroutine_function(func: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
    async def main() -> Any:
        return await func(*args, **kwargs)

    return asyncio.run(main())


_coroutine_functions: dict[types.CodeType, bool] = {}


def _is_coroutine_function(func: Callable[..., Any]) -> bool:
    """``inspect.iscoroutinefunction``, remembered for functions and methods (a submit-path cost).

    The cache is keyed by code object, not by callable: keying by callable kept every closure
    and every bound method's instance submitted so far alive.
    """
    target: Any = func.__func__ if type(func) is types.MethodType else func
    if type(target) is not types.FunctionType:
        return inspect.iscoroutinefunction(func)
    code = target.__code__
    try:
        return _coroutine_functions[code]
    except KeyError:
        answer = inspect.iscoroutinefunction(func)
        if len(_coroutine_functions) < 4096:
            _coroutine_functions[code] = answer
        return answer


def _from_outcome(task_id: str, outcome: _Outcome) -> TaskResult[Any]:
    ok, value, elapsed = outcome
    if ok:
        return TaskResult(task_id, TaskStatus.SUCCESS, value, None, elapsed)
    return TaskResult(task_id, TaskStatus.FAILED, None, value, elapsed)


_Handle = Future[_Outcome] | Job
"""What a pool hands back: a concurrent future (PROCESS) or a lean job (THREAD)."""


def _from_future(task_id: str, future: _Handle) -> TaskResult[Any]:
    """Build the result of a *done* handle (lazily: only when someone asks)."""
    if future.cancelled():
        return TaskResult(task_id, TaskStatus.CANCELLED)
    if isinstance(future, Job):
        assert future.outcome is not None
        return _from_outcome(task_id, future.outcome)
    error = future.exception()
    if error is not None:
        # The pool itself failed: arguments that did not pickle, a worker process that died.
        return TaskResult(task_id, TaskStatus.FAILED, None, error)
    return _from_outcome(task_id, future.result())


def _pending_result(task_id: str, future: _Handle, timed_out: bool) -> TaskResult[Any]:
    if future.done():
        return _from_future(task_id, future)
    if timed_out:
        return TaskResult(task_id, TaskStatus.TIMEOUT)
    return TaskResult(task_id, TaskStatus.RUNNING if future.running() else TaskStatus.PENDING)


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
        self._tasks: dict[str, _Handle | TaskResult[Any]] = {}
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
                    self._pool = ThreadPool(self.max_workers, _call)
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
            if _is_coroutine_function(func):
                outcome = _call(_run_coroutine_function, (func, *args), kwargs)
            else:
                outcome = _call(func, args, kwargs)
            self._retain(task_id, _from_outcome(task_id, outcome))
            return task_id
        pool = self._pool or self._ensure_pool()
        assert pool is not None
        if _is_coroutine_function(func):
            args = (func, *args)
            func = _run_coroutine_function
        tasks = self._tasks
        if isinstance(pool, ThreadPool):
            tasks[task_id] = pool.submit(func, args, kwargs)
        else:
            self._check_picklable(func)
            tasks[task_id] = pool.submit(_call, func, args, kwargs)
        self._submitted += 1
        if len(tasks) > self.max_retained:
            self._evict()
        return task_id

    def _retain(self, task_id: str, entry: _Handle | TaskResult[Any]) -> None:
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
            return _from_future(task_id, entry)
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
        return _pending_result(task_id, entry, False).status

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
            await asyncio.wait([_awaitable(f) for f in futures], timeout=timeout)
        return self._map_collect(futures, sizes, timed_out=timeout is not None)

    def _inline(self, func: Callable[..., Any], item: Any) -> TaskResult[Any]:
        if inspect.iscoroutinefunction(func):
            return _from_outcome(new_id(), _call(_run_coroutine_function, (func, item), {}))
        return _from_outcome(new_id(), _call(func, (item,), {}))

    def _map_submit(
        self, func: Callable[..., Any], items: list[Any]
    ) -> tuple[list[Any], list[int]]:
        """Jobs (THREAD, one per item, ``sizes`` empty) or chunk futures (PROCESS, with sizes)."""
        pool = self._pool or self._ensure_pool()
        assert pool is not None
        if inspect.iscoroutinefunction(func):
            func = _Partial(_run_coroutine_function, func)
        if isinstance(pool, ThreadPool):
            return [pool.submit(func, (item,), {}) for item in items], []
        self._check_picklable(func)
        size = max(1, math.ceil(len(items) / (self.max_workers * 4)))
        chunks = [items[i : i + size] for i in range(0, len(items), size)]
        return [pool.submit(_call_chunk, func, chunk) for chunk in chunks], [len(c) for c in chunks]

    def _map_collect(
        self, futures: list[Any], sizes: list[int], *, timed_out: bool
    ) -> list[TaskResult[Any]]:
        if not sizes:  # one future per item
            return [_pending_result(new_id(), f, timed_out) for f in futures]
        results: list[TaskResult[Any]] = []
        for future, size in zip(futures, sizes, strict=True):
            if future.done() and not future.cancelled() and future.exception() is None:
                results.extend(_from_outcome(new_id(), o) for o in future.result())
            else:
                results.extend(_pending_result(new_id(), future, timed_out) for _ in range(size))
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
            return _from_outcome(task_id, _call(func, args, kwargs))
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
                await asyncio.wait([_awaitable(entry)], timeout=timeout)
            except asyncio.CancelledError:
                # The caller gave up (``wait_for``, a cancelled task): the task still runs and
                # its result stays fetchable, as after a TIMEOUT.
                self._tasks[task_id] = entry
                raise
            if not entry.done():
                self._tasks[task_id] = entry
                return TaskResult(task_id, TaskStatus.TIMEOUT)
        return _from_future(task_id, entry)

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


class _Partial:
    """A picklable ``partial`` that prepends one argument (keeps ``_call_chunk`` simple)."""

    __slots__ = ("first", "func")

    def __init__(self, func: Callable[..., Any], first: Any) -> None:
        self.func = func
        self.first = first

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(self.first, *args, **kwargs)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Partial, (self.func, self.first))


def _awaitable(handle: _Handle) -> asyncio.Future[Any]:
    """An asyncio future of the running loop that is done when ``handle`` is done."""
    if isinstance(handle, Future):
        return asyncio.wrap_future(handle)
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[Any] = loop.create_future()

    def resolve(_: Job) -> None:
        try:
            loop.call_soon_threadsafe(_set_done, waiter)
        except RuntimeError:  # the loop was closed meanwhile: nobody is waiting any more
            pass

    handle.add_done_callback(resolve)
    return waiter


def _set_done(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_result(None)
