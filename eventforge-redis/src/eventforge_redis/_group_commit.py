"""Group commit: concurrent synchronous calls share one round trip, none returns early.

Every caller queues its item. A caller that finds nobody sending becomes the *leader*: it
sends everything queued in one pipeline, hands each waiter its own result, and passes the
lead to the first caller that queued meanwhile. The others wait on a lock of their own, so
a finished batch wakes exactly its callers and the next leader, nobody else. A lone caller
leads at once and sends just its own item: a single thread pays no hand-off, and many
threads calling together pay about one round trip per batch. Each call still returns only
after Redis answered for its item.
"""

from __future__ import annotations

import _thread
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["GroupCommit"]

T = TypeVar("T")

_MAX_BATCH = 500


class _Slot(Generic[T]):
    __slots__ = ("item", "lead", "lock", "result")

    def __init__(self, item: T) -> None:
        self.item = item
        self.lock = _thread.allocate_lock()
        self.lock.acquire()
        self.lead = False
        self.result: Any = None


class GroupCommit(Generic[T]):
    """``submit(item)`` returns ``send([items])[i]`` for its item, or raises what it holds."""

    def __init__(self, send: Callable[[list[T]], list[Any]]) -> None:
        self._send = send
        self._queue: list[_Slot[T]] = []
        self._mutex = threading.Lock()
        self._leading = False

    def submit(self, item: T) -> Any:
        slot = _Slot(item)
        with self._mutex:
            self._queue.append(slot)
            follow = self._leading
            self._leading = True
        if follow:
            slot.lock.acquire()  # released with this item's result, or to lead the next batch
            if not slot.lead:
                return self._outcome(slot)
        # Leading: this slot is first in the queue (a new leader found it empty; a handed-on
        # lead goes to the first slot queued), so the batch always holds it.
        with self._mutex:
            batch = self._queue[:_MAX_BATCH]
            del self._queue[:_MAX_BATCH]
        try:
            results = self._send([s.item for s in batch])
        except BaseException as exc:
            results = [exc] * len(batch)
        for s, result in zip(batch, results, strict=True):
            s.result = result
        successor: _Slot[T] | None = None
        with self._mutex:
            if self._queue:
                first = self._queue[0]
                first.lead = True
                successor = first
            else:
                self._leading = False
        for s in batch:
            if s is not slot:
                s.lock.release()
        if successor is not None:
            successor.lock.release()
        return self._outcome(slot)

    @staticmethod
    def _outcome(slot: _Slot[T]) -> Any:
        if isinstance(slot.result, BaseException):
            raise slot.result
        return slot.result
