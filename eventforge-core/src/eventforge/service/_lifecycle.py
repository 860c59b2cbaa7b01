"""Running a service until a signal, and describing it in one line."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Collection, Iterable
from types import FrameType
from typing import Any

__all__ = ["run_until_stopped", "summary"]

log = logging.getLogger("eventforge.service")


def run_until_stopped(
    name: str,
    start: Callable[[], None],
    stop: Callable[[], None],
    stop_requested: threading.Event,
    *,
    install_signals: bool = True,
    on_ready: Callable[[], Any] | None = None,
) -> None:
    """Start, call ``on_ready``, wait for SIGTERM / SIGINT or ``stop_requested``, then stop.

    Signal handlers are installed only on the main thread, and the previous ones are put back.
    """
    previous: dict[signal.Signals, Any] = {}
    if install_signals and threading.current_thread() is threading.main_thread():

        def on_signal(signum: int, frame: FrameType | None) -> None:
            log.info("service %r: signal %d, draining", name, signum)
            stop_requested.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        start()
        if on_ready is not None:
            on_ready()
        while not stop_requested.wait(0.5):
            pass
    finally:
        stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def summary(
    subscribers: Collection[Any],
    rpc: Iterable[str],
    consumers: Iterable[Any],
    schedules: Iterable[Any],
) -> str:
    """``"2 subscriptions; rpc billing; consumers jobs; schedules nightly"``."""
    parts = [f"{len(subscribers)} subscriptions"]
    names = list(rpc)
    if names:
        parts.append("rpc " + ",".join(names))
    queues = [c.queue_name for c in consumers]
    if queues:
        parts.append("consumers " + ",".join(queues))
    timers = [s.name for s in schedules]
    if timers:
        parts.append("schedules " + ",".join(timers))
    return "; ".join(parts)
