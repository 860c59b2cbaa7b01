"""Requests and their replies, through direct reply-to, on a channel of their own.

A request is published with ``reply_to = amq.rabbitmq.reply-to`` and ``mandatory`` on the
``request`` channel, which consumes that pseudo-queue (no queue is declared per call; RabbitMQ
wants the publish and the consumer on one channel). The channel has no publisher confirms:
the caller waits for whichever comes first,

* the reply, matched to its request by correlation id (a late or unknown one is dropped), or
* the broker's ``basic.return`` of the request (no queue bound for its topic), which the
  broker sends before anything else about that publish: the request raises
  :class:`~eventforge.errors.NoRespondersError` at once,

so a request costs one trip to the responder and back, not a confirm round trip first.

A blocking :meth:`Requests.request` waits on a lock that the reply's consumer (on the loop)
releases: one hop to the loop to publish and one back, no coroutine or future per call.
"""

from __future__ import annotations

import _thread
import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiormq.abc
from eventforge.errors import TransportClosedError, TransportError
from eventforge.wire import WireCodec

from . import _codec
from ._channel import direct_consumer, publish_payload, write_frames, write_frames_async
from ._connection import Link
from ._topology import REPLY_TO

__all__ = ["RETURNED", "Requests"]

log = logging.getLogger("eventforge.transports.amqp")

RETURNED = object()
"""The outcome of a request the broker returned (no queue bound for its topic)."""

Item = tuple[str, str, bytes, Any]


class _Waiter:
    """One request waiting: a lock (blocking callers) or a future (coroutines)."""

    __slots__ = ("future", "lock", "outcome")

    def __init__(self, future: asyncio.Future[None] | None = None) -> None:
        self.future = future
        self.lock = None
        if future is None:
            self.lock = _thread.allocate_lock()
            self.lock.acquire()
        self.outcome: Any = None

    def settle(self, outcome: Any) -> None:
        """Hand ``outcome`` to the waiting caller (on the loop; the first outcome wins)."""
        if self.outcome is not None:
            return
        self.outcome = outcome
        if self.future is not None:
            if not self.future.done():
                self.future.set_result(None)
        elif self.lock is not None:
            self.lock.release()


class Requests:
    """The requests of one transport waiting for a reply, and the channel they go out on."""

    def __init__(
        self,
        link: Link,
        codec: WireCodec,
        decode_failed: Callable[[BaseException, str], None],
        outbox_idle: Callable[[], bool],
        wait_drained: Callable[[], Awaitable[None]],
    ) -> None:
        self._link = link
        self._loop = link.loop
        self._codec = codec
        self._decode_failed = decode_failed
        self._outbox_idle = outbox_idle
        self._wait_drained = wait_drained
        self._slot = link.slot("request", confirms=False)
        self._slot.hooks.append(self._on_channel)
        self._waiting: dict[str, _Waiter] = {}
        self._closed = False

    def __len__(self) -> int:
        return len(self._waiting)

    async def _on_channel(self, channel: aiormq.abc.AbstractChannel) -> None:
        """The request channel was (re)opened: take returns and consume replies on it."""
        channel.on_return_callbacks.add(self._on_return)
        await channel.basic_consume(REPLY_TO, direct_consumer(self._on_reply), no_ack=True)

    # -- asking --------------------------------------------------------------------------

    def request(self, item: Item, correlation: str, timeout: float) -> Any:
        """Publish ``item`` and block for its outcome: the reply, :data:`RETURNED`, or
        ``None`` after ``timeout`` (not on the link's loop)."""
        channel = self._slot.channel
        if channel is None or channel.is_closed:
            # The wait for the channel counts against the request's timeout.
            started = time.monotonic()
            self._link.run(self._slot.get(timeout), timeout)
            timeout = max(0.0, timeout - (time.monotonic() - started))
        waiter = _Waiter()
        waiting = self._waiting
        waiting[correlation] = waiter
        try:
            if self._closed:
                raise TransportClosedError("the AMQP transport is closed; create a new one")
            self._loop.call_soon_threadsafe(self._publish, item, waiter, timeout)
            assert waiter.lock is not None
            waiter.lock.acquire(timeout=max(0.0, timeout))
        finally:
            waiting.pop(correlation, None)
        return self._outcome(waiter)

    async def request_async(self, item: Item, correlation: str, timeout: float) -> Any:
        """:meth:`request` for a coroutine on the link's loop."""
        started = time.monotonic()
        await self._slot.get(timeout)
        timeout = max(0.0, timeout - (time.monotonic() - started))
        waiter = _Waiter(self._loop.create_future())
        waiting = self._waiting
        waiting[correlation] = waiter
        try:
            if self._closed:
                raise TransportClosedError("the AMQP transport is closed; create a new one")
            self._publish(item, waiter, timeout)
            assert waiter.future is not None
            try:
                await asyncio.wait_for(waiter.future, max(0.0, timeout))
            except asyncio.TimeoutError:
                pass
        finally:
            waiting.pop(correlation, None)
        return self._outcome(waiter)

    @staticmethod
    def _outcome(waiter: _Waiter) -> Any:
        outcome = waiter.outcome
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def _publish(self, item: Item, waiter: _Waiter, timeout: float) -> None:
        """Write the request (on the loop): at once when nothing sent earlier is still queued
        and the channel is open, else after them."""
        channel = self._slot.channel
        if channel is None or channel.is_closed or not self._outbox_idle():
            self._link.spawn(self._publish_later(item, waiter, timeout))
            return
        try:
            frames = publish_payload(channel, *item, mandatory=True)
        except Exception as exc:
            waiter.settle(exc)
            return
        if not write_frames(channel, frames):
            self._link.spawn(self._publish_later(item, waiter, timeout, frames))

    async def _publish_later(
        self, item: Item, waiter: _Waiter, timeout: float, frames: bytes | None = None
    ) -> None:
        try:
            if frames is None:
                await self._wait_drained()  # keep the order of earlier sends
            channel = await self._slot.get(timeout)
            # Framed for the channel it goes on: the one it was framed for may have closed and
            # its number been given to another.
            frames = publish_payload(channel, *item, mandatory=True)
            if not await write_frames_async(channel, frames):
                raise TransportError(
                    "the AMQP request channel closed before the request was sent; it was not "
                    "sent, retry the call"
                )
        except Exception as exc:
            waiter.settle(exc)

    # -- answers (on the loop) -----------------------------------------------------------

    def _on_reply(self, delivered: aiormq.abc.DeliveredMessage) -> None:
        try:
            message = _codec.decode_delivered(self._codec, delivered)
        except Exception as exc:
            self._decode_failed(exc, "a reply")
            return
        waiter = self._waiting.get(message.correlation_id or "")
        if waiter is None:
            log.debug("dropped a late reply %s", message.id)
            return
        waiter.settle(message)

    def _on_return(self, returned: aiormq.abc.DeliveredMessage) -> None:
        correlation = returned.header.properties.correlation_id
        waiter = self._waiting.get(correlation or "")
        if waiter is not None:
            waiter.settle(RETURNED)

    def cancel_all(self) -> None:
        """Wake every waiting request with :class:`TransportClosedError` (the transport closes)."""
        self._closed = True
        error = TransportClosedError("the AMQP transport was closed while the request waited")
        for waiter in list(self._waiting.values()):
            waiter.settle(error)
