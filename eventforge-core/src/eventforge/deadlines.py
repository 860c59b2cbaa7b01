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

from eventforge.message import Message

__all__ = ["DEADLINE_HEADER", "deadline_of", "expired"]

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
