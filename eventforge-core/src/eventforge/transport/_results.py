"""The result-store contract: task results kept by task id, with a time to live.

The lowest layer of stored results: :mod:`eventforge.execution` (the handle users hold) and
every backend build on it. A store keeps opaque bytes per task id; the layers above decide what
the bytes mean. Each record is either *open* (pending, running: later writes replace it) or
*final* (an outcome: nothing replaces it until it expires), which is what lets every process
that holds a handle see one outcome, whatever was written after it.
"""

from __future__ import annotations

import asyncio
import re
import time
from abc import ABC, abstractmethod
from typing import NamedTuple

__all__ = ["ResultStore", "StoredResult", "check_result_ttl", "check_task_id"]

_TASK_ID = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")


def check_task_id(task_id: str) -> str:
    """Return ``task_id`` when every store can keep it as a key, else raise ``ValueError``.

    A task id is 1 to 200 letters, digits, ``-``, ``_`` and single dots between them: what
    Redis, NATS KV (a subject token), SQL and SQLite all accept as a key.
    :func:`eventforge.message.new_id` makes such ids.
    """
    if not isinstance(task_id, str) or len(task_id) > 200 or not _TASK_ID.fullmatch(task_id):
        raise ValueError(
            f"invalid task id {task_id!r}: use 1 to 200 letters, digits, '-', '_' and single "
            "dots between them, such as the ids t.send() returns"
        )
    return task_id


def check_result_ttl(ttl: float) -> float:
    """Return ``ttl`` (seconds a record is kept) when it is a positive number, else raise."""
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
        raise ValueError(f"a result's ttl must be a number of seconds > 0, got {ttl!r}")
    return float(ttl)


class StoredResult(NamedTuple):
    """One record as a store holds it: the bytes, and whether they are a final outcome."""

    data: bytes
    final: bool


class ResultStore(ABC):
    """Where task results live, by task id; shared by every process that uses the same broker.

    Thread-safe. ``put`` returns once the record is stored (readable by every client of the
    store). A record expires ``ttl`` seconds after its last accepted write (backends state their
    precision); an expired record reads as absent and may be written again.
    """

    name: str = "results"
    poll_interval: float = 0.05
    """The longest pause of the default :meth:`wait` between two reads."""

    @abstractmethod
    def put(self, task_id: str, data: bytes, *, ttl: float, final: bool) -> bool:
        """Store ``data`` for ``task_id`` for ``ttl`` seconds; return whether it was stored.

        An open record (``final=False``) or no record is replaced; a final record that has not
        expired is kept, and ``put`` returns ``False`` without changing it. The check and the
        write are one atomic step on the broker: of two concurrent final writes, one wins.
        """

    @abstractmethod
    def get(self, task_id: str) -> StoredResult | None:
        """The current record of ``task_id``, or ``None`` (never written, expired, deleted)."""

    @abstractmethod
    def delete(self, task_id: str) -> bool:
        """Remove the record of ``task_id``; return whether there was one."""

    def wait(self, task_id: str, timeout: float | None) -> StoredResult | None:
        """Wait up to ``timeout`` seconds (``None``: no limit) for a final record.

        Returns the final record as soon as it is read, else, when the time is up, the latest
        record read (open, or ``None``). The default reads every few milliseconds at first and
        then every :attr:`poll_interval`; a backend that can be told of writes overrides it.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.002
        while True:
            record = self.get(task_id)
            if record is not None and record.final:
                return record
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return record
                pause = min(pause, left)
            time.sleep(pause)
            pause = min(pause * 2, self.poll_interval)

    async def wait_async(self, task_id: str, timeout: float | None) -> StoredResult | None:
        """:meth:`wait` without blocking the running loop; safe to cancel.

        The default reads with :meth:`get` on a worker thread, pausing on the loop in between.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.002
        while True:
            record = await asyncio.to_thread(self.get, task_id)
            if record is not None and record.final:
                return record
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return record
                pause = min(pause, left)
            await asyncio.sleep(pause)
            pause = min(pause * 2, self.poll_interval)

    def close(self) -> None:
        """Release what the store holds of its own (the transport's connection stays). Idempotent."""
