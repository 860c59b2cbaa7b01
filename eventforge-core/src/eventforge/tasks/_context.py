"""What one task invocation knows (:class:`TaskContext`), and how a body reaches a worker process."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import time
from collections.abc import Callable, Sequence
from typing import Any

from eventforge.message import Message, new_id
from eventforge.tasks._support import SharedState
from eventforge.transport import ATTEMPT_HEADER

__all__ = ["CALL_HEADER", "RESULT_HEADER", "BodyRef", "Callback", "TaskContext", "callbacks"]

Callback = Callable[["TaskContext"], Any]

CALL_HEADER = "x-eventforge-call"
"""A message header: the payload is ``{"args": [...], "kwargs": {...}}`` to unpack."""

RESULT_HEADER = "x-eventforge-result"
"""A message header: the task id under which a worker with a result store keeps the outcome
(``t.send()`` sets it)."""


class TaskContext:
    """Everything known about one invocation; handed to the ``on_*`` callbacks.

    ``trigger`` is ``"call"`` or ``"queue"``; ``message`` and ``attempt`` are set only when a
    message triggered the invocation. ``execution_time`` covers the body (seconds).
    ``task_id`` is unique per invocation; for a task sent with ``t.send()`` it is the id its
    result is stored under.
    """

    __slots__ = (
        "args",
        "attempt",
        "error",
        "execution_time",
        "kwargs",
        "message",
        "result",
        "started_at",
        "state",
        "task_id",
        "task_name",
        "topic",
        "trigger",
    )

    def __init__(
        self,
        task_name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        topic: str,
        state: SharedState,
        message: Message | None = None,
        task_id: str | None = None,
    ) -> None:
        self.task_name = task_name
        self.task_id = task_id or new_id()
        self.args = args
        self.kwargs = kwargs
        self.topic = topic
        self.state = state
        self.message = message
        self.trigger = "queue" if message is not None else "call"
        self.attempt: int | None = (
            None if message is None else int(message.headers.get(ATTEMPT_HEADER, 1))
        )
        self.started_at = time.time()
        self.result: Any = None
        self.error: BaseException | None = None
        self.execution_time = 0.0

    @property
    def succeeded(self) -> bool:
        """True when the body returned."""
        return self.error is None

    def __repr__(self) -> str:
        outcome = f"result={self.result!r}" if self.error is None else f"error={self.error!r}"
        return f"TaskContext({self.task_name!r}, {self.trigger}, {outcome})"


class BodyRef:
    """A picklable reference to a module-level task body, for PROCESS executors.

    The decorated name in the module is the task wrapper, so the body itself does not pickle by
    reference; the worker process looks the wrapper up and calls what it wraps.
    """

    __slots__ = ("module", "qualname")

    def __init__(self, module: str, qualname: str) -> None:
        self.module = module
        self.qualname = qualname

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        target: Any = importlib.import_module(self.module)
        for part in self.qualname.split("."):
            target = getattr(target, part)
        result = getattr(target, "__wrapped__", target)(*args, **kwargs)
        if inspect.iscoroutine(result):  # an ``async def`` task: run it in this worker
            return asyncio.run(result)
        return result

    def __reduce__(self) -> tuple[Any, ...]:
        return (BodyRef, (self.module, self.qualname))


def callbacks(value: Callback | Sequence[Callback] | None) -> tuple[Callback, ...]:
    if value is None:
        return ()
    if callable(value):
        return (value,)
    return tuple(value)
