"""Meters: observers that reduce one number per call into a running value.

A :class:`Meter` keeps count, sum, min, max and last of its observations under one lock
(a few arithmetic operations per call), so every reduction is available at any time and
``reduction=`` only chooses which one is the meter's ``value``. Meters implement the observer
protocol (``before`` / ``after`` / ``on_error`` with a :class:`~eventforge.observing.CallEvent`)
and are :class:`~eventforge.observing.Observable`: listeners (a
:class:`~eventforge_observers.reporting.LoggingReporter`, say) receive an ``"observation"``
event per recorded value and a ``"threshold"`` event per alert.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from typing import Any, ClassVar

from eventforge.observing import CallEvent, Observable

__all__ = [
    "REDUCTIONS",
    "CPUMeter",
    "MemoryMeter",
    "Meter",
    "MetricsMeter",
    "TimingMeter",
]

log = logging.getLogger("eventforge.observers")

REDUCTIONS = ("mean", "max", "min", "sum", "last", "count")


class Meter(Observable):
    """Collapses observations into one ``value`` by ``reduction``.

    Use it directly with :meth:`record`, or subclass it and override :meth:`measure` to turn
    an observed call into a number. ``stats`` is ``{"value": ..., "count": ...}``; with no
    observation yet, ``value`` is ``None`` (``0`` for the ``sum`` and ``count`` reductions).
    """

    default_reduction: ClassVar[str] = "mean"

    def __init__(self, reduction: str | None = None, *, name: str | None = None) -> None:
        super().__init__()
        chosen = reduction or self.default_reduction
        if chosen not in REDUCTIONS:
            raise ValueError(
                f"unknown reduction {chosen!r} for {type(self).__name__}; "
                f"choose one of: {', '.join(REDUCTIONS)}"
            )
        self.reduction = chosen
        self.name = name or type(self).__name__
        self._lock = threading.Lock()
        self._count = 0
        self._sum = 0.0
        self._min = math.inf
        self._max = -math.inf
        self._last = 0.0

    # -- recording -------------------------------------------------------------------------

    def record(self, value: float) -> None:
        """Add one observation (thread-safe)."""
        with self._lock:
            self._count += 1
            self._sum += value
            if value < self._min:
                self._min = value
            if value > self._max:
                self._max = value
            self._last = value
        if self._listeners:
            self.emit("observation", {"meter": self.name, "value": value})

    def measure(self, event: CallEvent) -> float | None:
        """The number one finished call contributes, or ``None`` for nothing (override)."""
        return None

    def before(self, event: CallEvent) -> None:
        """Called before the observed call; subclasses stash a starting reading here."""

    def after(self, event: CallEvent) -> None:
        """Called after a call returned: records :meth:`measure`'s number."""
        value = self.measure(event)
        if value is not None:
            self.record(value)

    def on_error(self, event: CallEvent) -> None:
        """Called after a call raised: failed calls are measured like successful ones."""
        self.after(event)

    def reset(self) -> None:
        """Forget every observation."""
        with self._lock:
            self._count = 0
            self._sum = 0.0
            self._min = math.inf
            self._max = -math.inf
            self._last = 0.0

    # -- reading ---------------------------------------------------------------------------

    def _snapshot(self) -> tuple[int, float, float, float, float]:
        with self._lock:
            return self._count, self._sum, self._min, self._max, self._last

    @staticmethod
    def _reduce(reduction: str, count: int, total: float, lo: float, hi: float, last: float) -> Any:
        if reduction == "count":
            return count
        if reduction == "sum":
            return total
        if count == 0:
            return None
        if reduction == "mean":
            return total / count
        if reduction == "max":
            return hi
        if reduction == "min":
            return lo
        return last

    @property
    def count(self) -> int:
        """How many observations were recorded."""
        with self._lock:
            return self._count

    @property
    def value(self) -> Any:
        """The observations reduced by ``reduction``."""
        return self._reduce(self.reduction, *self._snapshot())

    @property
    def stats(self) -> dict[str, Any]:
        """``{"value": ..., "count": ...}`` from one consistent snapshot."""
        snap = self._snapshot()
        return {"value": self._reduce(self.reduction, *snap), "count": snap[0]}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reduction={self.reduction!r}, stats={self.stats})"


class TimingMeter(Meter):
    """Wall-clock seconds per call (reduction ``mean``), with an optional slow-call alert.

    When a call takes longer than ``threshold`` seconds, a warning is logged on the
    ``eventforge.observers`` logger, ``on_threshold(event)`` is called, a ``"threshold"``
    event is emitted and ``alerts`` is incremented.
    """

    default_reduction = "mean"

    def __init__(
        self,
        threshold: float | None = None,
        on_threshold: Callable[[CallEvent], Any] | None = None,
        *,
        reduction: str | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(reduction, name=name)
        if threshold is not None and threshold < 0:
            raise ValueError(f"threshold must be >= 0 seconds (got {threshold})")
        self.threshold = threshold
        self.on_threshold = on_threshold
        self.alerts = 0

    def measure(self, event: CallEvent) -> float | None:
        return event.elapsed

    def after(self, event: CallEvent) -> None:
        elapsed = event.elapsed
        self.record(elapsed)
        threshold = self.threshold
        if threshold is not None and elapsed > threshold:
            self._alert(event, elapsed, threshold)

    def _alert(self, event: CallEvent, elapsed: float, threshold: float) -> None:
        with self._lock:
            self.alerts += 1
        log.warning(
            "%s took %.6fs, over the %.6fs threshold",
            event.name,
            elapsed,
            threshold,
            extra={"eventforge_call": event.name, "elapsed": elapsed, "threshold": threshold},
        )
        if self.on_threshold is not None:
            try:
                self.on_threshold(event)
            except Exception:
                log.exception("on_threshold callback of %s raised", self.name)
        if self._listeners:
            self.emit(
                "threshold",
                {
                    "meter": self.name,
                    "call": event.name,
                    "elapsed": elapsed,
                    "threshold": threshold,
                },
            )

    @property
    def stats(self) -> dict[str, Any]:
        """``{'count', 'avg', 'min', 'max', 'total', 'value'}`` in seconds."""
        count, total, lo, hi, last = self._snapshot()
        empty = count == 0
        return {
            "count": count,
            "avg": None if empty else total / count,
            "min": None if empty else lo,
            "max": None if empty else hi,
            "total": total,
            "value": self._reduce(self.reduction, count, total, lo, hi, last),
        }


def _rss_bytes() -> int:
    """The resident set size of this process, in bytes (``/proc`` where there is one)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak if sys.platform == "darwin" else peak * 1024)


class MemoryMeter(Meter):
    """Memory delta per call in bytes (reduction ``max``: the largest growth seen).

    While :mod:`tracemalloc` is tracing, the delta is of Python-allocated memory currently
    traced (precise, per allocation). Otherwise it is the process's resident set size delta
    (read from ``/proc/self/statm``; elsewhere the peak RSS, which only grows): coarse, page
    granular, and shared by every thread.
    """

    default_reduction = "max"

    def __init__(self, reduction: str | None = None, *, name: str | None = None) -> None:
        super().__init__(reduction, name=name)
        self._key = f"eventforge_observers.memory.{id(self)}"

    @staticmethod
    def _reading() -> int:
        if tracemalloc.is_tracing():
            return tracemalloc.get_traced_memory()[0]
        return _rss_bytes()

    def before(self, event: CallEvent) -> None:
        event.context[self._key] = self._reading()

    def measure(self, event: CallEvent) -> float | None:
        start = event.context.get(self._key)
        if start is None:
            return None
        return float(self._reading() - start)


class CPUMeter(Meter):
    """CPU seconds per call (reduction ``mean``).

    Measured as :func:`time.process_time` since the call started (``event.start_cpu``): the
    CPU time of the whole process, so concurrent calls on other threads count too.
    """

    default_reduction = "mean"
    needs_cpu_time = True
    """Asks the observed call to read the CPU clock into ``event.start_cpu``."""

    def measure(self, event: CallEvent) -> float | None:
        return max(0.0, time.process_time() - event.start_cpu)


class MetricsMeter(Meter):
    """Counts calls, successes and failures; with ``extractor``, reduces a number per result.

    ``stats`` is ``{'calls', 'successes', 'failures'}``, plus ``value`` and ``count`` when an
    extractor is given. An extractor that raises or returns a non-number is counted in
    ``extract_errors`` (and logged) instead of breaking the call.
    """

    default_reduction = "mean"

    def __init__(
        self,
        extractor: Callable[[Any], float] | None = None,
        *,
        reduction: str | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(reduction, name=name)
        self.extractor = extractor
        self._calls = 0
        self._failures = 0
        self.extract_errors = 0

    def after(self, event: CallEvent) -> None:
        with self._lock:
            self._calls += 1
        extractor = self.extractor
        if extractor is None:
            return
        try:
            number = extractor(event.result)
            if isinstance(number, bool) or not isinstance(number, (int, float)):
                raise TypeError(f"extractor returned {type(number).__name__}, not a number")
        except Exception:
            with self._lock:
                self.extract_errors += 1
            log.warning(
                "%s: extractor failed on the result of %s", self.name, event.name, exc_info=True
            )
            return
        self.record(float(number))

    def on_error(self, event: CallEvent) -> None:
        with self._lock:
            self._calls += 1
            self._failures += 1

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self._calls = 0
            self._failures = 0
            self.extract_errors = 0

    @property
    def stats(self) -> dict[str, Any]:
        """``{'calls': N, 'successes': S, 'failures': F}`` (plus value/count with an extractor)."""
        with self._lock:
            calls, failures = self._calls, self._failures
            count, total, lo, hi, last = self._count, self._sum, self._min, self._max, self._last
        stats: dict[str, Any] = {
            "calls": calls,
            "successes": calls - failures,
            "failures": failures,
        }
        if self.extractor is not None:
            stats["value"] = self._reduce(self.reduction, count, total, lo, hi, last)
            stats["count"] = count
        return stats
