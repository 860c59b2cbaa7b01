"""The frame reader cuts whole frames out of socket reads, however the bytes were split."""

from __future__ import annotations

import asyncio
from typing import Any

import pamqp.frame
import pytest
from aiormq.exceptions import AMQPConnectionError
from eventforge_amqp._frames import FrameReader
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.header import ContentHeader


def delivery_bytes(n: int) -> bytes:
    body = f'{{"n": {n}}}'.encode()
    frames: list[Any] = [
        Basic.Deliver(consumer_tag="c", delivery_tag=n, routing_key="a.b", exchange="x"),
        ContentHeader(body_size=len(body), properties=Basic.Properties(message_id=str(n))),
        ContentBody(body),
    ]
    return b"".join(pamqp.frame.marshal(frame, 7) for frame in frames)


async def read_all(chunks: list[bytes]) -> list[tuple[int, Any]]:
    reader = asyncio.StreamReader()
    for chunk in chunks:
        reader.feed_data(chunk)
    reader.feed_eof()
    return [(channel, frame) async for _, channel, frame in FrameReader(reader)]


def test_frames_split_across_reads_come_out_whole_and_in_order() -> None:
    data = b"".join(delivery_bytes(n) for n in range(1, 4))
    chunks = [data[i : i + 5] for i in range(0, len(data), 5)]  # every frame cut apart
    frames = asyncio.run(read_all(chunks))
    assert [channel for channel, _ in frames] == [7] * 9
    delivers = [f for _, f in frames if isinstance(f, Basic.Deliver)]
    assert [d.delivery_tag for d in delivers] == [1, 2, 3]
    headers = [f for _, f in frames if isinstance(f, ContentHeader)]
    assert [h.properties.message_id for h in headers] == ["1", "2", "3"]
    bodies = [bytes(f.value) for _, f in frames if isinstance(f, ContentBody)]
    assert bodies == [b'{"n": 1}', b'{"n": 2}', b'{"n": 3}']


def test_a_stream_ending_inside_a_frame_is_a_connection_error() -> None:
    data = delivery_bytes(1)
    with pytest.raises(AMQPConnectionError, match="within a frame"):
        asyncio.run(read_all([data[:-3]]))
