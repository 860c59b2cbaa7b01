"""The JSON envelope that every network transport carries.

One envelope, version 1::

    {"version": 1, "id": "…", "topic": "orders.created", "payload": <JSON>,
     "headers": {"k": "v"}, "timestamp": 1732400000.5, "reply_to": null, "correlation_id": null}

A payload that is ``bytes`` travels as base64 text with ``content-type:
application/octet-stream`` and arrives as ``bytes`` (with the JSON serializer; a binary
serializer such as msgpack carries bytes itself). Encoding uses pydantic-core (about five times
faster than the stdlib). Decoding treats the
bytes as untrusted: size is checked first, then the JSON is parsed and validated against the
schema with pydantic. Huge integers, deep nesting, invalid UTF-8, wrong types, a missing id or an
unknown version all raise :class:`~eventforge.errors.ProtocolError`; nothing else escapes.
"""

from __future__ import annotations

from typing import Any

import pydantic
import pydantic_core
from typing_extensions import NotRequired, TypedDict

from eventforge.errors import EventforgeError, FrameTooLarge, ProtocolError, SerializationError
from eventforge.message import Message
from eventforge.topics import validate_topic
from eventforge.wire.serializers import (
    Serializer,
    b64decode,
    b64encode,
    get_serializer,
    serializer_for_content_type,
)

__all__ = [
    "BYTES_CONTENT_TYPE",
    "CONTENT_TYPE_HEADER",
    "DEFAULT_MAX_SIZE",
    "WIRE_VERSION",
    "WireCodec",
    "decode_envelope",
    "encode_envelope",
]

WIRE_VERSION = 1
CONTENT_TYPE_HEADER = "content-type"
BYTES_CONTENT_TYPE = "application/octet-stream"
_BYTES_CLASSES: frozenset[type[Any]] = frozenset({bytes, bytearray, memoryview})
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
        payload: Any = message.payload
        if headers:
            _check_headers(message)
        if not self._json:
            payload = b64encode(self.serializer.dumps(payload))
            headers = {**headers, CONTENT_TYPE_HEADER: self.serializer.content_type}
        elif payload.__class__ in _BYTES_CLASSES:
            payload = b64encode(bytes(payload))
            headers = {**headers, CONTENT_TYPE_HEADER: BYTES_CONTENT_TYPE}
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
        """Validate untrusted envelope bytes and return the message.

        The envelope every eventforge peer sends (all eight fields, plain JSON types, a JSON
        payload) is checked by hand and built directly; anything else is judged by the schema
        validation of :meth:`decode_strict`, which accepts or rejects it with the canonical
        error. The fast path accepts a subset of what the schema accepts and builds the same
        message (a property test holds the two side by side).
        """
        if data.__class__ is bytes and len(data) <= self.max_size:
            try:
                raw: Any = _from_json(data)
            except ValueError:
                return self.decode_strict(data)
            if raw.__class__ is dict:
                message = _plain_message(raw)
                if message is not None:
                    return message
                return self._from_raw(raw)
        return self.decode_strict(data)

    def decode_strict(self, data: bytes | bytearray | memoryview | str) -> Message:
        """Decode with the full schema validation (what :meth:`decode` falls back to)."""
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
        return self._from_raw(raw)

    def _from_raw(self, raw: Any) -> Message:
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


# -- the fast path of decode: the envelope every eventforge peer sends ---------------------

_from_json = pydantic_core.from_json
_PLAIN_HEADER_TYPES = frozenset({str, int, float, bool, type(None)})
_FIELDS = frozenset(
    {"version", "id", "topic", "payload", "headers", "timestamp", "reply_to", "correlation_id"}
)
_new_message = Message.__new__
_valid_topic = validate_topic


def _plain_message(raw: dict[str, Any]) -> Message | None:
    """Build the message from a decoded envelope, or ``None`` when it is not plainly valid."""
    if len(raw) == 8:
        # What every eventforge peer sends: all eight fields, headers a dict, a float
        # timestamp. Checked in one expression, built without keyword parsing.
        try:
            id_ = raw["id"]
            topic = raw["topic"]
            headers = raw["headers"]
            timestamp = raw["timestamp"]
            reply_to = raw["reply_to"]
            correlation_id = raw["correlation_id"]
            version = raw["version"]
            payload = raw["payload"]
        except KeyError:
            return None
        if (
            version == 1
            and version.__class__ is int
            and id_.__class__ is str
            and id_
            and topic.__class__ is str
            and headers.__class__ is dict
            and timestamp.__class__ is float
            and (reply_to is None or reply_to.__class__ is str)
            and (correlation_id is None or correlation_id.__class__ is str)
            and (not headers or _plain_headers(headers))
        ):
            try:
                _valid_topic(topic)
            except (TypeError, ValueError):
                return None
            message = _new_message(Message)
            message.topic = topic
            message.payload = payload
            message.headers = headers
            message.id = id_
            message.timestamp = timestamp
            message.reply_to = reply_to
            message.correlation_id = correlation_id
            return message
    return _plain_general(raw)


def _plain_headers(headers: dict[str, Any]) -> bool:
    for value in headers.values():
        if value.__class__ not in _PLAIN_HEADER_TYPES:
            return False
    content_type = headers.get(CONTENT_TYPE_HEADER)
    return content_type is None or content_type == "application/json"


def _plain_general(raw: dict[str, Any]) -> Message | None:
    version = raw.get("version")
    if version.__class__ is not int or version != 1 or "payload" not in raw:
        return None
    if not _FIELDS.issuperset(raw):
        return None
    id_ = raw.get("id")
    topic = raw.get("topic")
    if id_.__class__ is not str or not id_ or topic.__class__ is not str:
        return None
    headers = raw.get("headers")
    if headers is not None:
        if headers.__class__ is not dict:
            return None
        for value in headers.values():
            if value.__class__ not in _PLAIN_HEADER_TYPES:
                return None
        content_type = headers.get(CONTENT_TYPE_HEADER)
        if content_type is not None and content_type != "application/json":
            return None
    elif "headers" in raw:
        return None
    timestamp = raw.get("timestamp")
    if timestamp is not None and timestamp.__class__ is not float:
        return None
    if "timestamp" in raw and timestamp is None:
        return None
    reply_to = raw.get("reply_to")
    if reply_to is not None and reply_to.__class__ is not str:
        return None
    correlation_id = raw.get("correlation_id")
    if correlation_id is not None and correlation_id.__class__ is not str:
        return None
    try:
        validate_topic(topic)
    except (TypeError, ValueError):
        return None
    return Message(
        topic,
        raw["payload"],
        headers or {},
        id=id_,
        timestamp=timestamp,
        reply_to=reply_to,
        correlation_id=correlation_id,
    )


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
