"""A client's offline buffer: frames published while the link is down, sent after the reconnect.

With ``offline="buffer"`` (the default) ``send`` holds what it publishes while the client is
reconnecting, up to ``max_send_buffer`` bytes; when that is full it waits up to
``send_timeout`` seconds for the link to come back and then raises. Frames that were queued
on a link when it dropped, and never left, go back to the front, so the order of one
publisher's messages is kept across the reconnect.

The outbox's :attr:`Outbox.cond` is also what the client holds while it swaps links, so that a
sender sees either the old link down and holds its frame here, or the new link up with every
held frame already queued on it, never a frame left behind.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from eventforge.errors import TransportError

__all__ = ["Outbox"]


class Outbox:
    """Frames held while disconnected, bounded by ``limit`` bytes."""

    def __init__(self, url: str, limit: int, send_timeout: float) -> None:
        self.url = url
        self.limit = limit
        self.send_timeout = send_timeout
        self.cond = threading.Condition(threading.Lock())
        self._frames: list[bytes] = []
        self._size = 0

    def __len__(self) -> int:
        return len(self._frames)

    def hold(self, frame: bytes, link_down: Callable[[], bool], deadline: float) -> bool:
        """Hold ``frame`` while ``link_down()``; ``False`` when the caller should look again.

        Waits a little for room when the buffer is full, and raises :class:`TransportError`
        once ``deadline`` (``time.monotonic()``) passed without room.
        """
        size = len(frame)
        with self.cond:
            if not link_down():
                return False
            if self._size + size <= self.limit:
                self._frames.append(frame)
                self._size += size
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TransportError(
                    f"not connected to {self.url} and the offline buffer ({self.limit} bytes) "
                    f"is full after waiting {self.send_timeout:.1f}s; the message was not sent"
                )
            self.cond.wait(min(remaining, 0.1))
            return False

    def put_back(self, frames: list[bytes]) -> None:
        """Put frames that never left a dropped link in front (caller holds :attr:`cond`)."""
        self._frames[:0] = frames
        self._size += sum(len(f) for f in frames)

    def take(self) -> list[bytes]:
        """Remove and return every held frame, oldest first (caller holds :attr:`cond`)."""
        frames, self._frames, self._size = self._frames, [], 0
        return frames

    def clear(self) -> None:
        """Drop what is held and wake every waiting sender (the client closed)."""
        with self.cond:
            self._frames.clear()
            self._size = 0
            self.cond.notify_all()
