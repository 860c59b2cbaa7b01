"""The batching delivery thread: one hand-over per read, not per message.

An I/O thread that cuts many messages out of one read (a socket read, a stream fetch) hands
them to the callbacks' thread together: one queue operation and at most one thread wake-up
per batch instead of per message, which is most of what a hand-over costs at high rates.
Items run in order, one at a time, as with :class:`~eventforge.transport.DeliveryThread`.

The backlog is bounded in one of two ways:

* ``max_pending=N``: a batch that does not fit is cut, and the items beyond the bound are
  dropped and counted (``dropped``), as :class:`~eventforge.transport.DeliveryThread` does;
* ``max_pending=None``: the producer bounds it by pushing back on its own source: it watches
  :meth:`BatchDeliveryThread.depth`, stops reading when the backlog is too deep, and resumes
  when ``after_batch`` reports that it drained (a TCP transport stops reading its sockets, and
  TCP then slows the senders down). Nothing is dropped.

Public as :class:`eventforge.transport.BatchDeliveryThread`.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any

from eventforge.transport._kit import Counter

__all__ = ["BatchDeliveryThread"]

log = logging.getLogger("eventforge.transport")

_STOP: list[tuple[Any, ...]] = []  # a sentinel batch: compared by identity


class BatchDeliveryThread:
    """One daemon thread running ``handler(*item)`` for each item of each batch, in order.

    With ``handler=None`` each item is a ``(callback, argument)`` pair and the thread calls
    ``callback(argument)``: what a transport hands over (a subscription's callback and its
    message), without a call in between.
    ``after_batch(depth)``, when given, is called on the thread after each batch with the
    number of items still waiting. Counters: :attr:`delivered` and :attr:`errors` (a handler
    that raised: logged, and the next item still runs) are kept by the thread itself;
    :attr:`dropped` counts items refused because the backlog was full.
    """

    def __init__(
        self,
        name: str,
        handler: Callable[..., None] | None,
        max_pending: int | None = None,
        *,
        after_batch: Callable[[int], None] | None = None,
    ) -> None:
        if max_pending is not None and max_pending < 1:
            raise ValueError(f"max_pending must be >= 1 or None, got {max_pending}")
        self._handler = handler
        self._max_pending = max_pending
        self._after_batch = after_batch
        self._queue: queue.SimpleQueue[Sequence[tuple[Any, ...]]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._depth = 0
        self._delivered = 0
        self._errors = 0
        self.dropped = Counter()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def delivered(self) -> int:
        """Items whose handler returned."""
        return self._delivered

    @property
    def errors(self) -> int:
        """Items whose handler raised."""
        return self._errors

    def put(self, item: tuple[Any, ...]) -> bool:
        """Queue one item; return ``False`` (and count a drop) when the backlog is full."""
        return self.put_batch((item,)) == 1

    def put_batch(self, items: Sequence[tuple[Any, ...]]) -> int:
        """Queue ``items`` as one batch; return how many were taken (the rest are dropped).

        The caller must not change ``items`` afterwards (any thread may call this).
        """
        size = len(items)
        if not size:
            return 0
        with self._lock:
            limit = self._max_pending
            if limit is not None and self._depth + size > limit:
                room = max(0, limit - self._depth)
                for _ in range(size - room):
                    self.dropped.bump()
                if not room:
                    return 0
                items, size = items[:room], room
            self._depth += size
        self._queue.put(items)
        return size

    def depth(self) -> int:
        """Items handed over and not yet run (the batch running now included)."""
        return self._depth

    def in_thread(self) -> bool:
        """Tell whether the caller is the delivery thread itself."""
        return threading.current_thread() is self._thread

    def _run(self) -> None:
        get = self._queue.get
        handler = self._handler
        lock = self._lock
        while True:
            batch = get()
            if batch is _STOP:
                return
            errors = 0
            if handler is None:
                for callback, argument in batch:
                    try:
                        callback(argument)
                    except Exception:
                        errors += 1
                        self._log_error()
            else:
                for item in batch:
                    try:
                        handler(*item)
                    except Exception:
                        errors += 1
                        self._log_error()
            size = len(batch)
            self._delivered += size - errors
            self._errors += errors
            with lock:
                self._depth -= size
                depth = self._depth
            if self._after_batch is not None:
                self._after_batch(depth)

    def _log_error(self) -> None:
        log.exception("a callback on delivery thread %s raised", self._thread.name)

    def stop(self, timeout: float = 5.0) -> None:
        """Run what was handed over, then end the thread (no wait from the thread itself)."""
        self._queue.put(_STOP)
        if not self.in_thread():
            self._thread.join(timeout)
