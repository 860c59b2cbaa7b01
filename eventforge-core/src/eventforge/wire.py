"""The JSON envelope that every network transport carries.

One envelope, version 1::

    {"version": 1, "id": "…", "topic": "orders.created", "payload": <JSON>,
     "headers": {"k": "v"}, "timestamp": 1732400000.5, "reply_to": null, "correlation_id": null}

Encoding uses pydantic-core (about five times faster than the stdlib). Decoding treats the
bytes as untrusted: size is checked first, then the JSON is parsed and validated against the
schema with pydantic. Huge integers, deep nesting, invalid UTF-8, wrong types, a missing id or an
unknown version all raise :class:`~eventforge.errors.ProtocolError`; nothing else escapes.
"""

from __future__ import annotations

from typing import Any

import pydantic
import pydantic_core
from typing_extensions import NotRequired, TypedDict

from .errors import EventforgeError, FrameTooLarge, ProtocolError, SerializationError
from .message import Message
from .serializers import (
    Serializer,
    b64decode,
    b64encode,
    get_serializer,
    serializer_for_content_type,
)
from .topics import validate_topic

__all__ = [
    "CONTENT_TYPE_HEADER",
    "DEFAULT_MAX_SIZE",
    "WIRE_VERSION",
    "WireCodec",
    "decode_envelope",
    "encode_envelope",
]

WIRE_VERSION = 1
CONTENT_TYPE_HEADER = "content-type"
DEFAULT_MAX_SIZE = 1024 * 1024

HeaderValue = str | int | float | bool | None


class _Envelope(TypedDict):
    __pydantic_config__ = pydantic.ConfigDict(strict=True)  # type: ignore[misc]

    version: int
    id: str
    topic: str
    payload: Any
    headers: NotRequired[dict[str, HeaderValue]]
    timestamp: NotRequired[float]
    reply_to: NotRequired[str | None]
    correlation_id: NotRequired[str | None]


_ENVELOPE = pydantic.TypeAdapter(_Envelope)


class WireCodec:
    """Encodes messages to envelope bytes and decodes untrusted bytes back.

    ``serializer`` chooses how payloads are encoded (``json`` by default). Payloads of a
    ``trusted_only`` serializer (``pickle``) are decoded only when ``trusted=True``; otherwise
    the envelope is rejected and the payload bytes are never handed to the serializer.
    """

    __slots__ = ("_json", "max_size", "serializer", "trusted")

    def __init__(
        self,
        serializer: str | Serializer | None = None,
        *,
        trusted: bool = False,
        max_size: int = DEFAULT_MAX_SIZE,
    ) -> None:
        self.serializer = get_serializer(serializer)
        self.trusted = trusted
        self.max_size = max_size
        self._json = not self.serializer.binary

    def encode(self, message: Message) -> bytes:
        """Return the envelope bytes of ``message``; raise if they exceed ``max_size``."""
        headers = message.headers
        payload = message.payload
        if headers:
            _check_headers(message)
        if not self._json:
            payload = b64encode(self.serializer.dumps(payload))
            headers = {**headers, CONTENT_TYPE_HEADER: self.serializer.content_type}
        try:
            data = pydantic_core.to_json(
                {
                    "version": WIRE_VERSION,
                    "id": message.id,
                    "topic": message.topic,
                    "payload": payload,
                    "headers": headers,
                    "timestamp": message.timestamp,
                    "reply_to": message.reply_to,
                    "correlation_id": message.correlation_id,
                }
            )
        except (pydantic_core.PydanticSerializationError, TypeError, ValueError) as exc:
            raise SerializationError(
                f"message on {message.topic!r} cannot be encoded as JSON: {exc}. Send JSON-safe "
                "values, pydantic models or dataclasses, or choose another serializer"
            ) from exc
        if len(data) > self.max_size:
            raise FrameTooLarge(len(data), self.max_size)
        return data

    def decode(self, data: bytes | bytearray | memoryview | str) -> Message:
        """Validate untrusted envelope bytes and return the message."""
        if isinstance(data, str):
            try:
                data = data.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ProtocolError(f"envelope text is not encodable as UTF-8: {exc}") from None
        elif isinstance(data, memoryview):
            data = data.tobytes()
        if len(data) > self.max_size:
            raise FrameTooLarge(len(data), self.max_size)
        try:
            raw = pydantic_core.from_json(data)
        except ValueError as exc:
            raise ProtocolError(f"envelope is not valid JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise ProtocolError(f"envelope must be a JSON object, got {type(raw).__name__}")
        version = raw.get("version")
        if version != WIRE_VERSION:
            raise ProtocolError(
                f"unsupported envelope version {version!r}; this peer speaks version "
                f"{WIRE_VERSION}. Upgrade the older side"
            )
        try:
            env = _ENVELOPE.validate_python(raw)
        except pydantic.ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
                for err in exc.errors()[:5]
            )
            raise ProtocolError(f"envelope does not match the schema: {problems}") from None
        if not env["id"]:
            raise ProtocolError("envelope has an empty id; every message needs a unique id")
        try:
            validate_topic(env["topic"])
        except (ValueError, TypeError) as exc:
            raise ProtocolError(f"envelope has an invalid topic: {exc}") from None
        headers: dict[str, Any] = env.get("headers") or {}
        payload = env["payload"]
        content_type = headers.get(CONTENT_TYPE_HEADER)
        if content_type is not None and content_type != "application/json":
            payload = self._decode_payload(str(content_type), payload)
        return Message(
            env["topic"],
            payload,
            headers,
            id=env["id"],
            timestamp=env.get("timestamp"),
            reply_to=env.get("reply_to"),
            correlation_id=env.get("correlation_id"),
        )

    def _decode_payload(self, content_type: str, payload: Any) -> Any:
        try:
            serializer = serializer_for_content_type(content_type)
        except EventforgeError as exc:
            # An unknown content type, or a known one whose package is missing here (msgpack).
            raise ProtocolError(f"cannot decode a {content_type!r} payload: {exc}") from exc
        if serializer.trusted_only and not self.trusted:
            raise ProtocolError(
                f"refused a {serializer.name} payload from an untrusted peer: decoding it could "
                "run arbitrary code. Pass trusted=True only if every peer is yours"
            )
        try:
            return serializer.loads(b64decode(payload))
        except SerializationError as exc:
            raise ProtocolError(str(exc)) from None
        except Exception as exc:
            # A plugin serializer that raises anything else still must not crash the reader.
            raise ProtocolError(
                f"the {serializer.name} serializer failed on a payload: {type(exc).__name__}: {exc}"
            ) from exc


_HEADER_TYPES = (str, int, float, bool)


def _check_headers(message: Message) -> None:
    """Refuse, on the sending side, headers that every receiver would reject."""
    for key, value in message.headers.items():
        if not isinstance(key, str):
            raise SerializationError(
                f"header names must be str; message on {message.topic!r} has {key!r}"
            )
        if value is not None and not isinstance(value, _HEADER_TYPES):
            raise SerializationError(
                f"header {key!r} of the message on {message.topic!r} is a "
                f"{type(value).__name__}; header values must be str, int, float, bool or None. "
                "Put structured data in the payload"
            )


_default_codec: WireCodec | None = None


def _codec() -> WireCodec:
    global _default_codec
    if _default_codec is None:
        _default_codec = WireCodec()
    return _default_codec


def encode_envelope(message: Message) -> bytes:
    """Encode ``message`` with the default JSON codec."""
    return _codec().encode(message)


def decode_envelope(data: bytes | bytearray | memoryview | str) -> Message:
    """Decode untrusted envelope bytes with the default JSON codec."""
    return _codec().decode(data)
