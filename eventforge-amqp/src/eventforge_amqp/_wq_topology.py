"""The queues of one durable work queue, and how a dead letter is read back.

* ``eventforge.wq.<name>``: quorum queue; ``x-delivery-limit`` (the retry policy's
  ``max_attempts`` unless the ``delivery_limit`` option says otherwise) and dead-lettering to
  the DLQ with RabbitMQ's at-least-once strategy, so an item whose consumers keep dying is moved
  aside by the broker itself, never lost;
* ``eventforge.wq.<name>.dlq``: quorum queue of dead letters;
* ``eventforge.wq.<name>.delay.<ms>``: quorum queues with a message TTL of ``<ms>`` that
  dead-letter (at-least-once) back into the work queue: the delayed retries. Delays are rounded
  to two significant digits (so a jittered backoff uses a handful of queues) and each delay
  queue expires when unused for a minute past its TTL.
"""

from __future__ import annotations

import time
from typing import Any

import aiormq.abc
import aiormq.exceptions
from eventforge.errors import ProtocolError
from eventforge.message import Message
from eventforge.transport import DEAD_LETTER_REASON_HEADER, DeadLetter
from eventforge.wire import WireCodec

from . import _codec
from ._topology import conflict_error

__all__ = [
    "ATTEMPT",
    "ATTEMPTS",
    "FAILED_AT",
    "MALFORMED",
    "REASON",
    "WorkQueueTopology",
    "delay_bucket",
    "letter_from",
]

ATTEMPT = "x-eventforge-attempt"
REASON = "x-eventforge-reason"
ATTEMPTS = "x-eventforge-attempts"
FAILED_AT = "x-eventforge-failed-at"
MALFORMED = "x-eventforge-malformed"
_REDECLARE_AFTER = 30.0


def delay_bucket(delay: float) -> int:
    """``delay`` seconds as milliseconds rounded to two significant digits (0: no delay)."""
    ms = round(delay * 1000)
    if ms <= 0:
        return 0
    digits = len(str(ms))
    if digits <= 2:
        return ms
    scale: int = 10 ** (digits - 2)
    return round(ms / scale) * scale


class WorkQueueTopology:
    """Names and idempotent declarations of one work queue's queues."""

    def __init__(self, name: str, delivery_limit: int) -> None:
        self.name = name
        self.queue = f"eventforge.wq.{name}"
        self.dlq = f"{self.queue}.dlq"
        self.delivery_limit = delivery_limit
        self._delays: dict[int, float] = {}

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

    async def delay_queue(self, channel: aiormq.abc.AbstractChannel, delay: float) -> str:
        """The queue a retry after ``delay`` seconds is published to (declared when needed)."""
        ms = delay_bucket(delay)
        if ms == 0:
            return self.queue
        name = f"{self.queue}.delay.{ms}"
        now = time.monotonic()
        if now - self._delays.get(ms, -_REDECLARE_AFTER) >= _REDECLARE_AFTER:
            await self._declare(channel, name, self._delay_arguments(ms))
            self._delays[ms] = now
        return name

    def _delay_arguments(self, ms: int) -> dict[str, Any]:
        return {
            "x-queue-type": "quorum",
            "x-message-ttl": ms,
            "x-expires": ms + 60_000,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self.queue,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }

    async def counts(self, channel: aiormq.abc.AbstractChannel) -> tuple[int, int, int]:
        """Ready items, dead letters and delayed retries (of the delays used here)."""
        ready = await self._declare(channel, self.queue, self.queue_arguments())
        dead = await self._declare(channel, self.dlq, {"x-queue-type": "quorum"})
        delayed = 0
        for ms in list(self._delays):
            name = f"{self.queue}.delay.{ms}"
            delayed += await self._declare(channel, name, self._delay_arguments(ms))
            self._delays[ms] = time.monotonic()
        return ready, dead, delayed


def letter_from(codec: WireCodec, got: aiormq.abc.DeliveredMessage, name: str) -> DeadLetter:
    """A dead letter as read from the DLQ (stored by eventforge, or by the broker's limit)."""
    props = got.header.properties
    headers: dict[str, Any] = dict(props.headers or {})
    try:
        message = _codec.decode(codec, got.body, props, name)
    except ProtocolError:
        message = Message(name, got.body.decode("utf-8", "replace"), {MALFORMED: True})
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
