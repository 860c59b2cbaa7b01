"""The acks of a work queue's consumer channel, sent in as few frames as the settling allows.

A consumer thread's ``ack`` only records the delivery; the event loop then settles every ack
recorded meanwhile in one call. Delivery tags grow by one per delivery on a channel, and one
``basic.ack(N, multiple=True)`` settles every tag up to ``N`` still unsettled. So the batch
becomes:

* one ``multiple`` ack for the longest run of settled tags at the front of the channel's
  unsettled ones (the common case: items acked in the order they came);
* one plain ack for each settled tag behind a tag still held (an item another thread still
  works on), so the broker frees its prefetch slot at once rather than when the earlier item
  is settled;

all written to the socket together. A ``multiple`` ack never covers a tag still held: its
``N`` is the last of a run that starts at the oldest unsettled tag and contains only tags
settled here. All of this runs on the link's loop (deliveries and flushes), so it takes no
lock.

The batches reach the socket in the order they were settled: the broker closes a channel
whose ``multiple`` ack names a tag an earlier ack already settled, so a batch that must wait
for room in the connection's write queue holds back every later one (one writer task writes
them in order), and a batch whose channel closed meanwhile is dropped, never written.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import aiormq.abc
import aiormq.exceptions
from eventforge.transport import Counter
from pamqp.commands import Basic

from ._channel import write_frames, write_frames_async
from ._connection import Link

__all__ = ["AckSender", "ChannelAcks", "Token"]


class Token:
    """What a delivery holds: the channel it came on and its tag there."""

    __slots__ = ("channel", "tag")

    def __init__(self, channel: aiormq.abc.AbstractChannel, tag: int) -> None:
        self.channel = channel
        self.tag = tag


class ChannelAcks:
    """The delivery tags of one consumer channel: unsettled, settled and not yet sent, and
    sent alone while an earlier tag was still held."""

    __slots__ = ("_compact_at", "_ready", "_sent", "_unsettled", "channel")

    def __init__(self, channel: aiormq.abc.AbstractChannel, prefetch: int) -> None:
        self.channel = channel
        self._unsettled: collections.deque[int] = collections.deque()
        self._ready: set[int] = set()
        self._sent: set[int] = set()
        self._compact_at = 4 * prefetch + 1000

    def delivered(self, tag: int) -> None:
        """A delivery with ``tag`` came (tags arrive in increasing order)."""
        self._unsettled.append(tag)

    def settle(self, tags: list[int]) -> list[Any]:
        """Record ``tags`` as acked and return the ack frames that settle them."""
        ready = self._ready
        ready.update(tags)
        unsettled = self._unsettled
        sent = self._sent
        last = 0
        while unsettled:
            tag = unsettled[0]
            if tag in ready:
                ready.discard(tag)
                last = tag
            elif tag in sent:
                sent.discard(tag)
            else:
                break
            unsettled.popleft()
        frames: list[Any] = [Basic.Ack(delivery_tag=last, multiple=True)] if last else []
        for tag in sorted(ready):
            frames.append(Basic.Ack(delivery_tag=tag))
            sent.add(tag)
        ready.clear()
        if len(sent) > self._compact_at:
            # An item held for long while many behind it were acked one by one: keep only the
            # tags the broker still holds, so the deque stays about the prefetch long.
            self._unsettled = collections.deque(t for t in unsettled if t not in sent)
            sent.clear()
        return frames


class AckSender:
    """The acks of one work queue: recorded by any thread, sent by the loop in batches."""

    def __init__(self, link: Link, name: str, prefetch: int, counters: dict[str, Counter]) -> None:
        self._link = link
        self._name = name
        self._prefetch = prefetch
        self._stale = counters["stale_settles"].bump
        self._sent = counters["acks_sent"].bump
        self._recorded: collections.deque[Token] = collections.deque()
        self._scheduled = False
        self._channel: ChannelAcks | None = None
        # Batches waiting to be written in order, with the future of a caller waiting for one.
        self._backlog: collections.deque[
            tuple[aiormq.abc.AbstractChannel, list[Any], asyncio.Future[bool] | None]
        ] = collections.deque()
        self._writing = False

    def consuming(self, channel: aiormq.abc.AbstractChannel) -> None:
        """The queue is consumed on ``channel`` (on the loop); its tags start afresh if new."""
        state = self._channel
        if state is None or state.channel is not channel:
            self._channel = ChannelAcks(channel, self._prefetch)

    def delivered(self, delivered: aiormq.abc.DeliveredMessage) -> None:
        """A delivery came (on the loop)."""
        state = self._channel
        if state is not None and state.channel is delivered.channel:
            state.delivered(delivered.delivery_tag or 0)

    def record(self, token: Token) -> None:
        """Ack ``token`` soon (any thread): the loop sends every ack recorded meanwhile."""
        self._recorded.append(token)
        if not self._scheduled:
            self._scheduled = True
            if self._link.bg.in_loop_thread():
                self._link.loop.call_soon(self._flush)
            else:
                self._link.loop.call_soon_threadsafe(self._flush)

    def _frames(self) -> tuple[aiormq.abc.AbstractChannel | None, list[Any]]:
        """The frames settling every ack recorded so far (on the loop), and their channel."""
        self._scheduled = False
        recorded = self._recorded
        state = self._channel
        tags: list[int] = []
        while recorded:
            token = recorded.popleft()
            if state is not None and token.channel is state.channel:
                tags.append(token.tag)
            else:  # its channel closed and was replaced: the broker delivers the item again
                self._stale()
        if state is None or not tags or state.channel.is_closed:
            return None, []
        for _ in tags:
            self._sent()
        return state.channel, state.settle(tags)

    def _flush(self) -> None:
        channel, frames = self._frames()
        if channel is not None:
            self._send(channel, frames, None)

    def _send(
        self,
        channel: aiormq.abc.AbstractChannel,
        frames: list[Any],
        done: asyncio.Future[bool] | None,
    ) -> None:
        """Write a batch now if nothing waits before it, else queue it behind (on the loop)."""
        if not self._backlog and done is None and write_frames(channel, frames):
            return
        self._backlog.append((channel, frames, done))
        if not self._writing:
            self._writing = True
            self._link.spawn(self._write_backlog())

    async def _write_backlog(self) -> None:
        """The one writer of waiting batches, oldest first."""
        backlog = self._backlog
        try:
            while backlog:
                channel, frames, done = backlog[0]
                try:
                    written = await write_frames_async(channel, frames, drain=done is not None)
                except Exception as exc:
                    written = False
                    if done is not None and not done.done():
                        done.set_exception(exc)
                backlog.popleft()
                if not written:
                    self._stale()  # the channel closed: the broker delivers them again
                if done is not None and not done.done():
                    done.set_result(written)
        finally:
            self._writing = False
            if backlog:  # cancelled (the loop is closing): nothing more can be written
                for _, _, done in backlog:
                    if done is not None and not done.done():
                        done.cancel()
                backlog.clear()

    async def written(self, token: Token) -> None:
        """Ack ``token`` (with every ack recorded meanwhile); return once that was written."""
        if token.channel.is_closed:
            raise aiormq.exceptions.ChannelInvalidStateError(
                f"the channel of work queue {self._name!r} closed; the item is delivered again"
            )
        self._recorded.append(token)
        await self.write()

    async def write(self) -> None:
        """Send the acks recorded so far and wait until they were written to the socket."""
        channel, frames = self._frames()
        if channel is not None:
            done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            self._send(channel, frames, done)
            if not await done:
                raise aiormq.exceptions.ChannelInvalidStateError(
                    f"the channel of work queue {self._name!r} closed before its acks were "
                    "written; the items are delivered again"
                )
