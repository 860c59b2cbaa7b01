"""The in-process result store of the memory transport: a dictionary and a condition."""

from __future__ import annotations

import threading
import time

from eventforge.errors import TransportClosedError
from eventforge.transport import ResultStore, StoredResult, check_result_ttl, check_task_id

__all__ = ["MemoryResultStore"]

_SWEEP_EVERY = 1024
"""Expired records are dropped once this many writes were made since the last sweep."""


class MemoryResultStore(ResultStore):
    """Results in this process's memory: lost with it, seen by no other process.

    A waiter wakes the moment a final record is written (no polling). Expiry is exact: a record
    reads as absent from its ``ttl`` on.
    """

    name = "memory"

    def __init__(self) -> None:
        self._records: dict[str, tuple[bytes, bool, float]] = {}
        self._changed = threading.Condition()
        self._writes = 0
        self._closed = False

    def put(self, task_id: str, data: bytes, *, ttl: float, final: bool) -> bool:
        check_task_id(task_id)
        ttl = check_result_ttl(ttl)
        now = time.monotonic()
        with self._changed:
            self._check_open()
            current = self._records.get(task_id)
            if current is not None and current[1] and current[2] > now:
                return False
            self._records[task_id] = (bytes(data), final, now + ttl)
            self._writes += 1
            if self._writes >= _SWEEP_EVERY:
                self._writes = 0
                for key in [k for k, r in self._records.items() if r[2] <= now]:
                    del self._records[key]
            if final:
                self._changed.notify_all()
            return True

    def get(self, task_id: str) -> StoredResult | None:
        with self._changed:
            self._check_open()
            return self._read(task_id, time.monotonic())

    def _read(self, task_id: str, now: float) -> StoredResult | None:
        record = self._records.get(task_id)
        if record is None or record[2] <= now:
            return None
        return StoredResult(record[0], record[1])

    def delete(self, task_id: str) -> bool:
        with self._changed:
            self._check_open()
            record = self._records.pop(task_id, None)
            return record is not None and record[2] > time.monotonic()

    def wait(self, task_id: str, timeout: float | None) -> StoredResult | None:
        """Wait for a final record; woken by the write itself."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while True:
                self._check_open()
                now = time.monotonic()
                record = self._read(task_id, now)
                if record is not None and record.final:
                    return record
                if deadline is not None and now >= deadline:
                    return record
                self._changed.wait(None if deadline is None else deadline - now)

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._records.clear()
            self._changed.notify_all()

    def _check_open(self) -> None:
        if self._closed:
            raise TransportClosedError("the memory result store is closed with its transport")

    def __repr__(self) -> str:
        return f"MemoryResultStore({len(self._records)} records)"
