"""A subscription's own thread: a bounded backlog between the transport and a slow handler."""

from __future__ import annotations

import logging
import queue
import threading

from eventforge.dispatch._invokers import Invoker
from eventforge.message import Message
from eventforge.transport import Counter, nonblocking

__all__ = ["HandlerThread"]

log = logging.getLogger("eventforge.queue")


class HandlerThread:
    """A private thread with a bounded backlog, for a handler that must not delay publishers.

    ``submit`` never blocks: when ``max_pending`` messages are waiting, the new one is dropped
    and counted. Stopping discards the backlog (counted as dropped) and does not wait for a
    handler that is stuck. The backlog is a :class:`queue.SimpleQueue`: a hand-over costs a
    C-level put, not a condition variable's Python-level dance.
    """

    def __init__(
        self,
        invoke: Invoker,
        max_pending: int,
        name: str,
        dropped: Counter,
        on_discard: Invoker | None = None,
    ) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self._invoke = invoke
        self._on_discard = on_discard
        self.max_pending = max_pending
        self._dropped = dropped
        self._items: queue.SimpleQueue[Message | None] = queue.SimpleQueue()
        self._stopped = False
        self._warned = False
        self._busy = 0
        self.handled = 0
        """Messages the handler finished (returned or raised): a health check's sign of progress."""
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Messages waiting for the handler."""
        return 0 if self._stopped else self._items.qsize()

    def load(self) -> int:
        """Messages accepted and not yet handled: the backlog plus the one being handled."""
        return self.pending + self._busy

    @property
    def stopped(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stopped

    @property
    def alive(self) -> bool:
        """Whether the thread still runs (it ends only when stopped)."""
        return self._thread.is_alive()

    @nonblocking
    def submit(self, message: Message) -> None:
        """Queue ``message`` for the handler, or drop and count it when the backlog is full.

        Never waits, so a transport may call it from its I/O thread (see
        :func:`~eventforge.transport.nonblocking`); a discarded message goes to ``on_discard``
        on the calling thread. The bound is exact for one submitting thread and may be passed
        by one message per extra thread submitting at the same instant.
        """
        items = self._items
        if not self._stopped and items.qsize() < self.max_pending:
            items.put(message)
            if self.stopped:
                # stop() ran between the check and the put: discard what it did not see.
                self._drain()
            return
        stopped = self._stopped
        self._discard(message)
        if not self._warned and not stopped:
            self._warned = True
            log.warning(
                "handler backlog on %s is full (%d messages): dropping new messages; raise "
                "max_pending or make the handler faster (drops are counted in stats['dropped'])",
                self._thread.name,
                self.max_pending,
            )

    def _run(self) -> None:
        get = self._items.get
        invoke = self._invoke
        while True:
            message = get()
            if self._stopped or message is None:
                if message is not None:
                    self._discard(message)
                return
            self._busy = 1
            try:
                invoke(message)
            finally:
                self._busy = 0
                self.handled += 1

    def _drain(self) -> None:
        """Discard every queued message (after a stop); keep the thread's stop mark queued."""
        stop_mark = False
        while True:
            try:
                message = self._items.get_nowait()
            except queue.Empty:
                break
            if message is None:
                stop_mark = True
            else:
                self._discard(message)
        if stop_mark:
            self._items.put(None)

    def _discard(self, message: Message) -> None:
        """Count a message that will never be handled, and tell ``on_discard`` about it."""
        self._dropped.bump()
        if self._on_discard is not None:
            try:
                self._on_discard(message)
            except Exception:
                log.exception("on_discard callback failed for a message on %r", message.topic)

    def stop(self, timeout: float = 1.0) -> None:
        """Stop the thread; discard (count, and pass to ``on_discard``) what is still queued.

        Waits up to ``timeout`` seconds for a message being handled to finish.
        """
        self._stopped = True
        self._drain()
        self._items.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def finish(self, timeout: float) -> bool:
        """Handle what is queued, then stop; after ``timeout`` seconds :meth:`stop` discards
        what is left. Returns whether everything queued was handled in time.

        Call it once nothing submits any more (the subscription is gone from the transport).
        """
        if self._stopped or threading.current_thread() is self._thread:
            self.stop(0.0)
            return False
        self._items.put(None)  # the thread ends after what is queued before this mark
        self._thread.join(max(0.0, timeout))
        finished = not self._thread.is_alive()
        self.stop(0.0)
        return finished
