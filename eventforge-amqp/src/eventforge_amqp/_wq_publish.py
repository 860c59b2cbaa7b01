"""The confirmed publishes of a work queue: items due now go to its queue, delayed items (and
delayed retries) through the delay levels (:mod:`eventforge_amqp._wq_delays`).

Every item is persistent and published with ``mandatory`` on a confirm channel; the batch is
published at once and its confirms awaited together. An item the broker did not confirm is
published again with the same message id until the publish timeout, its route worked out anew
each time, so a retried delayed item still comes due at its time.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pamqp.commands
from eventforge.errors import TransportError
from eventforge.transport import Counter

from ._connection import ChannelSlot
from ._topology import TopologyConflictError
from ._wq_delays import LEVELS, TARGET_HEADER, DelayLevels, level_name, routing_key, ticks

__all__ = ["ConfirmedPublisher", "Outgoing"]

_MOST_TICKS = 2**LEVELS - 1


class Outgoing:
    """One item to publish: its body and properties, its queue and, if delayed, its due time."""

    __slots__ = ("body", "due", "properties", "queue")

    def __init__(self, queue: str, body: bytes, properties: Any, due: float | None = None) -> None:
        self.queue = queue
        self.body = body
        self.properties = properties
        self.due = due
        if due is not None:
            properties.headers = {**(properties.headers or {}), TARGET_HEADER: queue}

    def route(self) -> tuple[str, str]:
        """``(exchange, routing key)`` as of now: the queue once due, else the delay levels."""
        if self.due is None:
            return "", self.queue
        count = min(ticks(self.due - time.time()), _MOST_TICKS)
        if count == 0:
            return "", self.queue
        # Straight into the exchange of its highest level: the levels above would only pass
        # it on, and each exchange-to-exchange hop costs the broker a topic match.
        return level_name(count.bit_length() - 1), routing_key(count)


class ConfirmedPublisher:
    """Publishes work-queue items on one confirm channel and waits for the broker's confirms."""

    def __init__(
        self, slot: ChannelSlot, levels: DelayLevels, name: str, timeout: float, retries: Counter
    ) -> None:
        self.slot = slot
        self.levels = levels
        self.name = name
        self.timeout = timeout
        self.retries = retries

    async def publish(self, items: list[Outgoing]) -> None:
        """Publish persistently with confirms; retry the unconfirmed ones until the timeout."""
        deadline = time.monotonic() + self.timeout
        pending = items
        while True:
            remaining = deadline - time.monotonic()
            failed: list[Outgoing] = []
            error: BaseException | None = None
            routes: list[tuple[str, str]] = []
            try:
                channel = await self.slot.get(max(0.1, remaining))
                if any(item.due is not None for item in pending):
                    await self.levels.ensure(channel)
                routes = [item.route() for item in pending]
                results = await asyncio.gather(
                    *(
                        channel.basic_publish(
                            item.body,
                            exchange=exchange,
                            routing_key=key,
                            properties=item.properties,
                            mandatory=True,
                            timeout=max(0.1, remaining),
                        )
                        for item, (exchange, key) in zip(pending, routes, strict=True)
                    ),
                    return_exceptions=True,
                )
            except TopologyConflictError:
                raise
            except Exception as exc:
                results = [exc] * len(pending)
            for index, (item, result) in enumerate(zip(pending, results, strict=True)):
                if isinstance(result, pamqp.commands.Basic.Ack):
                    continue
                if isinstance(result, BaseException):
                    error = result
                elif isinstance(result, pamqp.commands.Basic.Nack):
                    error = TransportError("the broker refused the item (basic.nack)")
                else:  # returned: a queue is gone; declare again and retry
                    exchange = routes[index][0] if index < len(routes) else ""
                    where = f"queue {item.queue!r}" if not exchange else "a delay level"
                    error = TransportError(f"{where} is missing (basic.return)")
                    self.slot.channel = None
                    if exchange:
                        self.levels.forget()
                failed.append(item)
            if not failed:
                return
            if time.monotonic() >= deadline:
                raise TransportError(
                    f"{len(failed)} of {len(items)} item(s) for work queue {self.name!r} were not "
                    f"confirmed within {self.timeout} s (last error: {error!r}); they may or may "
                    "not be stored. Put them again: the message id deduplicates"
                )
            for _ in failed:
                self.retries.bump()
            pending = failed
            await asyncio.sleep(0.1)
