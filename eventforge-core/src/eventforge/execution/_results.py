"""What an :class:`~eventforge.execution.Executor` reports: modes, statuses, results, errors."""

from __future__ import annotations

import enum
from concurrent.futures import CancelledError
from typing import Generic, TypeVar, cast

from eventforge.errors import EventforgeError

__all__ = [
    "ExecutionMode",
    "TaskId",
    "TaskNotFound",
    "TaskResult",
    "TaskStatus",
    "UnpicklableTaskError",
]

R = TypeVar("R")


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
