"""What a reconnecting client still sends of the frames it held: requests nobody waits for go.

While the link is down a client holds published frames and sends them after the reconnect.
A request among them is dropped instead when its caller has stopped waiting:

* its deadline (the ``ef-deadline`` header, see :mod:`eventforge.deadlines`) has passed, by
  this machine's clock, the same clock its caller used: no skew between machines is involved;
* it was sent with :meth:`~eventforge_tcp.client.TCPClientTransport.send_counted`, which
  waits for the count: when the link dropped before the count arrived, that call has
  already raised ``TransportError`` in its caller. (Requests made by a queue use
  ``send_reporting_nobody`` instead: their callers keep waiting until their deadline, so
  they are sent while it lies ahead.)

Other frames (publishes, subscriptions) are sent as before, in their order.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from eventforge.deadlines import DEADLINE_HEADER, expired
from eventforge.message import Message

from ._control import COUNT
from .framing import HEADER

__all__ = ["drop_abandoned_requests"]

_MARK = DEADLINE_HEADER.encode()
_unpack = HEADER.unpack_from
_size = HEADER.size


def _bodies(entry: bytes) -> list[bytes]:
    """The frame bodies packed in ``entry`` (a frame, or a COUNT frame and its message)."""
    bodies = []
    offset = 0
    while offset + _size <= len(entry):
        (length,) = _unpack(entry, offset)
        offset += _size
        bodies.append(entry[offset : offset + length])
        offset += length
    return bodies


def _abandoned(entry: bytes, decode: Callable[[bytes], Message], now: float) -> bool:
    if _MARK not in entry:  # cheap: only requests carry a deadline
        return False
    caller_gone = False
    request: Message | None = None
    try:
        for body in _bodies(entry):
            message = decode(body)
            if message.topic == COUNT:
                caller_gone = message.payload is None  # a send_counted that raised
            else:
                request = message
    except Exception:  # not ours to judge: send it as it was
        return False
    if request is None or request.reply_to is None:
        return False
    return caller_gone or expired(request, now)


def drop_abandoned_requests(
    held: list[bytes], decode: Callable[[bytes], Message]
) -> tuple[list[bytes], int]:
    """Return the held frames to send and how many requests were dropped."""
    now = time.time()
    kept = [entry for entry in held if not _abandoned(entry, decode, now)]
    return kept, len(held) - len(kept)
