"""Request/reply over plain pub/sub: one private inbox topic per queue, waiters keyed by id.

A request registers a waiter under its correlation id *before* it is sent (an in-process
responder may answer before ``send`` returns), then waits. Whatever happens, the waiter is
removed when the request ends, so timed-out requests leave nothing behind. A reply that finds
no waiter (it came after the timeout, or was never asked for) is dropped and counted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading

from eventforge.message import Message
from eventforge.transport import Counter, nonblocking

__all__ = ["NO_RESPONDERS", "AsyncWaiter", "Inbox", "SyncWaiter"]

log = logging.getLogger("eventforge.queue")

NO_RESPONDERS = Message("_inbox.no-responders", id="no-responders", timestamp=0.0)
"""Offered to a waiter instead of a reply when the transport reports nobody received the request."""


class SyncWaiter:
    """Waits in a thread for one reply. A pre-acquired lock is the cheapest one-shot signal."""

    __slots__ = ("_signal", "reply")

    def __init__(self) -> None:
        self.reply: Message | None = None
        self._signal = threading.Lock()
        self._signal.acquire()

    def offer(self, message: Message | None) -> None:
        """Hand over the reply (``None`` wakes the waiter empty-handed). Called at most once."""
        self.reply = message
        self._signal.release()

    def wait(self, timeout: float | None) -> bool:
        """Block until offered or ``timeout``; return whether an offer arrived."""
        if timeout is None:
            return self._signal.acquire()
        if timeout <= 0:
            return self._signal.acquire(False)
        return self._signal.acquire(True, timeout)


class AsyncWaiter:
    """Waits on an event loop for one reply; offers may come from any thread."""

    __slots__ = ("future", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[Message | None] = loop.create_future()

    def offer(self, message: Message | None) -> None:
        """Hand over the reply from any thread. Called at most once."""
        try:
            self.loop.call_soon_threadsafe(_resolve, self.future, message)
        except RuntimeError:
            log.debug("reply arrived for a request whose event loop has closed")


def _resolve(future: asyncio.Future[Message | None], message: Message | None) -> None:
    if not future.done():
        future.set_result(message)


class Inbox:
    """The pending requests of one queue and the topic their replies come back on."""

    def __init__(self, late_replies: Counter) -> None:
        self.topic = f"_inbox.{os.urandom(8).hex()}"
        self.pending: dict[str, SyncWaiter | AsyncWaiter] = {}
        self.subscription_id: str | None = None
        self._late = late_replies

    @nonblocking
    def deliver(self, message: Message) -> None:
        """Route a reply to its waiter (the transport calls this for the inbox topic).

        It only hands the reply over, so transports may run it on their I/O thread: a request
        made from a handler on the delivery thread then still gets its reply.
        """
        key = message.correlation_id
        waiter = self.pending.pop(key, None) if key is not None else None
        if waiter is None:
            self._late.bump()
            log.debug(
                "dropped a reply on %r with correlation id %r: no request is waiting for it "
                "(it timed out or was never made)",
                message.topic,
                key,
            )
            return
        waiter.offer(message)

    def no_responders(self, key: str) -> None:
        """Wake the request ``key`` with :data:`NO_RESPONDERS` (if it still waits)."""
        waiter = self.pending.pop(key, None)
        if waiter is not None:
            waiter.offer(NO_RESPONDERS)

    def cancel_all(self) -> None:
        """Wake every waiter empty-handed (the queue is closing)."""
        while self.pending:
            try:
                _, waiter = self.pending.popitem()
            except KeyError:
                break
            waiter.offer(None)
