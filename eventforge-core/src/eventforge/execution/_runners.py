"""What runs on a worker thread or process, and how a pool's handle becomes a :class:`TaskResult`.

The callables here are module-level so that PROCESS mode can pickle them by name.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import types
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any

from eventforge.execution._results import TaskResult, TaskStatus
from eventforge.execution._threadpool import Job, Outcome

__all__ = [
    "Handle",
    "Partial",
    "awaitable",
    "call",
    "call_chunk",
    "from_future",
    "from_outcome",
    "is_coroutine_function",
    "pending_result",
    "run_coroutine_function",
]

_perf = time.perf_counter


def call(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Outcome:
    """Run ``func(*args, **kwargs)`` and report its outcome; an ``Exception`` is returned."""
    start = _perf()
    try:
        value = func(*args, **kwargs)
    except Exception as exc:
        return (False, exc, _perf() - start)
    return (True, value, _perf() - start)


def call_chunk(func: Callable[..., Any], items: list[Any]) -> list[Outcome]:
    """:func:`call` ``func(item)`` for each item of a chunk (one PROCESS round trip per chunk)."""
    return [call(func, (item,), {}) for item in items]


def run_coroutine_function(func: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
    """Run a coroutine function to completion on an event loop of its own."""

    async def main() -> Any:
        return await func(*args, **kwargs)

    return asyncio.run(main())


class Partial:
    """A picklable ``partial`` that prepends one argument (keeps :func:`call_chunk` simple)."""

    __slots__ = ("first", "func")

    def __init__(self, func: Callable[..., Any], first: Any) -> None:
        self.func = func
        self.first = first

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(self.first, *args, **kwargs)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Partial, (self.func, self.first))


_coroutine_functions: dict[types.CodeType, bool] = {}


def is_coroutine_function(func: Callable[..., Any]) -> bool:
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


# -- from a pool's handle to a TaskResult ------------------------------------------------------

Handle = Future[Outcome] | Job
"""What a pool hands back: a concurrent future (PROCESS) or a lean job (THREAD)."""


def from_outcome(task_id: str, outcome: Outcome) -> TaskResult[Any]:
    """The result of a callable that ran: SUCCESS with its value or FAILED with its error."""
    ok, value, elapsed = outcome
    if ok:
        return TaskResult(task_id, TaskStatus.SUCCESS, value, None, elapsed)
    return TaskResult(task_id, TaskStatus.FAILED, None, value, elapsed)


def from_future(task_id: str, future: Handle) -> TaskResult[Any]:
    """Build the result of a *done* handle (lazily: only when someone asks)."""
    if future.cancelled():
        return TaskResult(task_id, TaskStatus.CANCELLED)
    if isinstance(future, Job):
        assert future.outcome is not None
        return from_outcome(task_id, future.outcome)
    error = future.exception()
    if error is not None:
        # The pool itself failed: arguments that did not pickle, a worker process that died.
        return TaskResult(task_id, TaskStatus.FAILED, None, error)
    return from_outcome(task_id, future.result())


def pending_result(task_id: str, future: Handle, timed_out: bool) -> TaskResult[Any]:
    """The result of a handle that may not be done: TIMEOUT, RUNNING or PENDING if it is not."""
    if future.done():
        return from_future(task_id, future)
    if timed_out:
        return TaskResult(task_id, TaskStatus.TIMEOUT)
    return TaskResult(task_id, TaskStatus.RUNNING if future.running() else TaskStatus.PENDING)


def awaitable(handle: Handle) -> asyncio.Future[Any]:
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
