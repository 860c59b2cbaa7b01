"""A transport's delivery thread: the one bounded hand-over from I/O to callbacks.

Messages arrive on an I/O thread or event loop; subscription callbacks are plain functions that
may block (a handler that sleeps, or that makes a synchronous request). So the I/O side only
hands the raw message to this thread, which decodes it and calls the callback, in arrival
order. The hand-over queue is bounded: when a slow callback lets it fill up, new messages are
dropped and counted, never queued without limit. Public as
:class:`eventforge.transport.DeliveryThread`.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["DeliveryThread"]

log = logging.getLogger("eventforge.transport")

_STOP = object()


class DeliveryThread:
    """One daemon thread running ``handler(*item)`` for each queued item, in order."""

    def __init__(self, name: str, handler: Callable[..., None], max_pending: int) -> None:
        self._handler = handler
        self._max_pending = max_pending
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self.dropped = 0

    def put(self, item: tuple[Any, ...]) -> bool:
        """Queue ``item``; return ``False`` (and count a drop) when the queue is full."""
        if self._queue.qsize() >= self._max_pending:
            self.dropped += 1
            return False
        self._queue.put(item)
        return True

    def depth(self) -> int:
        """Items waiting right now."""
        return self._queue.qsize()

    def in_thread(self) -> bool:
        """Tell whether the caller is the delivery thread itself."""
        return threading.current_thread() is self._thread

    def _run(self) -> None:
        get = self._queue.get
        handler = self._handler
        while True:
            item = get()
            if item is _STOP:
                return
            try:
                handler(*item)
            except Exception:  # the handler counts callback errors; this is a last resort
                log.exception("delivery on thread %s failed", self._thread.name)

    def stop(self, timeout: float = 5.0) -> None:
        """Deliver what is queued, then end the thread (no wait from the thread itself)."""
        self._queue.put(_STOP)
        if not self.in_thread():
            self._thread.join(timeout)
