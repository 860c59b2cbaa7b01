"""The work-queue backend contract: the retry policy, a delivery, a dead letter, the backend SPI.

The lowest layer of work queues: :mod:`eventforge.workqueue` (the user-facing queue) and every
backend build on it. Import these names from :mod:`eventforge.workqueue`, which re-exports them.
"""

from __future__ import annotations

import random
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from eventforge.message import Message

__all__ = [
    "ATTEMPT_HEADER",
    "DEAD_LETTER_REASON_HEADER",
    "MALFORMED_HEADER",
    "NOT_BEFORE_HEADER",
    "WORK_QUEUE_STATS",
    "DeadLetter",
    "Delivery",
    "RetryPolicy",
    "WorkQueueBackend",
    "for_replay",
    "malformed_item",
]

ATTEMPT_HEADER = "x-eventforge-attempt"
DEAD_LETTER_REASON_HEADER = "x-eventforge-dead-letter-reason"
NOT_BEFORE_HEADER = "x-eventforge-not-before"
"""On a delayed item: the Unix time (seconds, float) before which it is not delivered."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often a failing item is retried and how long to wait in between.

    An item is delivered at most ``max_attempts`` times; after the last failed attempt it goes
    to the dead-letter queue. The delay before attempt ``n + 1`` is
    ``min(max_backoff, initial_backoff * multiplier ** (n - 1))`` with up to ``jitter`` (a
    fraction) added at random, so retries of many items do not arrive in lock-step.
    """

    max_attempts: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 900.0
    multiplier: float = 2.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.initial_backoff < 0 or self.max_backoff < 0:
            raise ValueError("backoff times must be >= 0")
        if self.multiplier < 1:
            raise ValueError(f"multiplier must be >= 1, got {self.multiplier}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be between 0 and 1, got {self.jitter}")

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        base = min(self.max_backoff, self.initial_backoff * self.multiplier ** max(0, attempt - 1))
        if self.jitter:
            base = min(self.max_backoff, base * (1 + random.random() * self.jitter))
        return base

    def exhausted(self, attempt: int) -> bool:
        """Tell whether attempt number ``attempt`` was the last one allowed."""
        return attempt >= self.max_attempts


@dataclass
class Delivery:
    """One delivery of a work item to a consumer.

    ``attempt`` is 1 on first delivery and grows with each redelivery. ``token`` is the
    backend's handle (a stream entry id, a JetStream message, ...). Call :meth:`ack` when the
    work is done or :meth:`nack` to have it retried; exactly one of them takes effect.
    """

    message: Message
    attempt: int
    queue: str
    token: Any = None
    backend: WorkQueueBackend | None = field(default=None, repr=False)
    settled: bool = False

    def ack(self) -> None:
        """Mark the work done; the item is removed for good."""
        if self.backend is not None and not self.settled:
            self.settled = True
            self.backend.ack(self)

    def nack(self, *, requeue: bool = True, delay: float = 0.0) -> None:
        """Give the item back: redelivered after ``delay`` seconds, or dead-lettered."""
        if self.backend is not None and not self.settled:
            self.settled = True
            if requeue:
                self.backend.nack(self, delay=delay)
            else:
                self.backend.dead_letter(self, "rejected by the consumer (requeue=False)")

    def in_progress(self) -> None:
        """Tell the backend the consumer is still working (extends its lease, if any)."""
        if self.backend is not None and not self.settled:
            self.backend.touch(self)


@dataclass(frozen=True)
class DeadLetter:
    """An item that exhausted its attempts (or was rejected), kept for inspection and replay."""

    message: Message
    reason: str
    attempts: int
    failed_at: float = field(default_factory=time.time)
    token: Any = None


class WorkQueueBackend(ABC):
    """Where a work queue's items live. One instance serves one named queue.

    Thread-safe: several consumer threads call ``fetch`` / ``ack`` / ``nack`` concurrently.
    ``put`` returns only once the item is stored (for a durable backend: acknowledged by the
    broker), so a returned ``put`` is never lost.
    """

    name: str
    durable: bool = False
    delays: bool = False
    """Whether ``put`` honours :data:`NOT_BEFORE_HEADER` (keeps the item until then, in the
    store, not in a consumer's memory). :class:`~eventforge.workqueue.WorkQueue` refuses
    ``put(..., delay=)`` on a backend that does not."""
    lease_setting: str | None = None
    """The setting after which an item fetched and never settled is delivered again (say
    ``"ack_wait"``), named in the reason of an item dead-lettered for being redelivered too
    often; ``None`` when the backend has no such setting."""

    @abstractmethod
    def put(self, message: Message) -> None:
        """Store a new item: ready for delivery now, or (on a backend with ``delays``) from
        the time in its :data:`NOT_BEFORE_HEADER` on."""

    def put_many(self, messages: list[Message]) -> None:
        """Store several items; returns once all are stored.

        Backends with a cheaper batch path (one round trip for many items) override it; the
        default stores them one by one.
        """
        for message in messages:
            self.put(message)

    @abstractmethod
    def fetch(self, max_items: int = 1, timeout: float | None = None) -> list[Delivery]:
        """Return up to ``max_items`` ready deliveries, waiting up to ``timeout`` for the first.

        A delivery's ``attempt`` counts every delivery of the item, including those that were
        never settled (their consumer died or its lease ran out): the queue dead-letters an
        item whose attempt passes ``max_attempts`` however it got there.
        """

    @abstractmethod
    def ack(self, delivery: Delivery) -> bool | None:
        """Remove a delivered item for good.

        Return ``False`` when the delivery was stale (its lease ran out and the item was
        delivered again), so nothing happened; ``None`` or ``True`` otherwise. The same holds
        for :meth:`nack` and :meth:`dead_letter`: the queue counts only settles that took effect.
        """

    @abstractmethod
    def nack(self, delivery: Delivery, *, delay: float = 0.0) -> bool | None:
        """Make a delivered item available again after ``delay`` seconds (attempt + 1)."""

    @abstractmethod
    def dead_letter(self, delivery: Delivery, reason: str) -> bool | None:
        """Move a delivered item to the dead-letter queue and remove it from the work queue."""

    @abstractmethod
    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Return up to ``limit`` dead letters, oldest first."""

    @abstractmethod
    def replay(self, tokens: list[Any] | None = None) -> int:
        """Put dead letters (all, or those with the given tokens) back as new items; count them."""

    def touch(self, delivery: Delivery) -> None:
        """Extend the lease of an item still being worked on (no-op where there is no lease)."""

    @abstractmethod
    def stats(self) -> dict[str, Any]:
        """Counters: at least ``pending``, ``in_flight`` and ``dead_letters``."""

    def close(self) -> None:
        """Release resources (connections, threads). Idempotent."""


def for_replay(message: Message) -> Message:
    """Make a dead letter's message ready to be put back, the same on every backend.

    It loses the reason it was dead-lettered for and the attempt number of its last life; the
    queue stamps a fresh attempt when it is handed out again. Returns ``message`` (changed in
    place).
    """
    headers = message.headers
    headers.pop(DEAD_LETTER_REASON_HEADER, None)
    headers.pop(ATTEMPT_HEADER, None)
    return message


MALFORMED_HEADER = "x-eventforge-malformed"
"""Marks the stand-in of an item whose bytes could not be decoded (see :func:`malformed_item`)."""

WORK_QUEUE_STATS = ("pending", "in_flight", "dead_letters")
"""The keys every backend's ``stats()`` has: items waiting (delayed ones included), items handed
out and not settled, and dead letters."""


def malformed_item(queue: str, data: bytes, error: BaseException) -> tuple[Message, str]:
    """The dead letter of an item whose bytes could not be decoded: a stand-in message and its
    reason, the same on every backend.

    The stand-in carries the bytes as text (undecodable bytes replaced) and
    :data:`MALFORMED_HEADER`, so nothing is lost from sight and ``replay()`` can leave it out.
    """
    stand_in = Message(queue, data.decode("utf-8", "replace"), {MALFORMED_HEADER: True})
    return stand_in, f"malformed item: {error}"
