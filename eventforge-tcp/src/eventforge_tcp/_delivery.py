"""The delivery thread: subscription callbacks run here, never on the I/O thread.

The I/O thread hands over one batch per read, so a busy connection costs one hand-off per
read, not per message. A callback that raises is logged and counted; the next one still runs.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable

from eventforge.message import Message
from eventforge.transport import Callback, nonblocking

__all__ = ["Delivery", "DeliveryThread", "Waiter"]

log = logging.getLogger("eventforge.transports.tcp")

Delivery = tuple[Callback, Message]


class DeliveryThread:
    """A thread that runs batches of ``(callback, message)`` in order.

    ``after_batch(pending)`` is called on the delivery thread after each batch with the number
    of deliveries still waiting, so the transport can resume reading once a backlog drained.
    """

    def __init__(self, name: str, after_batch: Callable[[int], None]) -> None:
        self._name = name
        self._after_batch = after_batch
        self._queue: queue.SimpleQueue[list[Delivery] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pending = 0
        self._thread: threading.Thread | None = None
        self.delivered = 0
        self.callback_errors = 0

    @property
    def pending(self) -> int:
        """Deliveries handed over and not yet run."""
        return self._pending

    def start(self) -> None:
        """Start the thread."""
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def put(self, batch: list[Delivery]) -> None:
        """Hand ``batch`` over (any thread may call it)."""
        if not batch:
            return
        with self._lock:
            self._pending += len(batch)
        self._queue.put(batch)

    def stop(self, timeout: float = 5.0) -> None:
        """Run what was handed over, then stop (no wait when called from the thread itself)."""
        self._queue.put(None)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        get = self._queue.get
        while True:
            batch = get()
            if batch is None:
                return
            errors = 0
            for callback, message in batch:
                try:
                    callback(message)
                except Exception:
                    errors += 1
                    log.exception("subscription callback raised for topic %r", message.topic)
            self.delivered += len(batch) - errors
            self.callback_errors += errors
            with self._lock:
                self._pending -= len(batch)
                pending = self._pending
            self._after_batch(pending)


@nonblocking
class Waiter:
    """A subscription callback that keeps the first message it gets (for ``receive``)."""

    __slots__ = ("_first", "event", "future", "loop", "message")

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.message: Message | None = None
        self.event = threading.Event()
        self.loop = loop
        self.future: asyncio.Future[Message] | None = loop.create_future() if loop else None
        self._first = threading.Lock()  # taken by the first message; later ones are ignored

    def __call__(self, message: Message) -> None:
        # The I/O thread and a publisher's thread may call at the same time.
        if not self._first.acquire(False):
            return
        self.message = message
        self.event.set()
        if self.loop is not None and self.future is not None:
            self.loop.call_soon_threadsafe(_resolve, self.future, message)


def _resolve(future: asyncio.Future[Message], message: Message) -> None:
    if not future.done():
        future.set_result(message)
