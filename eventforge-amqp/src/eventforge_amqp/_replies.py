"""Replies to this transport's requests, through direct reply-to.

Requests are published with ``reply_to = amq.rabbitmq.reply-to`` on the confirm channel, which
consumes that pseudo-queue (no queue is declared per call). A reply is matched to its waiting
request by correlation id; a late or unknown one is dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import aiormq.abc
from eventforge.message import Message
from eventforge.wire import WireCodec

from . import _codec
from ._topology import REPLY_TO

__all__ = ["Replies"]

log = logging.getLogger("eventforge.transports.amqp")


class Replies:
    """The requests waiting for a reply, and the reply consumer of the confirm channel."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        codec: WireCodec,
        decode_failed: Callable[[BaseException, str], None],
    ) -> None:
        self._loop = loop
        self._codec = codec
        self._decode_failed = decode_failed
        self._waiting: dict[str, asyncio.Future[Message]] = {}
        self._consuming = False

    def __len__(self) -> int:
        return len(self._waiting)

    async def on_channel(self, channel: aiormq.abc.AbstractChannel) -> None:
        """The confirm channel was (re)opened: consume replies again if any are awaited."""
        self._consuming = False
        if self._waiting:
            await self.consume(channel)

    async def consume(self, channel: aiormq.abc.AbstractChannel) -> None:
        """Consume the replies on ``channel`` (once per channel)."""
        if not self._consuming:
            await channel.basic_consume(REPLY_TO, self._on_reply, no_ack=True)
            self._consuming = True

    def expect(self, correlation: str) -> asyncio.Future[Message]:
        """A future for the reply with ``correlation``; :meth:`forget` it when done."""
        future: asyncio.Future[Message] = self._loop.create_future()
        self._waiting[correlation] = future
        return future

    def forget(self, correlation: str) -> None:
        self._waiting.pop(correlation, None)

    def cancel_all(self) -> None:
        for future in self._waiting.values():
            if not future.done():
                future.cancel()

    async def _on_reply(self, delivered: aiormq.abc.DeliveredMessage) -> None:
        try:
            message = _codec.decode(
                self._codec,
                delivered.body,
                delivered.header.properties,
                delivered.routing_key or "",
            )
        except Exception as exc:
            self._decode_failed(exc, "a reply")
            return
        future = self._waiting.pop(message.correlation_id or "", None)
        if future is None or future.done():
            log.debug("dropped a late reply %s", message.id)
            return
        future.set_result(message)
