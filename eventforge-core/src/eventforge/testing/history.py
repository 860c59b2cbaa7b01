"""Delivery history for fault tests, in the style of Jepsen's total-queue checker.

Publishers record each attempt (``invoke``) and its outcome (``ok`` / ``fail`` / ``info`` for
ambiguous); consumers record each delivery. :meth:`History.check` computes the figures every
fault test reports: lost, duplicates, unexpected, recovered, and the fault-window split.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["History", "HistoryReport", "StallWatchdog"]


@dataclass
class HistoryReport:
    """The figures of one fault test (RELIABILITY.md §5.1)."""

    published_ok: int
    published_unknown: int
    published_failed: int
    delivered_unique: int
    delivered_total: int
    lost: int
    lost_outside_fault_window: int
    duplicates: int
    duplicate_effects: int
    unexpected: int
    recovered: int
    detect_s: float | None = None
    recover_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """One line, e.g. ``lost=0 dup=3 unexpected=0 recover_s=1.80``."""
        parts = [
            f"published_ok={self.published_ok}",
            f"unknown={self.published_unknown}",
            f"lost={self.lost}",
            f"lost_outside_window={self.lost_outside_fault_window}",
            f"dup={self.duplicates}",
            f"dup_effects={self.duplicate_effects}",
            f"unexpected={self.unexpected}",
            f"recovered={self.recovered}",
        ]
        if self.detect_s is not None:
            parts.append(f"detect_s={self.detect_s:.2f}")
        if self.recover_s is not None:
            parts.append(f"recover_s={self.recover_s:.2f}")
        parts.extend(f"{k}={v}" for k, v in self.extra.items())
        return " ".join(parts)


class History:
    """Thread-safe record of publishes and deliveries keyed by integer sequence numbers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.attempted: set[int] = set()
        self.ok: dict[int, float] = {}
        self.failed: set[int] = set()
        self.unknown: set[int] = set()
        self.deliveries: dict[int, int] = {}
        self.effects: dict[int, int] = {}
        self.first_delivery: dict[int, float] = {}
        self.fault_start: float | None = None
        self.fault_end: float | None = None
        self.detected_at: float | None = None
        self._progress = time.monotonic()

    # publisher side
    def invoke(self, seq: int) -> None:
        with self._lock:
            self.attempted.add(seq)

    def published(self, seq: int) -> None:
        with self._lock:
            self.ok[seq] = time.monotonic()

    def publish_failed(self, seq: int, *, ambiguous: bool = False) -> None:
        with self._lock:
            (self.unknown if ambiguous else self.failed).add(seq)

    # consumer side
    def delivered(self, seq: int) -> None:
        now = time.monotonic()
        with self._lock:
            count = self.deliveries.get(seq, 0)
            self.deliveries[seq] = count + 1
            if count == 0:
                self.first_delivery[seq] = now
                self._progress = now

    def effect(self, seq: int) -> None:
        """Record a side effect (for idempotency checks: must happen once per seq)."""
        with self._lock:
            self.effects[seq] = self.effects.get(seq, 0) + 1

    # fault window
    def fault_started(self) -> None:
        self.fault_start = time.monotonic()

    def fault_detected(self) -> None:
        if self.detected_at is None:
            self.detected_at = time.monotonic()

    def fault_ended(self) -> None:
        self.fault_end = time.monotonic()

    @property
    def last_progress(self) -> float:
        """Monotonic time of the last new unique delivery."""
        return self._progress

    def unique_delivered(self) -> int:
        with self._lock:
            return len(self.deliveries)

    def check(self) -> HistoryReport:
        """Compute the report; call after a final drain."""
        with self._lock:
            delivered = set(self.deliveries)
            ok = set(self.ok)
            lost_set = ok - delivered
            outside = {
                s
                for s in lost_set
                if self.fault_start is None
                or self.ok[s] < self.fault_start
                or (self.fault_end is not None and self.ok[s] > self.fault_end + 1.0)
            }
            recover_s = None
            if self.fault_end is not None:
                after = [t for t in self.first_delivery.values() if t >= self.fault_end]
                if after:
                    recover_s = min(after) - self.fault_end
            detect_s = None
            if self.fault_start is not None and self.detected_at is not None:
                detect_s = self.detected_at - self.fault_start
            return HistoryReport(
                published_ok=len(ok),
                published_unknown=len(self.unknown),
                published_failed=len(self.failed),
                delivered_unique=len(delivered),
                delivered_total=sum(self.deliveries.values()),
                lost=len(lost_set),
                lost_outside_fault_window=len(outside),
                duplicates=sum(self.deliveries.values()) - len(delivered),
                duplicate_effects=sum(self.effects.values()) - len(self.effects),
                unexpected=len(delivered - self.attempted),
                recovered=len(self.unknown & delivered),
                detect_s=detect_s,
                recover_s=recover_s,
            )


class StallWatchdog:
    """Fails a run that stops making progress: no new unique delivery for ``stall_s`` seconds."""

    def __init__(self, history: History, stall_s: float = 30.0) -> None:
        self.history = history
        self.stall_s = stall_s

    def wait_for(self, count: int, *, what: str = "deliveries") -> None:
        """Block until ``count`` unique deliveries, raising ``AssertionError`` on a stall."""
        while self.history.unique_delivered() < count:
            idle = time.monotonic() - self.history.last_progress
            if idle > self.stall_s:
                raise AssertionError(
                    f"stalled: no new {what} for {idle:.1f}s "
                    f"({self.history.unique_delivered()}/{count} delivered)"
                )
            time.sleep(0.02)
