"""The queues of one durable work queue, and how a dead letter is read back.

* ``eventforge.wq.<name>``: quorum queue; ``x-delivery-limit`` (the retry policy's
  ``max_attempts`` unless the ``delivery_limit`` option says otherwise) and dead-lettering to
  the DLQ with RabbitMQ's at-least-once strategy, so an item whose consumers keep dying is moved
  aside by the broker itself, never lost;
* ``eventforge.wq.<name>.dlq``: quorum queue of dead letters;
* a binding of the work queue to the headers exchange ``eventforge.delay.deliver`` by its name,
  through which delayed items and retries come back from the delay levels
  (:mod:`eventforge_amqp._wq_delays`).
"""

from __future__ import annotations

import time
from typing import Any

import aiormq.abc
import aiormq.exceptions
from eventforge.errors import ProtocolError
from eventforge.transport import (
    DEAD_LETTER_REASON_HEADER,
    MALFORMED_HEADER,
    DeadLetter,
    malformed_item,
)
from eventforge.wire import WireCodec

from . import _codec
from ._topology import conflict_error
from ._wq_delays import bind_target

__all__ = [
    "ATTEMPT",
    "ATTEMPTS",
    "FAILED_AT",
    "MALFORMED_HEADER",
    "REASON",
    "WorkQueueTopology",
    "letter_from",
]

ATTEMPT = "x-eventforge-attempt"
REASON = "x-eventforge-reason"
ATTEMPTS = "x-eventforge-attempts"
FAILED_AT = "x-eventforge-failed-at"


class WorkQueueTopology:
    """Names and idempotent declarations of one work queue's queues."""

    def __init__(self, name: str, delivery_limit: int) -> None:
        self.name = name
        self.queue = f"eventforge.wq.{name}"
        self.dlq = f"{self.queue}.dlq"
        self.delivery_limit = delivery_limit

    def queue_arguments(self) -> dict[str, Any]:
        return {
            "x-queue-type": "quorum",
            "x-delivery-limit": self.delivery_limit,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self.dlq,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }

    async def _declare(
        self, channel: aiormq.abc.AbstractChannel, queue: str, arguments: dict[str, Any]
    ) -> int:
        try:
            ok = await channel.queue_declare(queue, durable=True, arguments=arguments)
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            raise conflict_error("queue", queue, exc, arguments) from None
        return int(ok.message_count or 0)

    async def declare(self, channel: aiormq.abc.AbstractChannel) -> None:
        await self._declare(channel, self.dlq, {"x-queue-type": "quorum"})
        await self._declare(channel, self.queue, self.queue_arguments())
        await bind_target(channel, self.queue)

    async def counts(self, channel: aiormq.abc.AbstractChannel) -> tuple[int, int]:
        """Ready items and dead letters."""
        ready = await self._declare(channel, self.queue, self.queue_arguments())
        dead = await self._declare(channel, self.dlq, {"x-queue-type": "quorum"})
        return ready, dead


def letter_from(codec: WireCodec, got: aiormq.abc.DeliveredMessage, name: str) -> DeadLetter:
    """A dead letter as read from the DLQ (stored by eventforge, or by the broker's limit)."""
    props = got.header.properties
    headers: dict[str, Any] = dict(props.headers or {})
    try:
        message = _codec.decode(codec, got.body, props, name)
    except ProtocolError as exc:
        message, _ = malformed_item(name, got.body, exc)
    reason = headers.get(REASON)
    attempts = headers.get(ATTEMPTS)
    if reason is None:
        deaths = headers.get("x-death") or []
        first = deaths[0] if deaths else {}
        cause = first.get("reason", b"unknown")
        cause = cause.decode() if isinstance(cause, bytes) else str(cause)
        reason = (
            f"the broker dead-lettered it ({cause}): its consumers kept failing to settle it"
            if cause == "delivery_limit"
            else f"the broker dead-lettered it ({cause})"
        )
        attempts = int(headers.get("x-delivery-count", 0) or 0) + 1
    if isinstance(reason, bytes):
        reason = reason.decode(errors="replace")
    message.headers.pop(ATTEMPT, None)
    for key in (REASON, ATTEMPTS, FAILED_AT, "x-death", "x-delivery-count"):
        message.headers.pop(key, None)
    message.headers.setdefault(DEAD_LETTER_REASON_HEADER, str(reason))
    failed_at = headers.get(FAILED_AT)
    return DeadLetter(
        message=message,
        reason=str(reason),
        attempts=int(attempts or 0),
        failed_at=float(failed_at) if isinstance(failed_at, (int, float)) else time.time(),
        token=props.message_id or message.id,
    )
