"""The handle of a stored result, and how a ``results=`` setting becomes a store."""

from __future__ import annotations

import threading
import time
from collections.abc import Generator
from typing import Any, Generic, TypeVar, cast

from eventforge.config import connect
from eventforge.errors import (
    ConfigurationError,
    ResultNotFound,
    ResultTimeout,
    TaskFailedError,
)
from eventforge.execution._records import ResultStatus, TaskRecord, decode_record
from eventforge.transport import ResultStore, StoredResult, Transport, check_task_id

__all__ = ["ResultHandle", "resolve_result_store"]

R = TypeVar("R")

_by_url: dict[str, tuple[Transport, ResultStore]] = {}
_by_url_lock = threading.Lock()


def resolve_result_store(results: object, transport: Transport | None) -> ResultStore | None:
    """The store a ``results=`` setting names.

    ``None`` or ``False``: none. ``True``: ``transport``'s own (its ``result_store()``; a
    transport without the ``results`` capability refuses with ``UnsupportedCapabilityError``).
    A URL (``"redis://host"``): the store of a transport connected to it, one per URL and
    process, kept for the life of the process. A :class:`ResultStore`: itself.
    """
    if results is None or results is False:
        return None
    if isinstance(results, ResultStore):
        return results
    if results is True:
        if transport is None:
            raise ConfigurationError(
                "results=True keeps results on the task's queue transport, but the task has no "
                "queue; pass queue=..., or results='redis://...' (a URL) or a ResultStore",
                key="results",
            )
        return transport.result_store()
    if isinstance(results, str):
        with _by_url_lock:
            known = _by_url.get(results)
            if known is None:
                made = connect(results)
                known = _by_url[results] = (made, made.result_store())
        return known[1]
    raise ConfigurationError(
        f"results= takes True (the queue's transport), a URL or a ResultStore, not "
        f"{type(results).__name__}",
        key="results",
    )


class ResultHandle(Generic[R]):
    """The result of one task, kept in a result store: ask for it from any process.

    ``t.send(...)`` returns one; another process makes its own from the id with
    ``t.result(task_id)`` or ``ResultHandle(task_id, store)``. ``status`` reads the current
    state; ``get(timeout)`` (or ``await handle``) waits for the outcome and returns the value,
    or raises :class:`~eventforge.errors.TaskFailedError` when the task raised.
    """

    __slots__ = ("store", "task", "task_id")

    def __init__(self, task_id: str, store: ResultStore, *, task: str = "") -> None:
        self.task_id = check_task_id(task_id)
        self.store = store
        self.task = task

    @property
    def id(self) -> str:
        """The task id (``task_id``)."""
        return self.task_id

    def record(self) -> TaskRecord | None:
        """The stored record now (status, value or error, times, worker), or ``None``."""
        stored = self.store.get(self.task_id)
        return None if stored is None else decode_record(self.task_id, stored)

    @property
    def status(self) -> ResultStatus:
        """The task's state now; ``ResultNotFound`` when the store holds no record of it."""
        record = self.record()
        if record is None:
            raise ResultNotFound(self.task_id, self.store.name)
        return record.status

    def ready(self) -> bool:
        """True once the outcome is stored (``SUCCESS`` or ``FAILURE``)."""
        stored = self.store.get(self.task_id)
        return stored is not None and stored.final

    def get(self, timeout: float | None = None) -> R:
        """Wait up to ``timeout`` seconds (``None``: no limit) for the outcome; return the value.

        Raises :class:`~eventforge.errors.TaskFailedError` when the task raised,
        :class:`~eventforge.errors.ResultTimeout` (a ``TimeoutError``) when it has not finished
        in time, and :class:`~eventforge.errors.ResultNotFound` when the store holds no record.
        The value comes back as the store's JSON gives it (a model or dataclass as a dict).
        """
        _check_timeout(timeout)
        return self._outcome(self.store.wait(self.task_id, timeout), timeout)

    async def get_async(self, timeout: float | None = None) -> R:
        """:meth:`get` without blocking the running event loop; safe to cancel."""
        _check_timeout(timeout)
        return self._outcome(await self.store.wait_async(self.task_id, timeout), timeout)

    def __await__(self) -> Generator[Any, None, R]:
        """``await handle`` is ``await handle.get_async()`` (no time limit)."""
        return self.get_async().__await__()

    def forget(self) -> bool:
        """Delete the stored record now; return whether there was one."""
        return self.store.delete(self.task_id)

    def _outcome(self, stored: StoredResult | None, timeout: float | None) -> R:
        if stored is None:
            raise ResultNotFound(self.task_id, self.store.name)
        record = decode_record(self.task_id, stored)
        if record.status is ResultStatus.SUCCESS:
            return cast(R, record.value)
        if record.status is ResultStatus.FAILURE:
            error = record.error or {}
            raise TaskFailedError(
                task=record.task,
                task_id=self.task_id,
                type_name=error.get("type", "Exception"),
                message=error.get("message", ""),
                traceback_text=error.get("traceback", ""),
                where=error.get("where", ""),
                worker=record.worker,
            )
        raise ResultTimeout(
            _unfinished(record, timeout), task_id=self.task_id, status=record.status.value,
            timeout=timeout,
        )  # fmt: skip

    def __repr__(self) -> str:
        name = f"{self.task!r}, " if self.task else ""
        return f"ResultHandle({name}{self.task_id!r}, store={self.store.name!r})"


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and not timeout >= 0:
        raise ValueError(f"timeout must be None or >= 0 seconds, got {timeout!r}")


def _unfinished(record: TaskRecord, timeout: float | None) -> str:
    waited = f"after {timeout} s" if timeout is not None else "yet"
    name = f"task {record.task!r} (id {record.task_id})"
    if record.status is ResultStatus.RUNNING:
        since = "" if record.started_at is None else f" for {time.time() - record.started_at:.1f} s"
        return (
            f"{name} has not finished {waited}: it is running on worker {record.worker}{since}. "
            "Wait longer (get(timeout=...)), or check the worker"
        )
    return (
        f"{name} has not finished {waited}: it is still pending, no worker has started it. Check "
        "that a worker subscribes the task's topic, and that its @task has results= too "
        "(a worker without a result store runs the task but records nothing)"
    )
