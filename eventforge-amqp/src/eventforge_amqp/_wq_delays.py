"""Delays kept by RabbitMQ itself, without a plugin: delay levels shared by every work queue.

A delay is rounded **up** to whole ticks of :data:`TICK` (10 ms) and written in binary; each
1-bit ``k`` is one stay in the level queue ``eventforge.delay.<k>``, a quorum queue whose
message TTL is ``10 ms * 2**k``. A delay of 1.0 s is 100 ticks = 0b1100100: 640 ms in level 6,
then 320 ms in level 5, then 40 ms in level 2. :data:`LEVELS` levels reach
:data:`MAX_DELAY` (about 62 days); the longest level's TTL (about 31 days) stays within what a
quorum queue's timer takes.

How an item finds its way (the "delay levels" technique of kombu's native delayed delivery):

* the item is published to the topic exchange of its highest 1-bit's level with a routing key
  of one word per bit of its tick count, lowest level first (100 ticks: ``"0.0.1.0.0.1.1"``),
  and the header :data:`TARGET_HEADER` naming its work queue (publishing into the highest
  level's exchange, not the top one, spares the broker a topic match per level above);
* exchange ``k`` routes it into queue ``k`` when word ``k`` is 1, else on to exchange ``k - 1``
  (an exchange-to-exchange binding); exchange 0 passes on to ``eventforge.delay.deliver``;
* queue ``k`` holds it for its TTL, then dead-letters it (at-least-once, keeping the routing
  key) to exchange ``k - 1`` (queue 0: to ``eventforge.delay.deliver``);
* ``eventforge.delay.deliver`` is a headers exchange; each work queue is bound to it by its
  own name in :data:`TARGET_HEADER`.

Every queue holds items of a single TTL, so the head always expires first: no item waits
behind a longer one. Nothing is held by a client: the levels are durable quorum queues, the
messages persistent, and at-least-once dead-lettering moves an item to the next queue only
once that queue confirmed it, so a broker restart loses nothing (a stay that ran out while the
node was down ends at once when it is back). Each hop costs a few milliseconds, so an item
comes no earlier than its time and late by the rounding (< 10 ms) plus its hops (at most
:data:`LEVELS`, one per 1-bit).
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import aiormq.abc
import aiormq.exceptions
from eventforge.message import Message
from eventforge.transport import NOT_BEFORE_HEADER

from ._topology import conflict_error

__all__ = [
    "DELIVER",
    "LEVELS",
    "MAX_DELAY",
    "TARGET_HEADER",
    "TICK",
    "DelayLevels",
    "DelayedItems",
    "due_of",
    "level_name",
    "routing_key",
    "ticks",
]

TICK = 0.01
"""Seconds per tick: a delay is rounded up to a whole number of ticks."""
LEVELS = 29
"""Number of delay levels: level ``k`` keeps an item ``TICK * 2**k`` seconds."""
MAX_DELAY = TICK * (2**LEVELS - 1)
"""The longest delay the levels can keep, in seconds (about 62 days)."""
DELIVER = "eventforge.delay.deliver"
"""The headers exchange that hands a due item to its work queue."""
TARGET_HEADER = "eventforge-delay-to"
"""The AMQP header naming the queue a delayed item goes to (a headers exchange ignores the
``x-`` headers, so it has no such prefix)."""
_PREFIX = "eventforge.delay."


def due_of(message: Message) -> float | None:
    """The Unix time ``message`` is due (its :data:`NOT_BEFORE_HEADER`), or ``None``.

    Raises ``ValueError`` for a due time beyond the delay levels' reach.
    """
    due = message.headers.get(NOT_BEFORE_HEADER)
    if not isinstance(due, (int, float)) or isinstance(due, bool):
        return None
    if due - time.time() > MAX_DELAY:
        raise ValueError(
            f"a delay of {due - time.time():.0f} s is longer than the AMQP work queue keeps "
            f"({MAX_DELAY:.0f} s, about {MAX_DELAY / 86400:.0f} days: its delay levels); put "
            "the item closer to its time, or keep far-off dates in a database"
        )
    return float(due)


def level_name(level: int) -> str:
    """The name of level ``level``'s exchange and of its queue."""
    return f"{_PREFIX}{level}"


def ticks(seconds: float) -> int:
    """``seconds`` as whole ticks, rounded up (0 for no delay)."""
    if seconds <= 0:
        return 0
    return max(1, math.ceil(seconds / TICK - 1e-6))


def routing_key(count: int) -> str:
    """The routing key of a delay of ``count`` ticks: its bits, lowest level first, up to its
    highest 1-bit (``0b1100100`` is ``"0.0.1.0.0.1.1"``)."""
    if not 0 < count < 2**LEVELS:
        raise ValueError(f"a delay of {count} ticks is not within the {LEVELS} delay levels")
    return ".".join("1" if count >> level & 1 else "0" for level in range(count.bit_length()))


def _pattern(level: int, bit: str) -> str:
    """Word ``level`` of the key is ``bit``; any words may follow (the higher levels)."""
    return ".".join(["*"] * level + [bit, "#"])


def _next_hop(level: int) -> str:
    return level_name(level - 1) if level else DELIVER


def level_arguments(level: int) -> dict[str, Any]:
    """The arguments of level ``level``'s queue."""
    return {
        "x-queue-type": "quorum",
        "x-message-ttl": round(TICK * 1000) * 2**level,
        "x-dead-letter-exchange": _next_hop(level),
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


class DelayLevels:
    """The delay levels of one connection: declared once per connection, when first needed."""

    def __init__(self) -> None:
        self._declared_on: object | None = None
        self._lock: asyncio.Lock | None = None
        self.declarations = 0

    def forget(self) -> None:
        """Declare everything again before the next delayed publish (something went missing)."""
        self._declared_on = None

    async def ensure(self, channel: aiormq.abc.AbstractChannel) -> None:
        """Declare the levels on ``channel``'s connection unless that was done already."""
        connection = getattr(channel, "connection", channel)
        if self._declared_on is connection:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._declared_on is connection:
                return
            await declare_levels(channel)
            self._declared_on = connection
            self.declarations += 1


async def declare_levels(channel: aiormq.abc.AbstractChannel) -> None:
    """Declare the exchanges, queues and bindings of every level (idempotent)."""
    await _exchange(channel, DELIVER, "headers")
    for level in range(LEVELS):
        await _exchange(channel, level_name(level), "topic")
    for level in range(LEVELS):
        name = level_name(level)
        arguments = level_arguments(level)
        try:
            await channel.queue_declare(name, durable=True, arguments=arguments)
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            raise conflict_error("queue", name, exc, arguments) from None
        await channel.queue_bind(name, name, routing_key=_pattern(level, "1"))
        await channel.exchange_bind(_next_hop(level), name, routing_key=_pattern(level, "0"))


async def bind_target(channel: aiormq.abc.AbstractChannel, queue: str) -> None:
    """Declare the delivery exchange and bind ``queue`` to it by its name (idempotent)."""
    await _exchange(channel, DELIVER, "headers")
    await channel.queue_bind(queue, DELIVER, arguments={"x-match": "all", TARGET_HEADER: queue})


async def _exchange(channel: aiormq.abc.AbstractChannel, name: str, kind: str) -> None:
    try:
        await channel.exchange_declare(name, exchange_type=kind, durable=True)
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        raise conflict_error("exchange", name, exc, {"type": kind}) from None


class DelayedItems:
    """The items one backend sent into the delay levels, for its ``delayed`` count.

    The levels are shared by every work queue, so the broker cannot count one queue's delayed
    items; the backend counts those it delayed itself until it sees them arrive, or until
    :attr:`grace` seconds past their time (another consumer may have taken them). Only the
    loop thread touches it.
    """

    grace = 5.0
    most = 1_000_000

    def __init__(self) -> None:
        self._due: dict[str, float] = {}
        self._purged = 0.0

    def add(self, message_id: str, due: float) -> None:
        if due <= time.time():
            return
        self._due.pop(message_id, None)
        self._due[message_id] = due
        if len(self._due) > self.most:
            del self._due[next(iter(self._due))]

    def arrived(self, message_id: str) -> None:
        if self._due:
            self._due.pop(message_id, None)

    def count(self) -> int:
        now = time.time()
        if now - self._purged >= 1.0:  # at most once a second: join() polls the stats
            self._purged = now
            horizon = now - self.grace
            for key in [key for key, due in self._due.items() if due < horizon]:
                del self._due[key]
        return len(self._due)
