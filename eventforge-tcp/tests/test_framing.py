"""The frame decoder alone: any chunking decodes the same, any bytes fail only with our errors."""

from __future__ import annotations

import pytest
from eventforge.errors import FrameTooLarge, ProtocolError
from eventforge.message import Message
from eventforge.wire import WireCodec
from eventforge_tcp.framing import (
    FrameDecoder,
    decode_stream,
    encode_frame,
    parse_hello,
    parse_welcome,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

CODEC = WireCodec()

segments = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-$", min_size=1, max_size=8)
topics = st.lists(segments, min_size=1, max_size=4).map(".".join)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
header_values = st.one_of(
    st.text(max_size=10),
    st.integers(-1000, 1000),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
)
messages = st.builds(
    lambda topic, payload, headers, reply_to: Message(
        topic.replace("$", "d"), payload, headers, reply_to=reply_to, correlation_id="c1"
    ),
    topics,
    json_values,
    st.dictionaries(st.text(min_size=1, max_size=6), header_values, max_size=3),
    st.none() | topics,
)


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for point in points:
        pieces.append(data[last:point])
        last = point
    pieces.append(data[last:])
    return pieces


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(messages, min_size=1, max_size=6), st.lists(st.integers(0, 10_000), max_size=40))
def test_any_chunking_decodes_identically(sent: list[Message], cuts: list[int]) -> None:
    """Frames cut at arbitrary points (empty chunks included) decode to the very messages sent."""
    stream = b"".join(encode_frame(CODEC.encode(m)) for m in sent)
    received = decode_stream(_chunks(stream, cuts), CODEC)
    assert [m.to_dict() for m in received] == [m.to_dict() for m in sent]


@settings(max_examples=30)
@given(st.lists(messages, min_size=1, max_size=3))
def test_one_byte_at_a_time_decodes_identically(sent: list[Message]) -> None:
    """The extreme slicer: every byte delivered alone."""
    stream = b"".join(encode_frame(CODEC.encode(m)) for m in sent)
    received = decode_stream([stream[i : i + 1] for i in range(len(stream))], CODEC)
    assert [m.to_dict() for m in received] == [m.to_dict() for m in sent]


@settings(max_examples=400)
@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=5))
def test_any_bytes_raise_only_protocol_errors(data: bytes, cuts: list[int]) -> None:
    """Arbitrary input either decodes or raises ProtocolError / FrameTooLarge, nothing else."""
    try:
        decode_stream(_chunks(data, cuts), CODEC, max_frame_size=256)
    except ProtocolError:
        pass


@settings(max_examples=200)
@given(st.binary(min_size=1, max_size=200))
def test_any_frame_body_raises_only_protocol_errors(body: bytes) -> None:
    """A well-framed body of arbitrary bytes: decoded or refused with ProtocolError."""
    try:
        decode_stream([encode_frame(body)], CODEC)
    except ProtocolError:
        pass
    for parse in (parse_hello, parse_welcome):
        try:
            parse(body)
        except ProtocolError:
            pass


def test_oversize_length_is_refused_from_the_header_alone() -> None:
    """0xFFFFFFFF with no body: refused at once, nothing buffered."""
    decoder = FrameDecoder(1024)
    with pytest.raises(FrameTooLarge) as info:
        decoder.feed(b"\xff\xff\xff\xff")
    assert info.value.size == 0xFFFFFFFF
    assert decoder.buffered == 0


def test_zero_length_frame_is_refused() -> None:
    with pytest.raises(ProtocolError, match="length 0"):
        FrameDecoder().feed(b"\x00\x00\x00\x00")


def test_truncated_frame_is_reported_at_eof() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(encode_frame(b'{"a":1}')[:-2]) == []
    with pytest.raises(ProtocolError, match="middle of a frame"):
        decoder.eof()


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"not json", "not valid JSON"),
        (b"[1,2]", "JSON object"),
        (b'{"version":1,"id":5,"topic":"a","payload":1}', "schema"),
        (b'{"version":2,"id":"x","topic":"a","payload":1}', "version"),
        (b'{"version":1,"id":"x","topic":"a","payload":' + b"9" * 5000 + b"}", "JSON"),
        (
            b'{"version":1,"id":"x","topic":"a","payload":' + b"[" * 5000 + b"]" * 5000 + b"}",
            "JSON",
        ),
        (b'{"version":1,"id":"x","topic":"a..b","payload":1}', "topic"),
        (b'{"version":1,"id":"x","topic":"a","payload":"\xff\xfe"}', "JSON"),
    ],
    ids=[
        "non-json",
        "not-object",
        "wrong-type",
        "version",
        "huge-int",
        "deep",
        "bad-topic",
        "utf8",
    ],
)
def test_malformed_bodies_raise_protocol_error(body: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        decode_stream([encode_frame(body)], CODEC)


def test_hello_must_name_the_protocol_and_version() -> None:
    assert parse_hello(b'{"hello":"eventforge","protocol":1,"token":"t"}')["token"] == "t"
    with pytest.raises(ProtocolError, match="does not start"):
        parse_hello(b'{"hello":"other","protocol":1}')
    with pytest.raises(ProtocolError, match="Upgrade"):
        parse_hello(b'{"hello":"eventforge","protocol":99}')
    with pytest.raises(ProtocolError, match="token"):
        parse_hello(b'{"hello":"eventforge","protocol":1,"token":5}')
