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
    """Keep each ``(message, encoded)`` in the queue's delayed set until it is due.

    Several items go in one pipeline of ``EVALSHA`` after loading the script; should the server
    have lost it in between (a restart), they are put again one by one (the script is
    idempotent per message id: the same member of the set, the same fields of the hash)."""
    client, stream = queue.client, queue.stream
    try:
        if len(items) > 1:
            client.script_load(scripts.DELAY)
            try:
                with client.pipeline(transaction=False) as pipe:
                    for message, data in items:
                        args = (stream, f"p:{message.id}", data, delay_ms(message))
                        pipe.evalsha(_DELAY.sha, 0, *args)
                    pipe.execute()
                return
            except Exception as exc:
                if type(exc).__name__ != "NoScriptError":
                    raise
        for message, data in items:
            _DELAY(client, stream, f"p:{message.id}", data, delay_ms(message))
    except Exception as exc:
        raise describe_error(
            exc,
            queue.settings,
            f"putting {len(items)} delayed items into work queue {queue.name!r}",
        ) from exc
