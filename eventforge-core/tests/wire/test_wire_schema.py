"""The wire envelope's guards: the frame size limit to the byte, the strict schema, a failing
plugin serializer, and decode's fast path held against the schema validation it shortcuts."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydantic_core
import pytest
from eventforge.errors import FrameTooLarge, ProtocolError
from eventforge.message import Message
from eventforge.plugins._registry import reset_registry
from eventforge.testing.distributions import write_distribution
from eventforge.wire import (
    CONTENT_TYPE_HEADER,
    DEFAULT_MAX_SIZE,
    WireCodec,
    decode_envelope,
    encode_envelope,
    serializers,
)
from eventforge.wire.serializers import b64encode
from hypothesis import given, settings
from hypothesis import strategies as st

# -- the frame size limit ----------------------------------------------------------------------


def _message_encoding_to(size: int) -> Message:
    """A message whose envelope is exactly ``size`` bytes long."""
    message = Message("a.b", "", {}, id="m1", timestamp=1.5)
    overhead = len(WireCodec(max_size=10**9).encode(message))
    message.payload = "x" * (size - overhead)
    assert len(WireCodec(max_size=10**9).encode(message)) == size
    return message


def test_the_default_frame_limit_is_one_mebibyte() -> None:
    assert DEFAULT_MAX_SIZE == 1024 * 1024
    assert WireCodec().max_size == DEFAULT_MAX_SIZE
    fits = _message_encoding_to(DEFAULT_MAX_SIZE)
    assert decode_envelope(encode_envelope(fits)).payload == fits.payload
    too_big = _message_encoding_to(DEFAULT_MAX_SIZE + 1)
    with pytest.raises(FrameTooLarge) as info:
        encode_envelope(too_big)
    assert info.value.limit == DEFAULT_MAX_SIZE
    data = WireCodec(max_size=10**9).encode(too_big)
    with pytest.raises(FrameTooLarge):
        decode_envelope(data)


@pytest.mark.parametrize("form", [bytes, bytearray, memoryview, str])
def test_an_envelope_of_exactly_max_size_passes_and_one_byte_more_does_not(form: Any) -> None:
    limit = 300
    message = _message_encoding_to(limit)
    data = WireCodec(max_size=limit).encode(message)
    encoded = form(data.decode()) if form is str else form(data)
    assert WireCodec(max_size=limit).decode(encoded).payload == message.payload
    assert WireCodec(max_size=limit).decode_strict(encoded).payload == message.payload
    with pytest.raises(FrameTooLarge):
        WireCodec(max_size=limit - 1).encode(message)
    with pytest.raises(FrameTooLarge):
        WireCodec(max_size=limit - 1).decode(encoded)
    with pytest.raises(FrameTooLarge):
        WireCodec(max_size=limit - 1).decode_strict(encoded)


# -- the schema is strict ----------------------------------------------------------------------

BASE = {"version": 1, "id": "m1", "topic": "a.b", "payload": 1}


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("timestamp", "1.5", "timestamp: Input should be a valid number"),
        ("timestamp", True, "timestamp: Input should be a valid number"),
        ("correlation_id", 7, "correlation_id: Input should be a valid string"),
        ("reply_to", False, "reply_to: Input should be a valid string"),
        ("headers", {"h": [1]}, "headers.h"),
        ("id", 12, "id: Input should be a valid string"),
    ],
)
@pytest.mark.parametrize("full", [False, True])
def test_values_of_the_wrong_json_type_are_refused_not_converted(
    field: str, value: Any, problem: str, full: bool
) -> None:
    envelope = {**BASE, field: value}
    if full:  # all eight fields: the shape every peer sends
        envelope = {
            "headers": {},
            "timestamp": 1.5,
            "reply_to": None,
            "correlation_id": None,
            **envelope,
        }
    data = json.dumps(envelope).encode()
    for decode in (WireCodec().decode, WireCodec().decode_strict):
        with pytest.raises(ProtocolError, match="envelope does not match the schema") as info:
            decode(data)
        assert problem in str(info.value)


@pytest.mark.parametrize("topic", ["a..b", "a.*", "a b", ""])
@pytest.mark.parametrize("full", [False, True])
def test_an_invalid_topic_is_a_protocol_error_in_any_envelope_shape(topic: str, full: bool) -> None:
    envelope: dict[str, Any] = {**BASE, "topic": topic}
    if full:
        envelope.update(headers={}, timestamp=1.5, reply_to=None, correlation_id=None)
    with pytest.raises(ProtocolError, match="envelope has an invalid topic"):
        WireCodec().decode(json.dumps(envelope).encode())


@pytest.mark.parametrize("version", [0, 2, True, 1.0, "1"])
@pytest.mark.parametrize("full", [False, True])
def test_only_version_one_is_understood(version: Any, full: bool) -> None:
    envelope: dict[str, Any] = {**BASE, "version": version}
    if full:
        envelope.update(headers={}, timestamp=1.5, reply_to=None, correlation_id=None)
    for decode in (WireCodec().decode, WireCodec().decode_strict):
        with pytest.raises(ProtocolError):
            decode(json.dumps(envelope).encode())


def test_an_integer_timestamp_is_a_number_like_any_other() -> None:
    message = WireCodec().decode(json.dumps({**BASE, "timestamp": 2}).encode())
    assert message.timestamp == 2.0


def test_a_schema_error_names_the_first_five_problems() -> None:
    envelope = {
        "version": 1,
        "id": 1,
        "topic": 2,
        "payload": None,
        "headers": {"a": [], "b": [], "c": [], "d": []},
        "timestamp": "t",
    }
    with pytest.raises(ProtocolError) as info:
        WireCodec().decode(json.dumps(envelope).encode())
    problems = str(info.value).removeprefix("envelope does not match the schema: ").split("; ")
    assert len(problems) == 5
    assert problems[0] == "id: Input should be a valid string"


def test_codec_options_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        WireCodec("json", True)  # type: ignore[misc]


# -- pickle only from trusted peers ------------------------------------------------------------


def test_a_pickle_payload_is_refused_unless_the_reader_trusts_its_peers() -> None:
    data = WireCodec("pickle").encode(Message("a.b", {1, 2}))
    for reader in (WireCodec(), WireCodec("pickle"), WireCodec(trusted=False)):
        with pytest.raises(ProtocolError, match="refused a pickle payload from an untrusted peer"):
            reader.decode(data)
    assert WireCodec(trusted=True).decode(data).payload == {1, 2}


# -- a plugin serializer that fails ------------------------------------------------------------

FAILING_PLUGIN = """
    from eventforge import hookimpl
    from eventforge.errors import SerializationError
    from eventforge.plugins import SerializerSpec
    from eventforge.wire.serializers import Serializer


    class Crashes(Serializer):
        name = "crashes"
        content_type = "application/x-crashes"

        def dumps(self, payload):
            return b"x"

        def loads(self, data):
            raise KeyError("no such table")


    class Refuses(Serializer):
        name = "refuses"
        content_type = "application/x-refuses"

        def dumps(self, payload):
            return b"x"

        def loads(self, data):
            raise SerializationError("refuses payload: checksum mismatch")


    @hookimpl
    def eventforge_serializers():
        return [
            SerializerSpec(name="crashes", target="acme_failing:Crashes",
                           content_type="application/x-crashes"),
            SerializerSpec(name="refuses", target="acme_failing:Refuses",
                           content_type="application/x-refuses"),
        ]
"""


@pytest.fixture
def failing_serializers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(serializers, "_instances", {})
    site = tmp_path / "site"
    write_distribution(
        site,
        "acme-failing",
        entry_points={"failing": "acme_failing"},
        modules={"acme_failing": FAILING_PLUGIN},
    )
    monkeypatch.syspath_prepend(str(site))
    reset_registry(search_path=[str(site), *sys.path])
    yield
    reset_registry()


def _binary_envelope(content_type: str) -> bytes:
    return json.dumps(
        {**BASE, "payload": b64encode(b"x"), "headers": {CONTENT_TYPE_HEADER: content_type}}
    ).encode()


def test_a_plugin_serializer_crashing_on_a_payload_is_a_protocol_error(
    failing_serializers: None,
) -> None:
    with pytest.raises(ProtocolError) as info:
        WireCodec().decode(_binary_envelope("application/x-crashes"))
    assert str(info.value) == (
        "the crashes serializer failed on a payload: KeyError: 'no such table'"
    )
    assert isinstance(info.value.__cause__, KeyError)


def test_a_plugin_serializer_refusing_a_payload_is_a_protocol_error(
    failing_serializers: None,
) -> None:
    with pytest.raises(ProtocolError) as info:
        WireCodec().decode(_binary_envelope("application/x-refuses"))
    assert str(info.value) == "refuses payload: checksum mismatch"
    assert type(info.value) is ProtocolError


def test_an_unknown_content_type_is_a_protocol_error_that_says_so() -> None:
    with pytest.raises(ProtocolError) as info:
        WireCodec().decode(_binary_envelope("application/x-unheard-of"))
    assert str(info.value).startswith("cannot decode a 'application/x-unheard-of' payload: ")
    assert "install the plugin that provides it" in str(info.value)


# -- decode's fast path agrees with the schema -------------------------------------------------

field_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["", "a", "a.b", "a..b", "$tcp.x", "application/json", "application/msgpack"]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(
        st.sampled_from(["k", "content-type"]),
        st.one_of(st.none(), st.integers(), st.text(max_size=3), st.lists(st.none(), max_size=1)),
        max_size=2,
    ),
)
FIELDS = ["version", "id", "topic", "payload", "headers", "timestamp", "reply_to", "correlation_id"]
envelope_dicts = st.dictionaries(
    st.sampled_from([*FIELDS, "x"]),
    field_values,
).map(lambda d: {"version": 1, "id": "i", "topic": "t.u", "payload": 0, **d})

_FULL_ENVELOPE: dict[str, object] = {
    "version": 1,
    "id": "i",
    "topic": "t.u",
    "payload": {"n": 1},
    "headers": {"k": "v"},
    "timestamp": 1.5,
    "reply_to": None,
    "correlation_id": None,
}
# What eventforge peers send (all eight fields), with one field changed or left out: the fast
# path's cases.
full_envelopes = st.tuples(
    st.sampled_from(sorted(_FULL_ENVELOPE)), st.one_of(field_values, st.just(KeyError))
).map(
    lambda change: (
        {k: v for k, v in _FULL_ENVELOPE.items() if k != change[0]}
        if change[1] is KeyError
        else {**_FULL_ENVELOPE, change[0]: change[1]}
    )
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(envelope_dicts, full_envelopes), st.booleans())
def test_fast_decode_agrees_with_schema_validation(
    envelope: dict[str, object], drop_version: bool
) -> None:
    """decode's hand-checked fast path accepts and builds exactly what the schema would."""
    if drop_version:
        envelope.pop("version", None)
    body = pydantic_core.to_json(envelope)
    outcomes = []
    codec = WireCodec()
    for decode in (codec.decode_strict, codec.decode):
        try:
            message = decode(body)
        except ProtocolError as exc:
            outcomes.append(("error", str(exc)))
        else:
            fields = message.to_dict()
            if "timestamp" not in envelope:
                fields.pop("timestamp")
            if not envelope.get("id"):
                fields.pop("id")
            outcomes.append(("ok", fields))
    assert outcomes[0] == outcomes[1]
