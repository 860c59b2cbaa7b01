"""Counting what a process holds: threads, file descriptors, sockets.

A transport or queue that is closed must give back everything it took. :func:`snapshot`
counts the live threads, the open file descriptors and, among them, the sockets of the calling
process; a test takes one before a create-use-close loop and compares it with one taken after
(:func:`settled_to` waits for stragglers such as a thread that is finishing its last loop).
File descriptors and sockets are read from ``/proc/self/fd``, so they are counted on Linux
only (:data:`PROC_FD_AVAILABLE`); threads are counted everywhere. No pytest import.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from eventforge.testing.waiting import wait_until

__all__ = ["PROC_FD_AVAILABLE", "ResourceCounts", "settled_to", "snapshot"]

_FD_DIR = "/proc/self/fd"
PROC_FD_AVAILABLE = os.path.isdir(_FD_DIR)


@dataclass(frozen=True)
class ResourceCounts:
    """Live threads, open file descriptors and open sockets of this process at one moment."""

    threads: int
    fds: int
    sockets: int

    def exceeds(self, baseline: ResourceCounts) -> bool:
        """Whether any count is above ``baseline``'s (something was not given back)."""
        return (
            self.threads > baseline.threads
            or self.fds > baseline.fds
            or self.sockets > baseline.sockets
        )

    def __str__(self) -> str:
        return f"threads={self.threads} fds={self.fds} sockets={self.sockets}"


def snapshot() -> ResourceCounts:
    """Count this process's threads, file descriptors and sockets (fds: Linux only, else 0)."""
    fds = sockets = 0
    if PROC_FD_AVAILABLE:
        for name in os.listdir(_FD_DIR):
            try:
                target = os.readlink(os.path.join(_FD_DIR, name))
            except OSError:  # closed between listdir and readlink (the listdir fd itself)
                continue
            fds += 1
            sockets += target.startswith("socket:")
    return ResourceCounts(threading.active_count(), fds, sockets)


def settled_to(baseline: ResourceCounts, timeout: float = 10.0) -> ResourceCounts:
    """Wait until no count exceeds ``baseline`` (or ``timeout`` passes); return the last counts.

    Closing returns most resources at once, but a thread may still be finishing its last
    iteration; the test asserts on the returned counts (``not counts.exceeds(baseline)``).
    """
    last: list[ResourceCounts] = []

    def given_back() -> bool:
        last[:] = [snapshot()]
        return not last[0].exceeds(baseline)

    wait_until(given_back, timeout, interval=0.02)
    return last[0]
