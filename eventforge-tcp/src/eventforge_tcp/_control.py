"""Control frames: envelopes on ``$tcp.`` topics that carry the protocol itself.

See ``docs/wire-protocol.md`` for what each one means and who sends it.
"""

from __future__ import annotations

from typing import Any

from eventforge.errors import ProtocolError
from eventforge.message import Message, new_id
from eventforge.wire import WIRE_VERSION

from .framing import encode_json_frame

__all__ = [
    "ACK",
    "COUNT",
    "COUNTED",
    "ERROR",
    "FEATURE_COUNT",
    "PING",
    "PONG",
    "ROUTE",
    "SUB",
    "UNSUB",
    "control_frame",
    "decode_control_payload",
]


def control_frame(
    topic: str, payload: Any, correlation_id: str | None = None, *, frame_id: str | None = None
) -> bytes:
    """Encode a protocol control frame (an envelope on a ``$tcp.`` topic)."""
    return encode_json_frame(
        {
            "version": WIRE_VERSION,
            "id": frame_id or new_id(),
            "topic": topic,
            "payload": payload,
            "correlation_id": correlation_id,
        }
    )


PING = "$tcp.ping"
PONG = "$tcp.pong"
SUB = "$tcp.sub"
UNSUB = "$tcp.unsub"
ACK = "$tcp.ack"
ROUTE = "$tcp.route"
ERROR = "$tcp.error"
COUNT = "$tcp.count"
"""Client → server: count the receivers of the next frame (a message) and answer COUNTED."""
COUNTED = "$tcp.counted"
"""Server → client: ``{"count": n}``, ``correlation_id`` = the id of the COUNT frame."""
FEATURE_COUNT = "count"
"""Listed in the welcome's ``features`` by a server that understands COUNT."""


def decode_control_payload(message: Message, *keys: str) -> dict[str, Any]:
    """Return a control frame's payload as a dict holding ``keys``, or raise ProtocolError."""
    payload = message.payload
    if not isinstance(payload, dict) or any(k not in payload for k in keys):
        raise ProtocolError(
            f"control frame {message.topic!r} needs a JSON object payload with {', '.join(keys)}"
        )
    return payload
