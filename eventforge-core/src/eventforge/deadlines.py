"""Request deadlines: every request carries the moment its caller stops waiting.

``MessageQueue.request`` (and so every RPC call) stamps the header :data:`DEADLINE_HEADER`
with an absolute deadline: the caller's wall-clock time (seconds since the epoch, a float) plus
its timeout. Whoever holds a request later uses it to avoid running a call nobody waits for:

* a queue does not pass a request whose deadline has passed to a handler (an
  :class:`~eventforge.rpc.RPCServer` included); it counts it in ``stats["expired_requests"]``;
* a transport that holds outgoing messages while disconnected drops the held requests whose
  deadline has passed instead of sending them after the reconnect.

The deadline is absolute, not a remaining time, so time a request spends waiting anywhere
(a client's offline buffer, a broker's stream, a server's backlog) counts against it. The
price is that the sender's and the receiver's clocks are compared: a receiver whose clock is
``d`` seconds behind may start a call up to ``d`` seconds after its caller gave up, and one
``d`` seconds ahead skips calls that had less than ``d`` seconds left. Keep the clocks of the
machines synchronized (NTP keeps them within milliseconds) to well below your shortest timeout.
"""

from __future__ import annotations

import time
from datetime import datetime

from eventforge.message import Message

__all__ = ["DEADLINE_HEADER", "deadline_of", "due_time", "expired"]

DEADLINE_HEADER = "ef-deadline"
"""The header holding a request's absolute deadline (epoch seconds, the sender's clock)."""

_now = time.time


def deadline_of(message: Message) -> float | None:
    """The deadline a request carries (epoch seconds), or ``None`` when it carries none.

    A header that is not a number (a message from another producer) counts as no deadline.
    """
    value = message.headers.get(DEADLINE_HEADER)
    if value.__class__ is float or value.__class__ is int:
        return float(value)
    return None


def expired(message: Message, now: float | None = None) -> bool:
    """Whether ``message`` is a request whose caller has stopped waiting for the reply.

    Only a message with a ``reply_to`` and a numeric :data:`DEADLINE_HEADER` can expire.
    ``now`` defaults to this machine's wall clock.
    """
    if message.reply_to is None:
        return False
    value = message.headers.get(DEADLINE_HEADER)
    if value.__class__ is not float and value.__class__ is not int:
        return False
    return (_now() if now is None else now) > value


def due_time(delay: float | None, not_before: datetime | float | None) -> float | None:
    """The Unix time a delayed message becomes due, or ``None`` when it is not delayed.

    ``delay`` is seconds from now; ``not_before`` an aware ``datetime`` or a Unix time.
    """
    if delay is not None and not_before is not None:
        raise ValueError("pass delay= or not_before=, not both")
    if delay is not None:
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not delay >= 0:
            raise ValueError(f"delay must be a number of seconds >= 0, got {delay!r}")
        return time.time() + float(delay) if delay > 0 else None
    if not_before is None:
        return None
    if isinstance(not_before, datetime):
        if not_before.tzinfo is None:
            raise ValueError(
                "not_before must be an aware datetime (with tzinfo, e.g. datetime.now(timezone.utc))"
            )
        return not_before.timestamp()
    if isinstance(not_before, bool) or not isinstance(not_before, (int, float)):
        raise ValueError(f"not_before must be a datetime or a Unix time, got {not_before!r}")
    return float(not_before)
