"""Payload serializers: ``json`` (default), ``msgpack``, ``pickle`` and ``bytes``.

The envelope on the wire is always JSON (:mod:`eventforge.wire`); a serializer decides how the
*payload* inside it is carried. ``json`` keeps the payload as a JSON value, readable with any
tool. The binary serializers carry it as base64 text and name themselves in the
``content-type`` header. ``pickle`` is never a default and is refused on receive unless the
application trusts its peers: unpickling attacker-controlled bytes runs attacker code.
``bytes`` carries a payload that *is* bytes unchanged (the JSON codec picks it by itself for a
``bytes`` payload); ``msgpack`` carries bytes anywhere in the payload natively.
"""

from __future__ import annotations

import base64
import binascii
import importlib
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import pydantic_core

from eventforge.errors import ConfigurationError, SerializationError
from eventforge.plugins import load_named, registry

__all__ = [
    "BytesSerializer",
    "JsonSerializer",
    "MsgpackSerializer",
    "PickleSerializer",
    "Serializer",
    "get_serializer",
    "serializer_for_content_type",
]


class Serializer(ABC):
    """Turns a payload into bytes and back. Subclasses set ``name`` and ``content_type``."""

    name: ClassVar[str] = "serializer"
    content_type: ClassVar[str] = "application/octet-stream"
    trusted_only: ClassVar[bool] = False
    binary: ClassVar[bool] = True

    @abstractmethod
    def dumps(self, payload: Any) -> bytes:
        """Encode ``payload``; raise :class:`SerializationError` when it cannot be."""

    @abstractmethod
    def loads(self, data: bytes) -> Any:
        """Decode bytes produced by :meth:`dumps`; raise :class:`SerializationError` on bad input."""


class JsonSerializer(Serializer):
    """JSON through pydantic-core: pydantic models and dataclasses encode as objects."""

    name = "json"
    content_type = "application/json"
    binary = False

    def dumps(self, payload: Any) -> bytes:
        try:
            return pydantic_core.to_json(payload)
        except (pydantic_core.PydanticSerializationError, TypeError, ValueError) as exc:
            raise SerializationError(
                f"payload of type {type(payload).__name__} is not JSON-serializable: {exc}. Send "
                "JSON-safe values, pydantic models or dataclasses, or choose another serializer"
            ) from exc

    def loads(self, data: bytes) -> Any:
        try:
            return pydantic_core.from_json(data)
        except ValueError as exc:
            raise SerializationError(f"invalid JSON payload: {exc}") from exc


class MsgpackSerializer(Serializer):
    """MessagePack, when the optional ``msgpack`` package is installed (imported on first use)."""

    name = "msgpack"
    content_type = "application/msgpack"

    def __init__(self) -> None:
        try:
            self._msgpack = importlib.import_module("msgpack")
        except ImportError as exc:
            raise ConfigurationError(
                "the msgpack serializer needs the 'msgpack' package: pip install msgpack "
                "(or pip install 'eventforge-core[msgpack]')",
                key="serializer",
            ) from exc

    def dumps(self, payload: Any) -> bytes:
        # bytes (anywhere in the payload) stay bytes; only what msgpack cannot carry itself
        # (models, dataclasses, datetimes, sets) goes through the JSON-safe conversion
        try:
            return bytes(self._msgpack.packb(payload, use_bin_type=True, default=_jsonable))
        except (TypeError, ValueError, OverflowError) as exc:
            raise SerializationError(f"payload is not msgpack-serializable: {exc}") from exc

    def loads(self, data: bytes) -> Any:
        try:
            return self._msgpack.unpackb(data, raw=False, strict_map_key=True)
        except Exception as exc:
            raise SerializationError(
                f"invalid msgpack payload: {type(exc).__name__}: {exc}"
            ) from exc


class BytesSerializer(Serializer):
    """A payload that is ``bytes`` (or ``bytearray`` / ``memoryview``), carried unchanged."""

    name = "bytes"
    content_type = "application/octet-stream"

    def dumps(self, payload: Any) -> bytes:
        if isinstance(payload, (bytes, bytearray, memoryview)):
            return bytes(payload)
        raise SerializationError(
            f"the bytes serializer carries bytes payloads only, got {type(payload).__name__}; "
            "use json or msgpack for structured payloads"
        )

    def loads(self, data: bytes) -> Any:
        return data


class PickleSerializer(Serializer):
    """Python pickle. Refused on receive unless the application explicitly trusts its peers."""

    name = "pickle"
    content_type = "application/x-python-pickle"
    trusted_only = True

    def dumps(self, payload: Any) -> bytes:
        import pickle

        try:
            return pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise SerializationError(f"payload is not picklable: {exc}") from exc

    def loads(self, data: bytes) -> Any:
        import pickle

        try:
            return pickle.loads(data)
        except Exception as exc:
            raise SerializationError(f"invalid pickle payload: {type(exc).__name__}") from exc


def _jsonable(payload: Any) -> Any:
    """Turn pydantic models and dataclasses into plain JSON-safe structures."""
    if isinstance(payload, (str, int, float, bool, type(None))):
        return payload
    return pydantic_core.to_jsonable_python(payload)


_BUILTIN: dict[str, type[Serializer]] = {
    "json": JsonSerializer,
    "msgpack": MsgpackSerializer,
    "pickle": PickleSerializer,
    "bytes": BytesSerializer,
}
_instances: dict[str, Serializer] = {}


def get_serializer(name: str | Serializer | None) -> Serializer:
    """Return the serializer called ``name`` (built-in or plugin), created once."""
    if name is None:
        name = "json"
    if isinstance(name, Serializer):
        return name
    cached = _instances.get(name)
    if cached is not None:
        return cached
    if name in _BUILTIN:
        instance = _BUILTIN[name]()
    else:
        factory = load_named("serializer", name)
        instance = factory()
    _instances[name] = instance
    _instances[instance.content_type] = instance
    return instance


def serializer_for_content_type(content_type: str) -> Serializer:
    """Return the serializer that produced ``content_type`` payloads."""
    cached = _instances.get(content_type)
    if cached is not None:
        return cached
    for name, cls in _BUILTIN.items():
        if cls.content_type == content_type:
            return get_serializer(name)

    for entry in registry().entries("serializer"):
        if getattr(entry.spec, "content_type", None) == content_type:
            return get_serializer(entry.spec.name)
    raise SerializationError(
        f"no serializer handles content-type {content_type!r}; install the plugin that provides it"
    )


def b64encode(data: bytes) -> str:
    """Binary payloads travel as base64 text inside the JSON envelope."""
    return base64.b64encode(data).decode("ascii")


def b64decode(text: Any) -> bytes:
    """Decode a base64 payload; raise :class:`SerializationError` on bad input."""
    if not isinstance(text, str):
        raise SerializationError("binary payload must be a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SerializationError(f"binary payload is not valid base64: {exc}") from exc
