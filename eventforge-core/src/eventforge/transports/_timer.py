"""Messages held until their due time, then sent: the in-process side of ``publish(delay=)``.

One daemon thread per transport, started on the first delayed send, sleeps on a condition until
the earliest due time (a heap keeps them in order; equal times keep their order of arrival) and
then sends through the transport's own ``send``. Closing the transport drops what is still
held and counts it.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

from eventforge.message import Message

__all__ = ["DelayedSends"]

log = logging.getLogger("eventforge.transports.memory")


class DelayedSends:
    """A heap of ``(due, message)`` and the thread that sends each one when it is due."""

    def __init__(self, name: str, send: Callable[[Message], None]) -> None:
        self._name = name
        self._send = send
        self._heap: list[tuple[float, int, Message]] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.sent = 0
        self.dropped = 0

    @property
    def pending(self) -> int:
        """Messages held, not yet due."""
        return len(self._heap)

    def add(self, message: Message, due: float) -> None:
        """Hold ``message`` until ``due`` (Unix time), then send it."""
        with self._cond:
            if self._closed:
                self.dropped += 1
                return
            heapq.heappush(self._heap, (due, next(self._order), message))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify()

    def close(self) -> None:
        """Stop the thread; messages still held are dropped and counted."""
        with self._cond:
            self._closed = True
            self.dropped += len(self._heap)
            self._heap.clear()
            self._cond.notify()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (not self._heap or self._heap[0][0] > time.time()):
                    wait = self._heap[0][0] - time.time() if self._heap else None
                    self._cond.wait(wait)
                if self._closed:
                    return
                _, _, message = heapq.heappop(self._heap)
            try:
                self._send(message)
                self.sent += 1
            except Exception:
                self.dropped += 1
                log.exception("a delayed message on %r could not be sent", message.topic)
