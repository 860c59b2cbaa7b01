"""What both supervisors keep about their connection: its state and the counters ``stats`` shows.

:class:`~eventforge.transport.Supervisor` (asyncio) and
:class:`~eventforge.transport.ThreadSupervisor` (a thread) run the same loop on different
machinery; the record of what happened is this one class.
"""

from __future__ import annotations

import time
from typing import Any

from eventforge.transport._kit import Counter

__all__ = ["ConnectionRecord"]


class ConnectionRecord:
    """State, connects, reconnects, disconnects, failed attempts and time spent down."""

    def __init__(self) -> None:
        self.state = "new"
        self.last_error: BaseException | None = None
        self.connects = Counter()
        self.reconnects = Counter()
        self.disconnects = Counter()
        self.failed_attempts = Counter()
        self._down_since: float | None = None
        self.downtime = 0.0
        self.last_recovery: float | None = None

    def _went_down(self) -> None:
        """The connection is gone: time runs down from now."""
        self._down_since = time.monotonic()

    def _came_back(self) -> None:
        """A reconnect succeeded: count it and how long the connection was down."""
        self.reconnects.bump()
        self.connects.bump()
        if self._down_since is not None:
            self.last_recovery = time.monotonic() - self._down_since
            self.downtime += self.last_recovery
            self._down_since = None

    def stats(self) -> dict[str, Any]:
        """Counters: state, connects, reconnects, disconnects, failed attempts, time down."""
        down = self.downtime
        if self._down_since is not None:
            down += time.monotonic() - self._down_since
        return {
            "state": self.state,
            "connects": self.connects.value,
            "reconnects": self.reconnects.value,
            "disconnects": self.disconnects.value,
            "failed_connect_attempts": self.failed_attempts.value,
            "downtime": round(down, 3),
            "last_recovery": self.last_recovery,
            "last_error": None if self.last_error is None else repr(self.last_error),
        }
