"""Delayed puts of the Redis work queue: kept in ``<stream>:delayed`` until due.

A delayed item waits in the sorted set the retries use, scored by its due time on the Redis
server's clock (the put sends only the remaining delay, so clocks of producers and server
need not agree); consumers move due items into the stream every 50 ms at most.
"""

from __future__ import annotations

import time

from eventforge.message import Message
from eventforge.transport import NOT_BEFORE_HEADER

from . import _wq_scripts as scripts
from ._connect import describe_error
from ._wq_stream import StreamQueue

__all__ = ["delay_ms", "put_delayed"]

_DELAY = scripts.Script(scripts.DELAY)


def delay_ms(message: Message) -> int:
    """Milliseconds until ``message`` is due (0 when it is not delayed or already due)."""
    due = message.headers.get(NOT_BEFORE_HEADER)
    if not isinstance(due, (int, float)) or isinstance(due, bool):
        return 0
    return max(0, round((float(due) - time.time()) * 1000))


def put_delayed(queue: StreamQueue, items: list[tuple[Message, bytes]]) -> None:
    """Keep each ``(message, encoded)`` in the queue's delayed set until it is due."""
    try:
        for message, data in items:
            _DELAY(queue.client, queue.stream, f"p:{message.id}", data, delay_ms(message))
    except Exception as exc:
        raise describe_error(
            exc, queue.settings, f"putting a delayed item into work queue {queue.name!r}"
        ) from exc
