"""The JSON wire envelope: round trips, and untrusted bytes that fail only with our errors."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import pydantic
import pytest
from eventforge.errors import FrameTooLarge, ProtocolError, SerializationError
from eventforge.message import Message
from eventforge.wire import (
    CONTENT_TYPE_HEADER,
    WIRE_VERSION,
    WireCodec,
    decode_envelope,
    encode_envelope,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
header_values = st.one_of(
    st.text(max_size=10),
    st.integers(min_value=-(2**31), max_value=2**31),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)
topics = st.lists(
    st.text(alphabet="abcxyz_-0189", min_size=1, max_size=6), min_size=1, max_size=4
).map(".".join)


def envelope(**changes: Any) -> dict[str, Any]:
    """A valid envelope as a dict, with some fields changed (``None`` deletes one)."""
    env: dict[str, Any] = {
        "version": WIRE_VERSION,
        "id": "abc1",
        "topic": "orders.created",
        "payload": {"order": 1},
        "headers": {"h": "v"},
        "timestamp": 1700000000.25,
        "reply_to": None,
        "correlation_id": None,
    }
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def raw(env: dict[str, Any]) -> bytes:
    return json.dumps(env).encode()


# -- round trips -------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    topic=topics,
    payload=json_values,
    headers=st.dictionaries(st.text(min_size=1, max_size=8), header_values, max_size=4),
    reply_to=st.none() | topics,
    correlation_id=st.none() | st.text(max_size=10),
)
def test_json_safe_messages_round_trip(
    topic: str,
    payload: Any,
    headers: dict[str, Any],
    reply_to: str | None,
    correlation_id: str | None,
) -> None:
    codec = WireCodec()
    sent = Message(topic, payload, headers, reply_to=reply_to, correlation_id=correlation_id)
    received = codec.decode(codec.encode(sent))
    assert received == sent


def test_envelope_is_plain_versioned_json() -> None:
    message = Message("orders.created", {"order": 7}, {"trace": "t1"}, correlation_id="c1")
    data = json.loads(encode_envelope(message))
    assert data == {
        "version": WIRE_VERSION,
        "id": message.id,
        "topic": "orders.created",
        "payload": {"order": 7},
        "headers": {"trace": "t1"},
        "timestamp": message.timestamp,
        "reply_to": None,
        "correlation_id": "c1",
    }
    assert decode_envelope(encode_envelope(message)) == message


class Order(pydantic.BaseModel):
    order_id: int
    items: list[str]
    note: str | None = None


@dataclasses.dataclass
class Reading:
    sensor: str
    value: float
    tags: tuple[str, ...] = ()


def test_pydantic_model_payload_arrives_as_dict() -> None:
    codec = WireCodec()
    received = codec.decode(codec.encode(Message("orders.created", Order(order_id=3, items=["a"]))))
    assert received.payload == {"order_id": 3, "items": ["a"], "note": None}
    assert Order.model_validate(received.payload) == Order(order_id=3, items=["a"])


def test_dataclass_payload_arrives_as_dict() -> None:
    codec = WireCodec()
    sent = Message("sensor.kitchen.temperature", Reading("k1", 21.5, ("x",)))
    received = codec.decode(codec.encode(sent))
    assert received.payload == {"sensor": "k1", "value": 21.5, "tags": ["x"]}


def test_nested_models_and_dataclasses_inside_containers() -> None:
    codec = WireCodec()
    payload = {"orders": [Order(order_id=1, items=[])], "reading": Reading("s", 1.0)}
    received = codec.decode(codec.encode(Message("a.b", payload)))
    assert received.payload == {
        "orders": [{"order_id": 1, "items": [], "note": None}],
        "reading": {"sensor": "s", "value": 1.0, "tags": []},
    }


def test_headers_round_trip_with_their_types() -> None:
    codec = WireCodec()
    headers = {"s": "text", "i": 3, "f": 0.5, "b": False, "n": None}
    received = codec.decode(codec.encode(Message("a.b", None, dict(headers))))
    assert received.headers == headers
    assert [type(v) for v in received.headers.values()] == [type(v) for v in headers.values()]


def test_nan_and_infinity_round_trip() -> None:
    """pydantic-core writes NaN / Infinity as JavaScript constants; the reader must accept them."""
    codec = WireCodec()
    sent = Message("a.b", [float("nan"), float("inf"), -float("inf")], {"h": float("inf")})
    received = codec.decode(codec.encode(sent))
    assert math.isnan(received.payload[0])
    assert received.payload[1:] == [float("inf"), -float("inf")]
    assert received.headers == {"h": float("inf")}


def test_decode_accepts_bytes_bytearray_memoryview_and_str() -> None:
    codec = WireCodec()
    data = codec.encode(Message("a.b", [1, 2]))
    for form in (data, bytearray(data), memoryview(data), data.decode()):
        assert codec.decode(form).payload == [1, 2]


def test_missing_optional_fields_get_defaults() -> None:
    received = WireCodec().decode(
        raw(envelope(headers=None, timestamp=None, reply_to=None, correlation_id=None))
    )
    assert received.headers == {}
    assert received.reply_to is None
    assert received.correlation_id is None
    assert isinstance(received.timestamp, float)


def test_unknown_extra_fields_are_ignored() -> None:
    received = WireCodec().decode(raw(envelope(future_field={"x": 1})))
    assert received.id == "abc1"


def test_msgpack_payload_round_trip_names_itself_in_a_header() -> None:
    codec = WireCodec("msgpack")
    data = codec.encode(Message("a.b", {"x": [1, 2.5, "s", None, True]}, {"k": "v"}))
    env = json.loads(data)
    assert env["headers"][CONTENT_TYPE_HEADER] == "application/msgpack"
    assert isinstance(env["payload"], str)  # base64 text inside the JSON envelope
    received = WireCodec().decode(data)  # the reader needs no configuration
    assert received.payload == {"x": [1, 2.5, "s", None, True]}
    assert received.headers["k"] == "v"


# -- encoding errors ---------------------------------------------------------------------------


def test_unserializable_payload_raises_serialization_error() -> None:
    with pytest.raises(SerializationError, match="cannot be encoded as JSON"):
        WireCodec().encode(Message("a.b", object()))


@pytest.mark.parametrize("value", [{"nested": 1}, [1, 2], b"bytes", object()])
def test_headers_a_receiver_would_reject_are_refused_when_sending(value: object) -> None:
    with pytest.raises(SerializationError, match=r"header 'h' of the message on 'a\.b' is a"):
        WireCodec().encode(Message("a.b", 1, {"h": value}))


def test_header_names_must_be_strings() -> None:
    with pytest.raises(SerializationError, match="header names must be str"):
        WireCodec().encode(Message("a.b", 1, {1: "x"}))


def test_oversize_message_is_refused_on_encode_and_decode() -> None:
    small = WireCodec(max_size=200)
    big = Message("a.b", "x" * 500)
    with pytest.raises(FrameTooLarge) as info:
        small.encode(big)
    assert info.value.limit == 200
    assert "max_frame_size" in str(info.value)
    data = WireCodec().encode(big)
    with pytest.raises(FrameTooLarge):
        small.decode(data)
    with pytest.raises(FrameTooLarge):
        small.decode(data.decode())


# -- untrusted input ---------------------------------------------------------------------------

MALFORMED: dict[str, bytes | str] = {
    "empty": b"",
    "whitespace": b"   ",
    "not json": b"hello",
    "truncated": raw(envelope())[:-7],
    "json array": b"[1, 2, 3]",
    "json string": b'"text"',
    "json null": b"null",
    "invalid utf-8": raw(envelope()).replace(b'"v"', b'"\xff\xfe"'),
    "lone surrogate escape": raw(envelope()).replace(b'"v"', b'"\\ud800"'),
    "lone surrogate text": '{"version": 1, "id": "x", "topic": "a.b", "payload": "\ud800"}',
    "utf-8 bom": b"\xef\xbb\xbf" + raw(envelope()),
    "huge integer payload": raw(envelope()).replace(b'{"order": 1}', b"9" * 5000),
    "huge integer header": raw(envelope(headers={"h": 0})).replace(
        b'"h": 0', b'"h": ' + b"7" * 4400
    ),
    "deeply nested list": raw(envelope()).replace(b'{"order": 1}', b"[" * 5000 + b"]" * 5000),
    "deeply nested object": raw(envelope()).replace(
        b'{"order": 1}', b'{"a":' * 400 + b"1" + b"}" * 400
    ),
    "missing version": raw(envelope(version=None)),
    "unknown version": raw(envelope(version=2)),
    "version as string": raw(envelope(version="1")),
    "version as float": raw(envelope(version=1.5)),
    "missing id": raw(envelope(id=None)),
    "empty id": raw(envelope(id="")),
    "id not a string": raw(envelope(id=12)),
    "missing topic": raw(envelope(topic=None)),
    "missing payload": raw(envelope(payload=None)),
    "topic with empty segment": raw(envelope(topic="a..b")),
    "topic with wildcard": raw(envelope(topic="a.*")),
    "topic not a string": raw(envelope(topic=["a"])),
    "headers not an object": raw(envelope(headers=["a"])),
    "nested header value": raw(envelope(headers={"h": {"x": 1}})),
    "timestamp as string": raw(envelope(timestamp="yesterday")),
    "reply_to as number": raw(envelope(reply_to=5)),
    "unknown content-type": raw(envelope(headers={CONTENT_TYPE_HEADER: "application/x-nope"})),
    "content-type not a string": raw(envelope(headers={CONTENT_TYPE_HEADER: 5})),
    "bad base64 payload": raw(
        envelope(payload="!!!", headers={CONTENT_TYPE_HEADER: "application/msgpack"})
    ),
    "binary payload not text": raw(
        envelope(payload=[1], headers={CONTENT_TYPE_HEADER: "application/msgpack"})
    ),
    "corrupt msgpack": raw(
        envelope(payload="wQ==", headers={CONTENT_TYPE_HEADER: "application/msgpack"})
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_input_raises_protocol_error(case: str) -> None:
    with pytest.raises(ProtocolError) as info:
        WireCodec().decode(MALFORMED[case])
    assert type(info.value) is ProtocolError
    assert str(info.value), "the error must say what is wrong"


def test_error_messages_say_what_is_wrong() -> None:
    codec = WireCodec()
    with pytest.raises(ProtocolError, match="not valid JSON"):
        codec.decode(MALFORMED["truncated"])
    with pytest.raises(ProtocolError, match="version 2; this peer speaks version 1"):
        codec.decode(MALFORMED["unknown version"])
    with pytest.raises(ProtocolError, match="id: Field required"):
        codec.decode(MALFORMED["missing id"])
    with pytest.raises(ProtocolError, match=r"invalid topic.*empty segment"):
        codec.decode(MALFORMED["topic with empty segment"])
    with pytest.raises(ProtocolError, match="number out of range"):
        codec.decode(MALFORMED["huge integer payload"])
    with pytest.raises(ProtocolError, match="recursion limit"):
        codec.decode(MALFORMED["deeply nested list"])
    with pytest.raises(ProtocolError, match="must be a JSON object, got list"):
        codec.decode(MALFORMED["json array"])
    with pytest.raises(ProtocolError, match="application/x-nope"):
        codec.decode(MALFORMED["unknown content-type"])


def test_protocol_error_is_a_value_error_for_generic_callers() -> None:
    with pytest.raises(ValueError):
        WireCodec().decode(b"{")


def _decode_only_our_errors(data: bytes | str) -> Message | None:
    try:
        return WireCodec(max_size=4096).decode(data)
    except ProtocolError:  # includes FrameTooLarge
        return None


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_protocol_errors(data: bytes) -> None:
    _decode_only_our_errors(data)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_raises_only_protocol_errors(data: str) -> None:
    _decode_only_our_errors(data)


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "version": st.sampled_from([1, 2, 0, -1, "1", 1.0, True, None]),
            "id": st.none() | st.text(max_size=5) | st.integers(),
            "topic": st.none() | st.text(max_size=12) | topics | st.integers(),
            "payload": json_values,
            "headers": st.none()
            | st.dictionaries(st.text(max_size=12), json_values, max_size=3)
            | json_values,
            "timestamp": json_values,
            "reply_to": json_values,
            "correlation_id": json_values,
        },
    )
)
def test_arbitrary_envelope_shapes_decode_or_raise_protocol_error(env: dict[str, Any]) -> None:
    message = _decode_only_our_errors(json.dumps(env).encode())
    if message is not None:
        assert message.id == env["id"]
        assert message.topic == env["topic"]
        assert message.payload == env["payload"] or _has_nan(env["payload"])


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_mutated_valid_envelopes_raise_only_protocol_errors(data: st.DataObject) -> None:
    sent = Message("a.b.c", {"k": [1, "two"]}, {"h": 1}, id="fixed1", timestamp=1700000000.5)
    good = bytearray(WireCodec().encode(sent))
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        position = data.draw(st.integers(min_value=0, max_value=len(good) - 1))
        action = data.draw(st.sampled_from(["flip", "delete", "insert"]))
        if action == "flip":
            good[position] = data.draw(st.integers(min_value=0, max_value=255))
        elif action == "delete" and len(good) > 1:
            del good[position]
        else:
            good.insert(position, data.draw(st.integers(min_value=0, max_value=255)))
    _decode_only_our_errors(bytes(good))


def _has_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)
