"""Dead letters of a Redis work queue: listed from ``<stream>:dead``, replayed into the stream.

A dead letter is a stream entry with the envelope (``data``), the ``reason``, the ``attempts``
made and ``failed_at``. Replaying one puts its envelope back as a fresh item (attempt 1),
without the reason header, and clears its dedupe mark so that it runs again.
"""

from __future__ import annotations

from typing import Any

from eventforge.errors import ProtocolError
from eventforge.message import Message
from eventforge.transport import ATTEMPT_HEADER, DEAD_LETTER_REASON_HEADER, DeadLetter, for_replay
from eventforge.wire import WireCodec

from ._wq_stream import StreamQueue

__all__ = ["dead_letters", "replay"]


def dead_letters(queue: StreamQueue, limit: int) -> list[DeadLetter]:
    """The oldest ``limit`` dead letters; ``token`` is the dead-letter stream entry id."""
    entries = queue.client.xrange(queue.dead_stream, count=limit)
    return [_dead_letter(queue, entry_id, fields) for entry_id, fields in entries]


def replay(queue: StreamQueue, tokens: list[Any] | None) -> int:
    """Put dead letters back as fresh items (attempt 1); return how many."""
    client = queue.client
    if tokens is None:
        entries = client.xrange(queue.dead_stream)
    else:
        entries = []
        for token in tokens:
            entries.extend(client.xrange(queue.dead_stream, token, token))
    replayed = 0
    for entry_id, fields in entries:
        data = fields.get(b"data", b"")
        with client.pipeline(transaction=True) as pipe:
            pipe.xadd(queue.stream, {"data": _strip_reason(data, queue.codec)})
            pipe.xdel(queue.dead_stream, entry_id)
            if queue.dedupe_ttl_ms:
                try:
                    pipe.delete(queue.seen_key(queue.codec.decode(data).id))
                except ProtocolError:
                    pass
            pipe.execute()
        replayed += 1
    return replayed


def _dead_letter(queue: StreamQueue, entry_id: Any, fields: dict[Any, Any]) -> DeadLetter:
    token = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    raw = fields.get(b"data", b"")
    reason = fields.get(b"reason", b"").decode(errors="replace")
    try:
        message = queue.codec.decode(raw)
    except ProtocolError:
        message = Message(
            f"{queue.name}.malformed",
            raw.decode(errors="replace"),
            {DEAD_LETTER_REASON_HEADER: reason},
        )
    return DeadLetter(
        message,
        reason,
        int(fields.get(b"attempts", b"0") or 0),
        float(fields.get(b"failed_at", b"0") or 0),
        token,
    )


def _strip_reason(data: bytes, codec: WireCodec) -> bytes:
    """The envelope without the dead-letter reason header (malformed data is kept as is)."""
    try:
        message = codec.decode(data)
    except ProtocolError:
        return data
    if DEAD_LETTER_REASON_HEADER not in message.headers and ATTEMPT_HEADER not in message.headers:
        return data
    return codec.encode(for_replay(message))
