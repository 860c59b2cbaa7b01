"""How a work queue's acks become frames: one ``basic.ack(multiple)`` for the run of settled
deliveries at the front of a channel's unsettled ones, a plain ack for each settled one behind
a delivery still held, and never a ``multiple`` ack that covers a held delivery."""

from __future__ import annotations

from typing import Any

from eventforge_amqp._wq_acks import ChannelAcks


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
