"""When a client tries to reconnect: along the kit's :class:`~eventforge.transport.Backoff`.

The first attempt comes ``reconnect_delay`` after the link dropped; each failure doubles the
wait up to ``reconnect_max_delay``, lengthened by a little jitter so that many clients of one
server that restarted do not come back in lock-step. The attempts themselves are made by the
client's I/O thread on its housekeeping pass (:meth:`ReconnectSchedule.due`).
"""

from __future__ import annotations

from eventforge.transport import Backoff

__all__ = ["ReconnectSchedule"]


class ReconnectSchedule:
    """The next reconnect time of one client, and how long its link has been down."""

    __slots__ = ("attempts", "backoff", "down_since", "next_at")

    def __init__(self, backoff: Backoff) -> None:
        self.backoff = backoff
        self.attempts = 0  # failed attempts since the link dropped
        self.next_at = 0.0
        self.down_since: float | None = None

    def lost(self, now: float) -> None:
        """The link dropped at ``now``: the first attempt is one initial delay away."""
        self.attempts = 0
        self.down_since = now
        self.next_at = now + self.backoff.delay(1)

    def due(self, now: float) -> bool:
        """Tell whether an attempt is due at ``now``."""
        return now >= self.next_at

    def failed(self, now: float) -> int:
        """An attempt failed at ``now``: wait longer before the next; return the attempt count."""
        self.attempts += 1
        self.next_at = now + self.backoff.delay(self.attempts + 1)
        return self.attempts

    def restored(self, now: float) -> float:
        """The link is back at ``now``; return how long it was down (seconds)."""
        down = now - self.down_since if self.down_since is not None else 0.0
        self.attempts = 0
        self.down_since = None
        return down
