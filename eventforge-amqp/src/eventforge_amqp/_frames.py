"""The frames of an AMQP connection, cut out of each socket read.

aiormq reads a frame with three ``readexactly`` calls, a lock and a ``BytesIO``, and decodes
it with pamqp: at three frames per delivery (method, header, body) that is most of what a
consumer's event loop does. :class:`FrameReader` reads what the socket has (up to 256 KiB),
cuts every complete frame out of it at once, makes body frames itself (their payload is the
message body, as is) and hands the others to pamqp, as aiormq would. It yields the
``(size, channel, frame)`` triples aiormq's reader expects, and ends at the end of the stream.
"""

from __future__ import annotations

import asyncio
import collections
import struct
from typing import Any

import pamqp.exceptions
import pamqp.frame
from aiormq.exceptions import AMQPConnectionError, InvalidFrameError
from pamqp.body import ContentBody

__all__ = ["FrameReader"]

_HEADER = struct.Struct(">BHI")
_FRAME_BODY = 3
_FRAME_END = 0xCE
_READ = 262_144


class FrameReader:
    """An async iterator of the frames arriving on ``reader``."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader
        self._frames: collections.deque[tuple[int, int, Any]] = collections.deque()
        self._rest = b""

    def __aiter__(self) -> FrameReader:
        return self

    async def __anext__(self) -> tuple[int, int, Any]:
        frames = self._frames
        while not frames:
            await self._read()
        return frames.popleft()

    async def _read(self) -> None:
        try:
            data = await self._reader.read(_READ)
        except OSError as exc:
            raise AMQPConnectionError(f"Server communication error: {exc!r}") from exc
        if not data:
            if self._rest:
                raise AMQPConnectionError(
                    f"Server connection unexpectedly closed within a frame ({len(self._rest)} "
                    "bytes read)"
                )
            raise StopAsyncIteration
        buffer = self._rest + data if self._rest else data
        size = len(buffer)
        offset = 0
        append = self._frames.append
        unpack = _HEADER.unpack_from
        while size - offset >= 8:
            kind, channel, length = unpack(buffer, offset)
            end = offset + length + 8
            if end > size:
                break
            if buffer[end - 1] != _FRAME_END:
                raise InvalidFrameError(f"a frame of {length} bytes does not end with 0xCE")
            if kind == _FRAME_BODY:
                append((length + 8, channel, ContentBody(buffer[offset + 7 : end - 1])))
            else:
                try:
                    append(pamqp.frame.unmarshal(buffer[offset:end]))
                except pamqp.exceptions.PAMQPException as exc:
                    raise InvalidFrameError(str(exc)) from exc
            offset = end
        self._rest = buffer[offset:]
