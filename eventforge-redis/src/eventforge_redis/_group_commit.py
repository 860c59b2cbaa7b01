"""Group commit: concurrent synchronous calls share one round trip, none returns early.

Every caller queues its item and then either becomes the *leader* (nobody is sending right
now), sends everything queued in one pipeline and hands each waiter its own result, or waits
for a leader to do that. A lone caller leads at once and sends just its own item, so a single
thread pays no hand-off; many threads calling together pay about one round trip per batch.
Each call still returns only after Redis answered for its item.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["GroupCommit"]

T = TypeVar("T")

_MAX_BATCH = 500


class _Slot(Generic[T]):
    __slots__ = ("done", "item", "result")

    def __init__(self, item: T) -> None:
        self.item = item
        self.done = False
        self.result: Any = None


class GroupCommit(Generic[T]):
    """``submit(item)`` returns ``send([items])[i]`` for its item, or raises what it holds."""

    def __init__(self, send: Callable[[list[T]], list[Any]]) -> None:
        self._send = send
        self._queue: list[_Slot[T]] = []
        self._cond = threading.Condition()
        self._leading = False

    def submit(self, item: T) -> Any:
        slot = _Slot(item)
        with self._cond:
            self._queue.append(slot)
        while True:
            with self._cond:
                while not slot.done and self._leading:
                    self._cond.wait()
                if slot.done:
                    return self._outcome(slot)
                self._leading = True
                batch = self._queue[:_MAX_BATCH]
                del self._queue[:_MAX_BATCH]
            try:
                try:
                    results = self._send([s.item for s in batch])
                except BaseException as exc:
                    results = [exc] * len(batch)
                for s, result in zip(batch, results, strict=True):
                    s.result = result
                    s.done = True
            finally:
                with self._cond:
                    self._leading = False
                    self._cond.notify_all()

    @staticmethod
    def _outcome(slot: _Slot[T]) -> Any:
        if isinstance(slot.result, BaseException):
            raise slot.result
        return slot.result
