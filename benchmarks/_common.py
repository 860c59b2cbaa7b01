"""Pieces every benchmark module shares: the result row and the receiver-process handshake."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any


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
