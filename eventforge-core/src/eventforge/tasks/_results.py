"""Stored results of ``@task``: what the sender writes first and what the worker writes after.

``t.send(...)`` stores a *pending* record under a new task id, then publishes the call with the
id in :data:`RESULT_HEADER`. A worker whose ``@task`` has a result store writes *running* when
the body starts (after its ``max_instances`` slot is taken) and the outcome when it ends, before
any callback runs. A store that fails is logged; the task itself runs on regardless.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from eventforge.execution import (
    DEFAULT_RESULT_TTL,
    ResultHandle,
    ResultStatus,
    TaskRecord,
    record_outcome,
    record_status,
    resolve_result_store,
    worker_name,
)
from eventforge.message import new_id
from eventforge.queue import MessageQueue
from eventforge.tasks._context import CALL_HEADER, RESULT_HEADER, TaskContext
from eventforge.topics import has_wildcards
from eventforge.transport import ResultStore, check_result_ttl, check_task_id

__all__ = ["ResultKeeper", "send_task", "send_task_async"]

log = logging.getLogger("eventforge.tasks")


def _topic_of(name: str, topic: str) -> str:
    if has_wildcards(topic):
        raise ValueError(
            f"task {name!r} subscribes the pattern {topic!r}; publish to a concrete topic with "
            "queue.publish instead"
        )
    return topic


def _pending(name: str) -> tuple[str, TaskRecord]:
    task_id = new_id()
    return task_id, TaskRecord(task_id, name, ResultStatus.PENDING, sent_at=time.time())


def _store(results: Any, queue: MessageQueue) -> ResultStore:
    store = resolve_result_store(results, queue.transport)
    if store is None:
        raise ValueError(
            "sending a task for its result needs a result store: pass results=True (the "
            "queue's transport), a URL or a ResultStore"
        )
    return store


def _headers(task_id: str) -> dict[str, Any]:
    return {CALL_HEADER: True, RESULT_HEADER: task_id}


def _call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    return {"args": list(args), "kwargs": kwargs}


def send_task(
    queue: MessageQueue,
    topic: str,
    args: tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
    *,
    results: Any = True,
    result_ttl: float = DEFAULT_RESULT_TTL,
    name: str | None = None,
) -> ResultHandle[Any]:
    """Trigger the task on ``topic`` with these arguments and return the handle of its result.

    For a process that does not define the task (a client): the worker's ``@task`` must keep
    results in the same store. ``results`` is as for ``@task`` (``True``: the queue's
    transport); the pending record is stored before the call is published, and removed again
    when publishing fails.
    """
    store = _store(results, queue)
    ttl = check_result_ttl(result_ttl)
    label = name or topic
    task_id, record = _pending(label)
    record_status(store, record, ttl)
    try:
        queue.publish(
            _topic_of(label, topic),
            _call(args, kwargs or {}),
            **_headers(task_id),
        )
    except BaseException:
        store.delete(task_id)
        raise
    return ResultHandle(task_id, store, task=label)


async def send_task_async(
    queue: MessageQueue,
    topic: str,
    args: tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
    *,
    results: Any = True,
    result_ttl: float = DEFAULT_RESULT_TTL,
    name: str | None = None,
) -> ResultHandle[Any]:
    """:func:`send_task` without blocking the running event loop."""
    store = _store(results, queue)
    ttl = check_result_ttl(result_ttl)
    label = name or topic
    task_id, record = _pending(label)
    await asyncio.to_thread(record_status, store, record, ttl)
    try:
        await queue.publish_async(
            _topic_of(label, topic),
            _call(args, kwargs or {}),
            **_headers(task_id),
        )
    except BaseException:
        await asyncio.to_thread(store.delete, task_id)
        raise
    return ResultHandle(task_id, store, task=label)


class ResultKeeper:
    """The result store of one ``@task`` and the records its worker side writes."""

    __slots__ = ("name", "store", "ttl")

    def __init__(self, name: str, store: ResultStore, ttl: float) -> None:
        self.name = name
        self.store = store
        self.ttl = check_result_ttl(ttl)

    def claim(self, ctx: TaskContext) -> bool:
        """Tell whether ``ctx``'s outcome is to be stored (its message came from ``send``), and
        make its ``task_id`` the id the sender holds."""
        message = ctx.message
        value = None if message is None else message.headers.get(RESULT_HEADER)
        if value is None:
            return False
        try:
            ctx.task_id = check_task_id(str(value))
        except ValueError as exc:
            log.warning("task %r: not storing the result of a message: %s", self.name, exc)
            return False
        return True

    def running(self, ctx: TaskContext) -> None:
        """Store that ``ctx`` runs (an open record: its outcome replaces it)."""
        sent_at = ctx.message.timestamp if ctx.message is not None else None
        record = TaskRecord(
            ctx.task_id, self.name, ResultStatus.RUNNING, sent_at=sent_at,
            started_at=time.time(), worker=worker_name(),
        )  # fmt: skip
        try:
            record_status(self.store, record, self.ttl)
        except Exception:
            log.exception("task %r: storing that %s runs failed", self.name, ctx.task_id)

    def outcome(self, ctx: TaskContext) -> None:
        """Store the outcome of ``ctx`` (its result or its error), final."""
        try:
            record_outcome(
                self.store, ctx.task_id, self.name, self.ttl,
                value=ctx.result, error=ctx.error,
                sent_at=ctx.message.timestamp if ctx.message is not None else None,
                started_at=ctx.started_at,
            )  # fmt: skip
        except Exception as exc:
            log.exception("task %r: storing the outcome of %s failed", self.name, ctx.task_id)
            self._outcome_failed(ctx, exc)

    def _outcome_failed(self, ctx: TaskContext, exc: Exception) -> None:
        """Store, in place of an outcome the store refused, a failure that says so (so that
        nobody waits for it until the record expires); when that fails too, log it."""
        try:
            record_outcome(self.store, ctx.task_id, self.name, self.ttl,
                           error=RuntimeError(f"storing the task's outcome failed: {exc!r}"))  # fmt: skip
        except Exception:
            log.warning("task %r: %s stays unfinished in the result store", self.name, ctx.task_id)

    async def running_async(self, ctx: TaskContext) -> None:
        await asyncio.to_thread(self.running, ctx)

    async def outcome_async(self, ctx: TaskContext) -> None:
        await asyncio.to_thread(self.outcome, ctx)
