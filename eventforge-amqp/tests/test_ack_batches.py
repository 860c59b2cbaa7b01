"""How a work queue's acks become frames: one ``basic.ack(multiple)`` for the run of settled
deliveries at the front of a channel's unsettled ones, a plain ack for each settled one behind
a delivery still held, and never a ``multiple`` ack that covers a held delivery."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from aiormq.abc import ChannelFrame
from eventforge.transport import Counter
from eventforge_amqp._wq_acks import AckSender, ChannelAcks, Token
from pamqp.commands import Basic


def frames_of(acks: ChannelAcks, tags: list[int]) -> list[tuple[int, bool]]:
    return [(frame.delivery_tag, frame.multiple) for frame in acks.settle(tags)]


def channel_acks(delivered: int) -> ChannelAcks:
    channel: Any = object()
    acks = ChannelAcks(channel, prefetch=100)
    for tag in range(1, delivered + 1):
        acks.delivered(tag)
    return acks


def test_items_acked_in_order_go_out_as_one_multiple_ack() -> None:
    acks = channel_acks(100)
    assert frames_of(acks, list(range(1, 101))) == [(100, True)]


def test_acks_behind_a_held_item_go_out_one_by_one_and_never_cover_it() -> None:
    acks = channel_acks(6)
    assert frames_of(acks, [1, 2, 4, 6]) == [(2, True), (4, False), (6, False)]
    # 3 and 5 are still held: nothing covers them until they are settled.
    assert frames_of(acks, [5]) == [(5, False)]
    assert frames_of(acks, [3]) == [(3, True)]


def test_a_multiple_ack_ends_on_a_tag_not_sent_before() -> None:
    acks = channel_acks(5)
    assert frames_of(acks, [2, 3]) == [(2, False), (3, False)]
    # Settling 1 and 5 (4 held): the run 1..3 ends on 1, the last tag not acked yet.
    assert frames_of(acks, [1, 5]) == [(1, True), (5, False)]
    assert frames_of(acks, [4]) == [(4, True)]


def test_a_long_held_item_keeps_the_bookkeeping_bounded() -> None:
    acks = channel_acks(1)
    for tag in range(2, 5_002):
        acks.delivered(tag)
        assert frames_of(acks, [tag]) == [(tag, False)]
    assert len(acks._unsettled) < 1_500
    assert frames_of(acks, [1]) == [(1, True)]


# -- the order batches reach the write queue ----------------------------------------------------


class _Channel:
    """The parts of an aiormq channel the ack sender writes through: a connection write queue
    of one slot, so a batch must wait for room, and no stream to write to directly."""

    number = 1

    def __init__(self) -> None:
        self.write_queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=1)
        self.is_closed = False
        self.connection = SimpleNamespace(stream_writer=None)


def _sender(channel: _Channel) -> tuple[AckSender, dict[str, Counter]]:
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[Any]] = set()

    def spawn(coro: Any) -> None:
        task = loop.create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    link: Any = SimpleNamespace(
        loop=loop, bg=SimpleNamespace(in_loop_thread=lambda: True), spawn=spawn
    )
    counters = {"stale_settles": Counter(), "acks_sent": Counter()}
    sender = AckSender(link, "jobs", prefetch=100, counters=counters)
    sender.consuming(channel)  # type: ignore[arg-type]
    for tag in range(1, 21):
        sender.delivered(SimpleNamespace(channel=channel, delivery_tag=tag))  # type: ignore[arg-type]
    return sender, counters


def _acked(sender: AckSender, channel: _Channel, tags: range) -> None:
    for tag in tags:
        sender._recorded.append(Token(channel, tag))  # type: ignore[arg-type]
    sender._flush()


def _ack_bytes(channel: _Channel, tag: int) -> bytes:
    return ChannelFrame.marshall(
        channel.number, [Basic.Ack(delivery_tag=tag, multiple=True)]
    ).payload


def test_a_batch_waiting_for_room_is_never_overtaken_by_a_later_one() -> None:
    """The broker closes a channel whose multiple ack names a tag an earlier ack settled:
    batches reach the write queue in the order they were settled."""

    async def run() -> list[bytes]:
        channel = _Channel()
        sender, _ = _sender(channel)
        channel.write_queue.put_nowait("full")
        _acked(sender, channel, range(1, 11))  # ack(10, multiple) must wait for room
        assert channel.write_queue.get_nowait() == "full"  # room, before the writer woke
        _acked(sender, channel, range(11, 15))  # ack(14, multiple) comes behind it
        written = []
        for _ in range(2):
            written.append((await asyncio.wait_for(channel.write_queue.get(), 5)).payload)
        return written

    channel = _Channel()
    assert asyncio.run(run()) == [_ack_bytes(channel, 10), _ack_bytes(channel, 14)]


def test_a_batch_whose_channel_closed_while_it_waited_is_dropped() -> None:
    """Its channel's number may already be a new channel's, whose tags start again at 1."""

    async def run() -> tuple[int, int]:
        channel = _Channel()
        sender, counters = _sender(channel)
        channel.write_queue.put_nowait("full")
        _acked(sender, channel, range(1, 11))
        await asyncio.sleep(0.01)
        channel.is_closed = True
        channel.write_queue.get_nowait()
        await asyncio.sleep(0.05)
        return channel.write_queue.qsize(), counters["stale_settles"].value

    assert asyncio.run(run()) == (0, 1)
