"""Frames on the wire: ``[4-byte big-endian length][JSON body]``, and the hello that opens a link.

This module is the whole byte-level protocol and nothing else, so it can be tested (and fuzzed)
alone. :class:`FrameDecoder` cuts frames out of arbitrarily chunked input; it checks the length
from the header *before* buffering a body, so a peer announcing a 4 GiB frame costs four bytes
of memory, not four gigabytes. :func:`parse_hello` and :func:`parse_welcome` validate the first
frame of each side. Every malformed input raises :class:`~eventforge.errors.ProtocolError` (or
its subclass :class:`~eventforge.errors.FrameTooLarge`) and nothing else.
"""

from __future__ import annotations

import struct
from typing import Any

import pydantic_core
from eventforge.errors import FrameTooLarge, ProtocolError
from eventforge.message import Message
from eventforge.wire import WireCodec

__all__ = [
    "CONTROL_PREFIX",
    "DEFAULT_MAX_FRAME_SIZE",
    "HEADER",
    "PROTOCOL",
    "PROTOCOL_VERSION",
    "FrameDecoder",
    "decode_stream",
    "encode_frame",
    "encode_json_frame",
    "parse_hello",
    "parse_json_object",
    "parse_welcome",
]

PROTOCOL = "eventforge"
"""The value of the ``hello`` / ``welcome`` key that identifies the protocol."""
PROTOCOL_VERSION = 1
"""The version this implementation speaks; the hello carries it, the server checks it."""
DEFAULT_MAX_FRAME_SIZE = 1024 * 1024
CONTROL_PREFIX = "$tcp."
"""Topics that carry protocol control frames; applications may not publish to them."""

HEADER = struct.Struct(">I")
_unpack_from = HEADER.unpack_from
_pack = HEADER.pack


def encode_frame(body: bytes) -> bytes:
    """Return ``body`` with its 4-byte big-endian length prefix."""
    return _pack(len(body)) + body


def encode_json_frame(obj: Any) -> bytes:
    """Encode a JSON-safe object as one frame (used for the hello and control frames)."""
    return encode_frame(pydantic_core.to_json(obj))


class FrameDecoder:
    """Incremental frame splitter: feed it bytes in any chunks, get complete frame bodies back.

    ``max_frame_size`` bounds the body length announced by each header; a larger (or zero)
    length raises before any of the body is buffered. Memory held between calls is at most
    one header plus ``max_frame_size`` bytes.
    """

    __slots__ = ("_buf", "_need", "max_frame_size")

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self.max_frame_size = max_frame_size
        self._buf = bytearray()
        self._need = 4

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a frame."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray) -> list[bytes]:
        """Add ``data``; return the bodies of every frame it completed, in order."""
        buf = self._buf
        if buf:
            buf += data
            if len(buf) < self._need:
                return []
            view: bytes | bytearray = buf
        else:
            view = data
        frames: list[bytes] = []
        pos = 0
        end = len(view)
        limit = self.max_frame_size
        while end - pos >= 4:
            (size,) = _unpack_from(view, pos)
            if size > limit:
                self._reset()
                raise FrameTooLarge(size, limit)
            if size == 0:
                self._reset()
                raise ProtocolError("received a frame of length 0; every frame carries a JSON body")
            stop = pos + 4 + size
            if stop > end:
                self._need = stop - pos
                break
            frames.append(bytes(view[pos + 4 : stop]))
            pos = stop
        else:
            self._need = 4
        if view is buf:
            if pos:
                del buf[:pos]
        elif pos < end:
            buf += view[pos:]
        return frames

    def eof(self) -> None:
        """Signal the end of the stream; raise if it cut a frame in half (a truncated frame)."""
        pending = len(self._buf)
        self._reset()
        if pending:
            raise ProtocolError(
                f"connection closed in the middle of a frame ({pending} bytes of a frame were "
                "received); the frame is discarded"
            )

    def _reset(self) -> None:
        self._buf = bytearray()
        self._need = 4


def parse_json_object(body: bytes, what: str) -> dict[str, Any]:
    """Parse ``body`` as a JSON object; raise :class:`ProtocolError` otherwise."""
    try:
        obj = pydantic_core.from_json(body)
    except ValueError as exc:
        raise ProtocolError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"{what} must be a JSON object, got {type(obj).__name__}")
    return obj


def _check_version(obj: dict[str, Any], key: str, what: str) -> None:
    if obj.get(key) != PROTOCOL:
        raise ProtocolError(
            f"{what} does not start an eventforge connection (expected {key!r}: {PROTOCOL!r}); "
            "is the peer an eventforge TCP endpoint?"
        )
    version = obj.get("protocol")
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"peer speaks eventforge TCP protocol {version!r}; this side speaks "
            f"{PROTOCOL_VERSION}. Upgrade the older side"
        )


def parse_hello(body: bytes) -> dict[str, Any]:
    """Validate a client's hello frame and return it (``token`` and ``name`` may be absent)."""
    obj = parse_json_object(body, "hello")
    _check_version(obj, "hello", "hello")
    for key in ("token", "name"):
        value = obj.get(key)
        if value is not None and not isinstance(value, str):
            raise ProtocolError(f"hello field {key!r} must be a string or null")
    return obj


def parse_welcome(body: bytes) -> dict[str, Any]:
    """Validate the server's answer to a hello: a welcome, or an ``error`` refusal (returned)."""
    obj = parse_json_object(body, "welcome")
    if "error" in obj:
        if not isinstance(obj.get("error"), str) or not isinstance(obj.get("message", ""), str):
            raise ProtocolError("refusal frame must carry string 'error' and 'message' fields")
        return obj
    _check_version(obj, "welcome", "welcome")
    return obj


def decode_stream(
    chunks: list[bytes], codec: WireCodec, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
) -> list[Message]:
    """Decode a whole byte stream, delivered as ``chunks``, into messages (a test and fuzz aid).

    Raises only :class:`ProtocolError` / :class:`FrameTooLarge` for malformed input, including
    a stream that ends inside a frame.
    """
    decoder = FrameDecoder(max_frame_size)
    out: list[Message] = []
    for chunk in chunks:
        for body in decoder.feed(chunk):
            out.append(codec.decode(body))
    decoder.eof()
    return out
