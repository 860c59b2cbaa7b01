"""aiormq's channel with the fast paths the transport needs on its hot paths.

aiormq runs every consumer callback as a task of its own (one task per delivery) and writes
every publish and every ack as one entry of the connection's write queue (one socket write
each). At tens of thousands of messages a second those tasks and writes are most of the work,
so:

* a consumer made by :func:`direct_consumer` is called on the channel's reader as the delivery
  is read, with no task: it must not block (it buffers, hands over or releases a waiter);
* :func:`write_frames` writes many frames (publishes, acks) as one entry of the write queue,
  so a batch costs one socket write, and writes them to the socket at once while that queue
  is empty (no wake-up of the connection's writer task);
* on a channel without publisher confirms a message the broker returns (``mandatory``, no
  queue bound) goes to the channel's ``on_return_callbacks`` (aiormq matches returns to
  confirms only, and drops them on a channel without).

The links swap an opened channel's class to :class:`FastChannel` (the layout is aiormq's own);
nothing else in aiormq changes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, cast

import aiormq
import aiormq.abc
from aiormq.abc import ChannelFrame
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from ._marshal import publish_bytes

__all__ = [
    "FRAME_BUFFER",
    "FastChannel",
    "direct_consumer",
    "has_room",
    "make_fast",
    "publish_payload",
    "write_frames",
    "write_frames_async",
]

log = logging.getLogger("eventforge.transports.amqp")

FRAME_BUFFER = 512
"""Frames a channel's reader may have waiting (aiormq's default of 10 switches between the
connection's reader and the channel's reader every few deliveries)."""

DeliveryHandler = Callable[[aiormq.abc.DeliveredMessage], None]


def direct_consumer(handler: DeliveryHandler) -> aiormq.abc.ConsumerCallback:
    """A consumer callback that a :class:`FastChannel` calls on its reader, without a task.

    On any other channel it runs as aiormq runs consumers (a task per delivery).
    """

    async def consume(delivered: aiormq.abc.DeliveredMessage) -> None:
        handler(delivered)

    consume.eventforge_direct = handler  # type: ignore[attr-defined]
    return consume


class FastChannel(aiormq.Channel):
    """An aiormq channel that calls direct consumers inline and hands returns over without
    confirms."""

    async def _on_deliver_frame(self, frame: Basic.Deliver) -> None:
        consumer = self.consumers.get(frame.consumer_tag or "")
        handler: DeliveryHandler | None = getattr(consumer, "eventforge_direct", None)
        if handler is None:
            await super()._on_deliver_frame(frame)
            return
        message = await self._read_content(frame, await self._content_header())
        try:
            handler(message)
        except Exception:
            log.exception("an AMQP consumer failed on a delivery")

    async def _on_return_frame(self, frame: Basic.Return) -> None:
        if self.publisher_confirms:
            await super()._on_return_frame(frame)
            return
        message = await self._read_content(frame, await self._content_header())
        for callback in list(self.on_return_callbacks):
            try:
                callback(message)
            except Exception:
                log.exception("an AMQP return callback failed")

    async def _content_header(self) -> ContentHeader:
        header = await self._get_frame()
        if not isinstance(header, ContentHeader):
            raise ValueError(f"unexpected frame {header!r} instead of a content header")
        return header


def make_fast(channel: aiormq.abc.AbstractChannel) -> aiormq.abc.AbstractChannel:
    """Turn an aiormq :class:`~aiormq.Channel` into a :class:`FastChannel` (same layout)."""
    if type(channel) is aiormq.Channel:
        channel.__class__ = FastChannel
    return channel


def publish_payload(
    channel: aiormq.abc.AbstractChannel,
    exchange: str,
    key: str,
    body: bytes,
    properties: Basic.Properties,
    *,
    mandatory: bool = False,
) -> bytes:
    """The bytes of one publish on ``channel`` (method, header, body cut to the frame size)."""
    fast = cast(aiormq.Channel, channel)
    data = publish_bytes(
        channel.number, fast.max_content_size, exchange, key, body, properties, mandatory
    )
    if data is not None:
        return data
    if len(key.encode()) > 255:
        raise ValueError(f"routing key {key[:40]!r}... is longer than 255 bytes")
    frames: list[Any] = [
        Basic.Publish(exchange=exchange, routing_key=key, mandatory=mandatory),
        ContentHeader(properties=properties, body_size=len(body)),
        *fast._split_body(body),
    ]
    return ChannelFrame.marshall(channel.number, frames).payload


def has_room(channel: aiormq.abc.AbstractChannel) -> bool:
    """Whether :func:`write_frames` can queue on ``channel``'s connection now."""
    return not channel.write_queue.full()  # type: ignore[attr-defined]


def write_frames(channel: aiormq.abc.AbstractChannel, frames: Sequence[Any] | bytes) -> bool:
    """Write ``frames`` (or bytes already framed) for the socket as one write: at once while
    the write queue is empty, else as one entry of that queue; ``False`` when it is full
    (then :func:`write_frames_async`)."""
    data = frames if isinstance(frames, bytes) else _payload(channel, frames)
    queue: asyncio.Queue[ChannelFrame] = channel.write_queue  # type: ignore[attr-defined]
    if queue.empty():
        # Nothing is waiting for the writer task (it writes what it takes from the queue in
        # the same step), so writing here keeps the order and spares it a wake-up.
        stream: asyncio.StreamWriter | None = getattr(
            getattr(channel, "connection", None), "stream_writer", None
        )
        if stream is not None and not stream.is_closing():
            stream.write(data)
            return True
    if queue.full():
        return False
    queue.put_nowait(ChannelFrame(payload=data, should_close=False))
    return True


def _payload(channel: aiormq.abc.AbstractChannel, frames: Sequence[Any]) -> bytes:
    return ChannelFrame.marshall(channel.number, frames).payload


_ROOM_POLL = 0.001
"""Seconds between looks for room in a full write queue (only while it is full)."""


async def write_frames_async(
    channel: aiormq.abc.AbstractChannel, frames: Sequence[Any] | bytes, *, drain: bool = False
) -> bool:
    """Queue ``frames`` (or bytes) as one write, waiting for room; with ``drain``, until
    written. Returns ``False``, writing nothing, when ``channel`` closed meanwhile: its
    number may already belong to a new channel, where these frames (acks of its delivery
    tags, a publish counted by its confirms) would mean something else."""
    queue: asyncio.Queue[ChannelFrame] = channel.write_queue  # type: ignore[attr-defined]
    while queue.full() and not channel.is_closed:
        await asyncio.sleep(_ROOM_POLL)
    if channel.is_closed:
        return False
    data = frames if isinstance(frames, bytes) else _payload(channel, frames)
    drained = asyncio.get_running_loop().create_future() if drain else None
    queue.put_nowait(ChannelFrame(payload=data, should_close=False, drain_future=drained))
    if drained is not None:
        await drained
    return True
