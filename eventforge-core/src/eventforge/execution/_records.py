"""What a result store holds for one task: its status, its value or its failure, as bytes.

A record is a wire envelope (:class:`~eventforge.wire.WireCodec`, JSON) whose payload is a
small dictionary, so a record is readable by any process, with any of the stores, and is
decoded as untrusted input like every message.
"""

from __future__ import annotations

import enum
import os
import socket
import time
import traceback
from typing import Any

from eventforge.errors import EventforgeError, ProtocolError
from eventforge.message import Message
from eventforge.transport import ResultStore, StoredResult
from eventforge.wire import WireCodec

__all__ = [
    "DEFAULT_RESULT_TTL",
    "ResultStatus",
    "TaskRecord",
    "decode_record",
    "encode_record",
    "record_outcome",
    "record_status",
    "worker_name",
]


DEFAULT_RESULT_TTL = 86_400.0
"""Seconds a stored result is kept after its last write, unless ``result_ttl`` says otherwise."""

_TOPIC = "eventforge.results"
_CODEC = WireCodec()
_TRACEBACK_FRAMES = 12
_TRACEBACK_CHARS = 8_000


def worker_name() -> str:
    """``host:pid`` of this process (recomputed in a forked child)."""
    return f"{socket.gethostname()}:{os.getpid()}"


class ResultStatus(str, enum.Enum):
    """Where a task with a stored result is: each process holding its handle sees the same."""

    PENDING = "pending"
    """Sent; no worker has started it yet."""
    RUNNING = "running"
    """A worker runs it."""
    SUCCESS = "success"
    """It returned; the value is stored. Final."""
    FAILURE = "failure"
    """It raised; the error and a traceback summary are stored. Final."""

    @property
    def final(self) -> bool:
        """True for an outcome (``SUCCESS``, ``FAILURE``): nothing replaces it."""
        return self in (ResultStatus.SUCCESS, ResultStatus.FAILURE)


class TaskRecord:
    """One task's record, decoded: ``status``, and ``value`` or the failure's details.

    ``error`` is ``{"type", "message", "where", "traceback"}`` on ``FAILURE``, else ``None``.
    Times are Unix seconds from the writer's clock; ``worker`` is ``host:pid`` of the process
    that ran the task (empty while pending).
    """

    __slots__ = (
        "error",
        "finished_at",
        "sent_at",
        "started_at",
        "status",
        "task",
        "task_id",
        "value",
        "worker",
    )

    def __init__(
        self,
        task_id: str,
        task: str,
        status: ResultStatus,
        *,
        value: Any = None,
        error: dict[str, str] | None = None,
        sent_at: float | None = None,
        started_at: float | None = None,
        finished_at: float | None = None,
        worker: str = "",
    ) -> None:
        self.task_id = task_id
        self.task = task
        self.status = status
        self.value = value
        self.error = error
        self.sent_at = sent_at
        self.started_at = started_at
        self.finished_at = finished_at
        self.worker = worker

    def __repr__(self) -> str:
        detail = f"error={self.error['type']}" if self.error else f"value={self.value!r}"
        return f"TaskRecord({self.task!r}, {self.task_id!r}, {self.status.value}, {detail})"


def encode_record(record: TaskRecord) -> bytes:
    """The bytes a store keeps for ``record`` (raises ``SerializationError`` for a value that
    cannot be encoded, ``FrameTooLarge`` beyond 1 MiB)."""
    payload = {
        "task": record.task,
        "status": record.status.value,
        "value": record.value,
        "error": record.error,
        "sent_at": record.sent_at,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "worker": record.worker,
    }
    return _CODEC.encode(Message(_TOPIC, payload, id=record.task_id, timestamp=time.time()))


def decode_record(task_id: str, stored: StoredResult) -> TaskRecord:
    """The record in ``stored``; ``ProtocolError`` when the bytes are not a task record."""
    message = _CODEC.decode(stored.data)
    body = message.payload
    try:
        status = ResultStatus(body["status"])
        error = body.get("error")
        return TaskRecord(
            task_id,
            str(body["task"]),
            status,
            value=body.get("value"),
            error={str(k): str(v) for k, v in error.items()} if isinstance(error, dict) else None,
            sent_at=body.get("sent_at"),
            started_at=body.get("started_at"),
            finished_at=body.get("finished_at"),
            worker=str(body.get("worker") or ""),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ProtocolError(
            f"the stored result of task id {task_id!r} is not a task record ({exc!r}); "
            "something else wrote that key of the result store"
        ) from None


def error_summary(error: BaseException) -> dict[str, str]:
    """The failure details stored for ``error``: type, message, where, and its last frames."""
    frames = traceback.extract_tb(error.__traceback__)
    where = f"{frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name}" if frames else ""
    text = "".join(
        traceback.format_exception(
            type(error), error, error.__traceback__, limit=-_TRACEBACK_FRAMES
        )
    )
    if len(text) > _TRACEBACK_CHARS:
        text = "...\n" + text[-_TRACEBACK_CHARS:]
    return {"type": type(error).__name__, "message": str(error), "where": where, "traceback": text}


def record_status(
    store: ResultStore,
    record: TaskRecord,
    ttl: float,
) -> bool:
    """Store an open record (pending or running); return whether the store took it."""
    return store.put(record.task_id, encode_record(record), ttl=ttl, final=False)


def record_outcome(
    store: ResultStore,
    task_id: str,
    task: str,
    ttl: float,
    *,
    value: Any = None,
    error: BaseException | None = None,
    sent_at: float | None = None,
    started_at: float | None = None,
) -> bool:
    """Store the final record of a task: ``value``, or the failure ``error``.

    A value that cannot be stored (it does not encode, or is too large) is stored as a failure
    that says so, so that nobody waits for a result that will never come. Returns whether the
    store took the record (``False``: an outcome was already stored).
    """
    status = ResultStatus.SUCCESS if error is None else ResultStatus.FAILURE
    record = TaskRecord(
        task_id,
        task,
        status,
        value=value if error is None else None,
        error=None if error is None else error_summary(error),
        sent_at=sent_at,
        started_at=started_at,
        finished_at=time.time(),
        worker=worker_name(),
    )
    try:
        data = encode_record(record)
    except EventforgeError as exc:
        record.status = ResultStatus.FAILURE
        record.value = None
        record.error = {
            "type": type(exc).__name__,
            "message": f"the task returned a value that cannot be stored: {exc}",
            "where": "",
            "traceback": "",
        }
        data = encode_record(record)
    return store.put(task_id, data, ttl=ttl, final=True)
