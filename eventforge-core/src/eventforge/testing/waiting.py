"""Polling for a condition that another thread or process makes true.

Tests of a transport or queue wait for effects that happen elsewhere: a delivery on a
transport's thread, a counter a broker updates. :func:`wait_until` polls for such a condition
and reports whether it came about; the test asserts on the result, never on how long it took,
so a slow or busy machine only makes a passing test slower. No pytest import: usable from
plain scripts and from helper modules alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["wait_until"]


def wait_until(
    predicate: Callable[[], object], timeout: float = 10.0, *, interval: float = 0.005
) -> bool:
    """Call ``predicate`` every ``interval`` seconds until it returns something true.

    Returns ``True`` as soon as it does, or ``False`` when ``timeout`` seconds pass first
    (``predicate`` is asked once more at the deadline, so a condition that became true while
    the caller slept still counts). ``timeout`` is a watchdog against a stuck system, not a
    measure: keep it generous (the default, ten seconds, suits a busy CI machine) and write
    ``assert wait_until(...)``. Exceptions from ``predicate`` propagate.
    """
    if timeout < 0 or interval <= 0:
        raise ValueError(
            f"wait_until needs timeout >= 0 and interval > 0 (seconds); got timeout={timeout!r}, "
            f"interval={interval!r}"
        )
    deadline = time.monotonic() + timeout
    while not predicate():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return bool(predicate())
        time.sleep(min(interval, remaining))
    return True
