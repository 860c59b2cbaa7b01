"""The bytes of one publish (method, header and body frames), built directly.

pamqp marshals a publish through a generic, per-field encoder (each property looked up by
name and type): most of what a publish costs the event loop. The transport's messages use a
handful of the basic properties, so :func:`publish_bytes` writes those frames itself, byte
for byte as pamqp would (``test_marshal`` compares them), and leaves any message that uses
another property to pamqp.
"""

from __future__ import annotations

import struct
from typing import Any

from pamqp import encode
from pamqp.commands import Basic

__all__ = ["publish_bytes"]

_FRAME = struct.Struct(">BHI")
_PUBLISH = struct.Struct(">HHH")  # class basic, method publish, ticket
_HEADER = struct.Struct(">HHQH")  # class basic, weight, body size, property flags
_END = b"\xce"
_OTHER_PROPERTIES = (
    "content_encoding",
    "priority",
    "expiration",
    "timestamp",
    "user_id",
    "app_id",
    "cluster_id",
)


def _short(value: str) -> bytes:
    data = value.encode()
    if len(data) > 255:
        raise ValueError(f"{value[:40]!r}... is longer than 255 bytes")
    return bytes((len(data),)) + data


def _set(value: Any) -> bool:
    return value is not None and value != ""


def publish_bytes(
    channel: int,
    max_body: int,
    exchange: str,
    key: str,
    body: bytes,
    properties: Basic.Properties,
    mandatory: bool,
) -> bytes | None:
    """The frames of one publish on ``channel`` (bodies cut to ``max_body`` bytes), or
    ``None`` when ``properties`` uses one this does not write (pamqp then marshals it)."""
    for name in _OTHER_PROPERTIES:
        if _set(getattr(properties, name)):
            return None
    method = (
        _PUBLISH.pack(60, 40, 0)
        + _short(exchange)
        + _short(key)
        + (b"\x01" if mandatory else b"\x00")
    )
    flags = 0
    parts: list[bytes] = []
    value: Any = properties.content_type
    if _set(value):
        flags |= 0x8000
        parts.append(_short(value))
    value = properties.headers
    if _set(value):
        flags |= 0x2000
        parts.append(encode.field_table(value))
    value = properties.delivery_mode
    if _set(value):
        flags |= 0x1000
        parts.append(bytes((value,)))
    value = properties.correlation_id
    if _set(value):
        flags |= 0x0400
        parts.append(_short(value))
    value = properties.reply_to
    if _set(value):
        flags |= 0x0200
        parts.append(_short(value))
    value = properties.message_id
    if _set(value):
        flags |= 0x0080
        parts.append(_short(value))
    value = properties.message_type
    if _set(value):
        flags |= 0x0020
        parts.append(_short(value))
    header = _HEADER.pack(60, 0, len(body), flags) + b"".join(parts)
    out = [
        _FRAME.pack(1, channel, len(method)),
        method,
        _END,
        _FRAME.pack(2, channel, len(header)),
        header,
        _END,
    ]
    for start in range(0, len(body), max_body):
        chunk = body[start : start + max_body]
        out += (_FRAME.pack(3, channel, len(chunk)), chunk, _END)
    return b"".join(out)
