"""The outbound queue of a NATS transport: publishes from any thread, written in order.

``send`` only encodes and queues; one task on the connection's loop hands what is queued to
nats-py in order, so a busy publisher is not held up by the loop. While the link is down the
queue and nats-py's own buffer together hold at most ``pending_size`` bytes; beyond that a
publish raises instead of buffering without bound.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading

from eventforge.errors import FrameTooLarge, TransportError
from eventforge.transport import Counter

from ._connection import NatsConnection

__all__ = ["Outbox"]

log = logging.getLogger("eventforge.transports.nats")

MAX_QUEUED = 10_000
"""Publishes queued beyond this make ``send`` wait until the queue is written (back-pressure)."""


class Outbox:
    """Publishes queued by any thread, handed to nats-py in order by one task on the loop."""

    def __init__(self, conn: NatsConnection) -> None:
        self._conn = conn
        self._loop = conn.loop
        self._loop_ident = conn.bg.ident
        self._queue: collections.deque[tuple[str, bytes, str]] = collections.deque()
        self._scheduled = False
        self._task: asyncio.Task[None] | None = None
        self.errors = Counter()

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def overfull(self) -> bool:
        """Whether a publisher should wait for the queue to be written (see :data:`MAX_QUEUED`)."""
        return len(self._queue) > MAX_QUEUED

    def idle_on_loop(self) -> bool:
        """Whether a publish may go straight to nats-py: nothing is queued, the caller is on the
        connection's loop and the link is up."""
        return (
            not self._queue
            and not self._scheduled
            and threading.get_ident() == self._loop_ident
            and self._conn.state == "connected"
        )

    def put(self, subject: str, data: bytes, reply: str = "") -> None:
        """Queue one publish (with a ``reply`` subject for a request); raise when it is too
        large or the reconnect buffer is full."""
        conn = self._conn
        nc = conn.client
        if len(data) > nc.max_payload:
            raise FrameTooLarge(len(data), nc.max_payload)
        if conn.state != "connected":
            pending_size = conn.settings.pending_size
            if nc.pending_data_size + self._queued_bytes() + len(data) > pending_size:
                self.errors.bump()
                raise TransportError(
                    f"NATS is {conn.state} and the outbound buffer is full "
                    f"(pending_size={pending_size} bytes); the message on {subject!r} was not sent"
                )
        self._queue.append((subject, data, reply))
        if not self._scheduled:
            self._scheduled = True
            if threading.get_ident() == self._loop_ident:
                self._loop.call_soon(self._kick)
            else:
                self._loop.call_soon_threadsafe(self._kick)

    async def publish_now(self, subject: str, data: bytes) -> None:
        """Hand one publish to nats-py directly (when :meth:`idle_on_loop`)."""
        nc = self._conn.client
        if len(data) > nc.max_payload:
            raise FrameTooLarge(len(data), nc.max_payload)
        try:
            await nc.publish(subject, data)
        except Exception as exc:
            self.errors.bump()
            raise TransportError(
                f"NATS publish to {subject!r} failed ({type(exc).__name__}: {exc}); "
                "the message was not sent"
            ) from exc
        self._conn.confirmations.published += 1

    def _queued_bytes(self) -> int:
        # Only while the link is down (rare, and bounded by pending_size), so a scan is fine.
        return sum(len(data) for _, data, _ in list(self._queue))

    def _kick(self) -> None:
        task = self._task
        if task is None or task.done():
            self._task = self._loop.create_task(self._write())

    async def _write(self) -> None:
        queue = self._queue
        publish = self._conn.client.publish
        confirmations = self._conn.confirmations
        while True:
            while queue:
                subject, data, reply = queue.popleft()
                try:
                    await publish(subject, data, reply=reply)
                    confirmations.published += 1
                except Exception as exc:
                    count = self.errors.bump() + 1
                    if count in (1, 10, 100) or count % 1000 == 0:
                        log.warning(
                            "NATS publish to %r failed: %r (message dropped; %d so far)",
                            subject,
                            exc,
                            count,
                        )
            self._scheduled = False
            if not queue:
                return
            self._scheduled = True

    async def drained(self) -> None:
        """Return once everything queued so far was handed to nats-py (on the loop)."""
        while self._queue or (self._task is not None and not self._task.done()):
            task = self._task
            if task is None or task.done():
                self._kick()
                task = self._task
            assert task is not None
            await asyncio.shield(task)

    async def flush(self, timeout: float) -> None:
        """Return once the server confirmed everything queued so far (on the loop)."""
        import nats.errors

        await self.drained()
        try:
            await self._conn.confirmations.flush(self._conn.client, timeout)
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise TransportError(
                f"NATS flush failed ({type(exc).__name__}: {exc}); the connection is "
                f"{self._conn.state}: messages sent meanwhile may be lost"
            ) from None
