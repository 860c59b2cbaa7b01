"""Bytes payloads on the wire: the documented JSON encoding, and msgpack carrying them natively."""

from __future__ import annotations

import base64
import json

import pytest
from eventforge.message import Message
from eventforge.wire import BYTES_CONTENT_TYPE, WireCodec

RAW = b"\xff\x00raw"


def test_json_codec_sends_bytes_as_base64_with_the_octet_stream_content_type() -> None:
    envelope = json.loads(WireCodec().encode(Message("files.put", RAW, {"name": "a.bin"})))
    assert envelope["payload"] == base64.b64encode(RAW).decode("ascii")
    assert envelope["headers"] == {"name": "a.bin", "content-type": "application/octet-stream"}
    assert BYTES_CONTENT_TYPE == "application/octet-stream"


def test_json_codec_decodes_the_octet_stream_envelope_of_any_peer_to_bytes() -> None:
    envelope = {
        "version": 1,
        "id": "m1",
        "topic": "files.put",
        "payload": base64.b64encode(RAW).decode("ascii"),
        "headers": {"content-type": "application/octet-stream"},
    }
    message = WireCodec().decode(json.dumps(envelope).encode())
    assert message.payload == RAW
    assert type(message.payload) is bytes


@pytest.mark.parametrize("payload", [bytearray(RAW), memoryview(RAW)])
def test_bytes_like_payloads_arrive_as_bytes(payload: object) -> None:
    codec = WireCodec()
    assert codec.decode(codec.encode(Message("a.b", payload))).payload == RAW


def test_msgpack_keeps_bytes_anywhere_in_the_payload() -> None:
    pytest.importorskip("msgpack")
    codec = WireCodec("msgpack")
    sent = {"content": RAW, "parts": [b"\x00\x01", "text"], "size": 6}
    received = codec.decode(codec.encode(Message("a.b", sent))).payload
    assert received == sent
    assert type(received["parts"][0]) is bytes
    assert type(received["parts"][1]) is str


def test_msgpack_still_converts_what_it_cannot_carry() -> None:
    pytest.importorskip("msgpack")
    import datetime
    from dataclasses import dataclass

    @dataclass
    class Point:
        x: int
        y: int

    codec = WireCodec("msgpack")
    sent = {"at": datetime.date(2026, 1, 2), "point": Point(1, 2)}
    received = codec.decode(codec.encode(Message("a.b", sent))).payload
    assert received == {"at": "2026-01-02", "point": {"x": 1, "y": 2}}
