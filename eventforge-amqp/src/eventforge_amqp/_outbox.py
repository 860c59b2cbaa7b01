"""The outbox of fire-and-forget publishes: any thread adds, the loop writes them in batches.

``send`` appends the encoded message and, when no write is scheduled yet, schedules one on
the link's loop (one wake-up for every message sent meanwhile). The loop then frames every
message waiting and writes them as one entry of the connection's write queue, so a burst of
sends costs one socket write, not one per message, and no task while the publish channel is
open and the write queue has room. Messages go out in the order they were sent.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any

import aiormq.abc
from eventforge.transport import Counter

from ._channel import has_room, publish_payload, write_frames, write_frames_async
from ._connection import ChannelSlot, Link

__all__ = ["MAX_OUTBOX", "Item", "Outbox"]

log = logging.getLogger("eventforge.transports.amqp")

MAX_OUTBOX = 10_000
"""Messages waiting beyond which a blocking ``send`` waits until they were written."""

Item = tuple[str, str, bytes, Any]


class Outbox:
    """The messages sent and not yet written, and the writing of them."""

    def __init__(
        self, link: Link, slot: ChannelSlot, publish_timeout: float, sent: Counter, errors: Counter
    ) -> None:
        self._link = link
        self._loop = link.loop
        self._slot = slot
        self._timeout = publish_timeout
        self._sent = sent
        self._errors = errors
        self._items: collections.deque[Item] = collections.deque()
        self._scheduled = False
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: Item) -> bool:
        """Queue ``item`` (any thread); ``True`` when the outbox is over :data:`MAX_OUTBOX`."""
        items = self._items
        items.append(item)
        if not self._scheduled:
            self._scheduled = True
            if self._link.bg.in_loop_thread():
                self._loop.call_soon(self._kick)
            else:
                self._loop.call_soon_threadsafe(self._kick)
        return len(items) > MAX_OUTBOX

    def _kick(self) -> None:
        task = self._task
        if task is not None and not task.done():
            return  # the running drain takes what was added
        channel = self._slot.channel
        if channel is None or channel.is_closed or not has_room(channel):
            self._task = self._loop.create_task(self._drain())
            return
        frames = self._take_frames(channel)
        if frames:
            write_frames(channel, frames)

    def _take_frames(self, channel: aiormq.abc.AbstractChannel) -> bytes:
        """Everything waiting as publish frames, to be written together. An item that cannot
        be framed (a routing key over 255 bytes) is dropped and counted."""
        self._scheduled = False  # before taking: a send after this point schedules again
        items = self._items
        bump = self._sent.bump
        frames: list[bytes] = []
        while items:
            exchange, key, body, properties = items.popleft()
            try:
                frames.append(publish_payload(channel, exchange, key, body, properties))
            except Exception as exc:
                self._errors.bump()
                log.warning("AMQP publish to %r failed, message dropped: %r", key, exc)
                continue
            bump()
        return b"".join(frames)

    async def _drain(self) -> None:
        items = self._items
        while items:
            try:
                channel = await self._slot.get(self._timeout)
            except Exception as exc:
                dropped = len(items)
                items.clear()
                for _ in range(dropped):
                    self._errors.bump()
                log.warning("AMQP publish failed, %d message(s) dropped: %r", dropped, exc)
                self._scheduled = False
                return
            frames = self._take_frames(channel)
            if frames and not await write_frames_async(channel, frames):
                # At-most-once pub/sub: a batch framed for a channel that closed while it waited
                # for room is not written to whichever channel has its number now.
                self._errors.bump()
                log.warning("AMQP publish channel closed while a batch waited; it was dropped")

    def idle(self) -> bool:
        """Nothing sent is waiting to be written (on the loop)."""
        task = self._task
        return not self._items and (task is None or task.done())

    async def drained(self) -> None:
        """Return once everything sent so far was handed to the connection's writer."""
        while not self.idle():
            task = self._task
            if task is None or task.done():
                self._kick()
                task = self._task
                if task is None or task.done():
                    continue
            await asyncio.shield(task)

    async def written(self) -> None:
        """Return once everything sent so far was written to the socket."""
        await self.drained()
        channel = self._slot.channel
        if channel is not None and not channel.is_closed:
            await write_frames_async(channel, (), drain=True)  # after what is queued before
