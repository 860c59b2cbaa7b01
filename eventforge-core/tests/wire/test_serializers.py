"""Payload serializers: json (default), msgpack (optional) and pickle (trusted peers only)."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydantic
import pytest
from eventforge.errors import (
    ConfigurationError,
    PluginImportError,
    ProtocolError,
    SerializationError,
)
from eventforge.message import Message
from eventforge.plugins._registry import registry, reset_registry
from eventforge.testing.distributions import write_distribution
from eventforge.wire import CONTENT_TYPE_HEADER, WireCodec, serializers
from eventforge.wire.serializers import (
    JsonSerializer,
    MsgpackSerializer,
    PickleSerializer,
    Serializer,
    b64decode,
    b64encode,
    get_serializer,
    serializer_for_content_type,
)


class Point(pydantic.BaseModel):
    x: int
    y: int


@dataclasses.dataclass
class Box:
    label: str
    points: list[Point]


PAYLOADS: list[Any] = [None, True, 0, -5, 2.5, "text ✓", [], {}, [1, [2, [3]]], {"a": {"b": None}}]


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("name", ["json", "msgpack", "pickle"])
def test_round_trip(name: str, payload: Any) -> None:
    serializer = get_serializer(name)
    assert serializer.loads(serializer.dumps(payload)) == payload


@pytest.mark.parametrize("name", ["json", "msgpack"])
def test_models_and_dataclasses_become_plain_structures(name: str) -> None:
    serializer = get_serializer(name)
    box = Box("b", [Point(x=1, y=2)])
    assert serializer.loads(serializer.dumps(box)) == {"label": "b", "points": [{"x": 1, "y": 2}]}
    assert serializer.loads(serializer.dumps(Point(x=3, y=4))) == {"x": 3, "y": 4}


def test_pickle_keeps_python_types() -> None:
    serializer = get_serializer("pickle")
    box = Box("b", [Point(x=1, y=2)])
    assert serializer.loads(serializer.dumps(box)) == box


def test_json_is_the_default_and_instances_are_shared() -> None:
    assert isinstance(get_serializer(None), JsonSerializer)
    assert get_serializer("json") is get_serializer(None)
    custom = JsonSerializer()
    assert get_serializer(custom) is custom


def test_content_types_name_the_serializer() -> None:
    assert serializer_for_content_type("application/json").name == "json"
    assert serializer_for_content_type("application/msgpack").name == "msgpack"
    assert serializer_for_content_type("application/x-python-pickle").name == "pickle"
    with pytest.raises(SerializationError, match="no serializer handles content-type 'text/nope'"):
        serializer_for_content_type("text/nope")


def test_unknown_serializer_name_is_a_lookup_error() -> None:
    with pytest.raises(LookupError, match="jsno"):
        get_serializer("jsno")


@pytest.mark.parametrize("name", ["json", "msgpack"])
def test_unserializable_payload_raises_serialization_error(name: str) -> None:
    with pytest.raises(SerializationError, match="serializ"):
        get_serializer(name).dumps(object())


def test_pickle_refuses_what_it_cannot_pickle() -> None:
    with pytest.raises(SerializationError, match="not picklable"):
        get_serializer("pickle").dumps(lambda: None)


@pytest.mark.parametrize(
    ("name", "data"),
    [("json", b"{oops"), ("msgpack", b"\xc1"), ("msgpack", b"\x92\x01"), ("pickle", b"garbage")],
)
def test_bad_bytes_raise_serialization_error(name: str, data: bytes) -> None:
    with pytest.raises(SerializationError, match="invalid"):
        get_serializer(name).loads(data)


def test_base64_helpers() -> None:
    assert b64decode(b64encode(b"\x00\xff")) == b"\x00\xff"
    with pytest.raises(SerializationError, match="must be a base64 string"):
        b64decode(5)
    with pytest.raises(SerializationError, match="not valid base64"):
        b64decode("***")


def test_base_serializer_is_abstract_in_practice() -> None:
    assert Serializer.binary is True
    assert Serializer.trusted_only is False
    assert PickleSerializer.trusted_only is True
    assert JsonSerializer.binary is False


# -- msgpack is optional -----------------------------------------------------------------------


def test_missing_msgpack_is_a_clear_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "msgpack", None)  # makes "import msgpack" fail
    with pytest.raises(ConfigurationError, match="pip install msgpack") as info:
        MsgpackSerializer()
    assert info.value.key == "serializer"
    assert isinstance(info.value.__cause__, ImportError)


def test_missing_msgpack_on_receive_is_a_protocol_error(monkeypatch: pytest.MonkeyPatch) -> None:
    data = WireCodec("msgpack").encode(Message("a.b", {"x": 1}))
    monkeypatch.setitem(sys.modules, "msgpack", None)
    monkeypatch.setattr(serializers, "_instances", {})
    with pytest.raises(ProtocolError, match="pip install msgpack"):
        WireCodec().decode(data)


def test_missing_msgpack_in_a_fresh_interpreter() -> None:
    code = (
        "import sys; sys.modules['msgpack'] = None\n"
        "from eventforge.errors import ConfigurationError\n"
        "from eventforge.wire.serializers import get_serializer\n"
        "import eventforge.wire.serializers\n"
        "print('msgpack' in sys.modules and sys.modules['msgpack'] is not None)\n"
        "try:\n"
        "    get_serializer('msgpack')\n"
        "except ConfigurationError as exc:\n"
        "    print('ConfigurationError:', exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert out.splitlines()[0] == "False", "importing the serializers must not import msgpack"
    assert "ConfigurationError: the msgpack serializer needs the 'msgpack' package" in out


# -- pickle is never unpickled from an untrusted peer ------------------------------------------


class _Exploit:
    """Unpickling this creates a directory: a harmless stand-in for arbitrary code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.mkdir, (str(self.marker),))


@pytest.fixture
def unpickle_calls(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Record every call of ``pickle.loads`` (and still perform it)."""
    calls: list[bytes] = []
    real = pickle.loads

    def spy(data: bytes, /, **kwargs: Any) -> Any:
        calls.append(data)
        return real(data, **kwargs)

    monkeypatch.setattr(pickle, "loads", spy)
    return calls


def test_untrusted_pickle_payload_is_never_unpickled(
    tmp_path: Path, unpickle_calls: list[bytes]
) -> None:
    marker = tmp_path / "exploited"
    data = WireCodec("pickle", trusted=True).encode(Message("a.b", _Exploit(marker)))
    assert not marker.exists()
    for reader in (WireCodec(), WireCodec("pickle"), WireCodec("json", trusted=False)):
        with pytest.raises(ProtocolError, match="refused a pickle payload from an untrusted peer"):
            reader.decode(data)
    assert unpickle_calls == []
    assert not marker.exists()


def test_trusted_reader_unpickles(tmp_path: Path, unpickle_calls: list[bytes]) -> None:
    marker = tmp_path / "exploited"
    data = WireCodec("pickle").encode(Message("a.b", _Exploit(marker)))
    WireCodec(trusted=True).decode(data)
    assert len(unpickle_calls) == 1
    assert marker.exists(), "the trusted path really unpickles (so the test above can fail)"


def test_trusted_pickle_round_trip_keeps_python_objects() -> None:
    box = Box("b", [Point(x=1, y=2)])
    codec = WireCodec("pickle", trusted=True)
    data = codec.encode(Message("a.b", box, {"k": 1}))
    received = codec.decode(data)
    assert received.payload == box
    assert received.headers[CONTENT_TYPE_HEADER] == "application/x-python-pickle"


# -- plugin serializers ----------------------------------------------------------------------

ROT13_PLUGIN = """
    import codecs

    from eventforge import hookimpl
    from eventforge.errors import SerializationError
    from eventforge.plugins import SerializerSpec
    from eventforge.wire.serializers import Serializer


    class Rot13(Serializer):
        name = "rot13"
        content_type = "application/x-rot13"

        def dumps(self, payload):
            if not isinstance(payload, str):
                raise SerializationError("rot13 carries text only")
            return codecs.encode(payload, "rot13").encode()

        def loads(self, data):
            return codecs.decode(data.decode(), "rot13")


    @hookimpl
    def eventforge_serializers():
        return [
            SerializerSpec(
                name="rot13", target="acme_rot13:Rot13", content_type="application/x-rot13"
            )
        ]
"""


@pytest.fixture
def fresh_serializers(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process has created no serializer yet (as in a receiver that never encoded)."""
    monkeypatch.setattr(serializers, "_instances", {})


@pytest.fixture
def rot13_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_serializers: None
) -> Iterator[None]:
    site = tmp_path / "site"
    write_distribution(
        site,
        "acme-rot13",
        entry_points={"rot13": "acme_rot13"},
        modules={"acme_rot13": ROT13_PLUGIN},
    )
    monkeypatch.syspath_prepend(str(site))
    reset_registry(search_path=[str(site), *sys.path])
    yield
    reset_registry()


def _envelope(content_type: str, payload: str) -> bytes:
    return json.dumps(
        {
            "version": 1,
            "id": "m1",
            "topic": "a.b",
            "payload": payload,
            "headers": {CONTENT_TYPE_HEADER: content_type},
        }
    ).encode()


def test_a_plugin_serializer_is_chosen_by_name_and_created_once(rot13_installed: None) -> None:
    rot13 = get_serializer("rot13")
    assert type(rot13).__name__ == "Rot13"
    assert rot13.content_type == "application/x-rot13"
    assert get_serializer("rot13") is rot13
    assert serializer_for_content_type("application/x-rot13") is rot13
    assert rot13.loads(rot13.dumps("hello")) == "hello"


def test_a_receiver_decodes_a_plugin_content_type_it_never_encoded(rot13_installed: None) -> None:
    data = _envelope("application/x-rot13", b64encode(b"uryyb"))
    message = WireCodec().decode(data)
    assert message.payload == "hello"
    assert type(serializer_for_content_type("application/x-rot13")).__name__ == "Rot13"


def test_a_plugin_serializer_encodes_through_the_wire(rot13_installed: None) -> None:
    data = WireCodec("rot13").encode(Message("a.b", "hello"))
    assert json.loads(data)["payload"] == b64encode(b"uryyb")
    assert WireCodec().decode(data).payload == "hello"


@pytest.mark.parametrize(
    ("content_type", "name"),
    [
        ("application/json", "json"),
        ("application/msgpack", "msgpack"),
        ("application/x-python-pickle", "pickle"),
    ],
)
def test_a_builtin_content_type_is_found_before_any_serializer_was_created(
    fresh_serializers: None, content_type: str, name: str
) -> None:
    # The text comes off the wire: an equal string, never the very object of the class.
    received = json.loads(json.dumps(content_type))
    assert serializer_for_content_type(received).name == name


def test_builtin_serializers_work_while_a_broken_plugin_is_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_serializers: None
) -> None:
    site = tmp_path / "site"
    write_distribution(
        site,
        "acme-broken",
        entry_points={"broken": "acme_broken"},
        modules={"acme_broken": "raise RuntimeError('the driver is missing')"},
    )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("EVENTFORGE_STRICT_PLUGINS", "1")
    reset_registry(search_path=[str(site)])
    try:
        with pytest.raises(PluginImportError):
            registry()  # strict: any plugin lookup fails
        received = json.loads(json.dumps("application/msgpack"))
        assert serializer_for_content_type(received).name == "msgpack"
        assert get_serializer("pickle").name == "pickle"
        assert WireCodec("msgpack").decode(
            WireCodec("msgpack").encode(Message("a.b", [1]))
        ).payload == [1]
    finally:
        monkeypatch.delenv("EVENTFORGE_STRICT_PLUGINS")
        reset_registry()


def test_a_receiver_decodes_msgpack_it_never_encoded(fresh_serializers: None) -> None:
    import msgpack

    data = _envelope("application/msgpack", b64encode(msgpack.packb({"n": [1, 2]})))
    assert WireCodec().decode(data).payload == {"n": [1, 2]}


def test_msgpack_refuses_maps_with_non_string_keys() -> None:
    import msgpack

    # strict_map_key: only str (and bytes) keys, as in JSON; a hostile map cannot build
    # dicts keyed by numbers or None.
    for hostile in ({1: "a"}, {1.5: "a"}, {None: "a"}):
        data = msgpack.packb(hostile, use_bin_type=True)
        with pytest.raises(SerializationError, match="invalid msgpack payload"):
            get_serializer("msgpack").loads(data)


def test_a_serializer_must_implement_both_directions() -> None:
    class OnlyDumps(Serializer):
        def dumps(self, payload: Any) -> bytes:
            return b""

    class OnlyLoads(Serializer):
        def loads(self, data: bytes) -> Any:
            return None

    for incomplete in (OnlyDumps, OnlyLoads):
        with pytest.raises(TypeError, match="abstract"):
            incomplete()  # type: ignore[abstract]


def test_the_bytes_serializer_carries_bytes_unchanged_and_refuses_anything_else() -> None:
    carrier = get_serializer("bytes")
    assert carrier.content_type == "application/octet-stream"
    for payload in (b"\x00\xff", bytearray(b"\x00\xff"), memoryview(b"\x00\xff")):
        data = carrier.dumps(payload)
        assert (type(data), data) == (bytes, b"\x00\xff")
        assert carrier.loads(data) == b"\x00\xff"
    for other in ({"a": 1}, "text", 3):
        with pytest.raises(SerializationError, match=r"bytes payloads only.*json or msgpack"):
            carrier.dumps(other)
