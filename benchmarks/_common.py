"""Pieces every benchmark module shares: the result row and the receiver-process handshake."""

from __future__ import annotations

import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from eventforge.transport import NOT_BEFORE_HEADER

WARM_UP = 200
"""Round trips made and discarded before a latency scenario records its samples."""


def row(
    scenario: str,
    ours: float,
    anchor: str,
    anchor_value: float,
    unit: str,
    goal: str,
    higher_is_better: bool = True,
) -> dict[str, Any]:
    """One result: eventforge's figure beside its anchor's, and ``ratio = ours / anchor``."""
    return {
        "scenario": scenario,
        "eventforge": ours,
        "anchor": anchor,
        "anchor_value": anchor_value,
        "unit": unit,
        "ratio": ours / anchor_value if anchor_value else 0.0,
        "goal": goal,
        "higher_is_better": higher_is_better,
    }


def start_child(code: str, *args: str) -> subprocess.Popen[str]:
    """Run ``code`` in a new interpreter and wait for it to print ``ready``."""
    child = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stdin=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    line = child.stdout.readline().strip()
    if line != "ready":
        child.kill()
        raise RuntimeError(f"benchmark child {args[:1]} failed to start: {line!r}")
    return child


def finish_child(child: subprocess.Popen[str], start: float, n: int) -> float:
    """Wait for the child's ``done`` and return ``n`` per second since ``start``."""
    assert child.stdout is not None
    line = child.stdout.readline().strip()
    elapsed = time.perf_counter() - start
    child.wait(30)
    if line != "done":
        raise RuntimeError(f"benchmark child did not finish: {line!r}")
    return n / elapsed


def percentiles(samples: list[float], scale: float = 1e6) -> tuple[float, float]:
    """p50 and p99 of ``samples`` times ``scale`` (by default seconds in, microseconds out)."""
    ordered = sorted(samples)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return p50 * scale, p99 * scale


def medians(rounds: int, measures: dict[str, Callable[[], Any]]) -> dict[str, Any]:
    """Run every measure once per round, interleaved, and return the median of each.

    Interleaving lets a busy spell of the machine hit every contender alike. A measure that
    returns a tuple (p50, p99) gets the median of each of its fields.
    """
    samples: dict[str, list[Any]] = {k: [] for k in measures}
    for _ in range(rounds):
        for key, measure in measures.items():
            samples[key].append(measure())
    out: dict[str, Any] = {}
    for key, values in samples.items():
        if isinstance(values[0], tuple):
            out[key] = tuple(statistics.median(v[i] for v in values) for i in range(len(values[0])))
        else:
            out[key] = statistics.median(values)
    return out


def delay_error_and_latency(queue: Any, timed: int) -> tuple[float, float, float, float]:
    """On a ``WorkQueue``: p50 and p99 (ms) of delayed items' arrival minus due time (``timed``
    items due 0.5 .. 1.5 s after their put, a consumer waiting), then of a plain put -> get."""
    errors: list[float] = []

    def consume() -> None:
        while len(errors) < timed:
            delivery = queue.get(timeout=10)
            if delivery is None:
                raise RuntimeError(f"only {len(errors)} of {timed} delayed items came")
            errors.append(time.time() - float(delivery.message.headers[NOT_BEFORE_HEADER]))
            delivery.ack()

    consumer = threading.Thread(target=consume)
    consumer.start()
    for i in range(timed):
        queue.put(i, delay=0.5 + i / timed)
    consumer.join(60)
    latencies = []
    for i in range(timed):
        start = time.time()
        queue.put(i)
        delivery = queue.get(timeout=10)
        if delivery is None:
            raise RuntimeError("a plain put did not come back within 10 s")
        latencies.append(time.time() - start)
        delivery.ack()
    return (*percentiles(errors, 1e3), *percentiles(latencies, 1e3))
