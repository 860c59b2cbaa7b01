"""The policy gate: what every delivery of a :class:`~eventforge.workqueue.WorkQueue` settles through."""

from __future__ import annotations

import logging
import threading
from typing import Any

from ._workqueue_spi import (
    DEAD_LETTER_REASON_HEADER,
    DeadLetter,
    Delivery,
    RetryPolicy,
    WorkQueueBackend,
)
from .message import Message

__all__ = ["PolicyGate"]

log = logging.getLogger("eventforge.workqueue")


class PolicyGate(WorkQueueBackend):
    """What a :class:`Delivery` from a :class:`WorkQueue` settles through.

    It applies the queue's :class:`RetryPolicy` on ``nack`` (backoff, or dead-letter once
    attempts are exhausted) and counts every outcome, so that pull (``get``) and push
    (``consume``) behave the same on every backend.
    """

    def __init__(self, inner: WorkQueueBackend, retry: RetryPolicy) -> None:
        self.inner = inner
        self.name = inner.name
        self.durable = inner.durable
        self.retry = retry
        self._lock = threading.Lock()
        self.counts = {"acked": 0, "retried": 0, "dead_lettered": 0, "handler_errors": 0}

    def count(self, key: str) -> None:
        with self._lock:
            self.counts[key] += 1

    def put(self, message: Message) -> None:
        self.inner.put(message)

    def put_many(self, messages: list[Message]) -> None:
        self.inner.put_many(messages)

    def fetch(self, max_items: int = 1, timeout: float | None = None) -> list[Delivery]:
        deliveries = self.inner.fetch(max_items, timeout)
        for delivery in deliveries:
            delivery.backend = self
        return deliveries

    def ack(self, delivery: Delivery) -> bool | None:
        done = self.inner.ack(delivery)
        if done is not False:  # a stale settle is counted by the backend, not here
            self.count("acked")
        return done

    def nack(self, delivery: Delivery, *, delay: float = 0.0) -> bool | None:
        attempt = delivery.attempt
        if self.retry.exhausted(attempt):
            return self.dead_letter(
                delivery, f"failed {attempt} of {self.retry.max_attempts} attempts"
            )
        done = self.inner.nack(delivery, delay=delay if delay > 0 else self.retry.backoff(attempt))
        if done is not False:
            self.count("retried")
        return done

    def dead_letter(self, delivery: Delivery, reason: str) -> bool | None:
        delivery.message.headers[DEAD_LETTER_REASON_HEADER] = reason
        done = self.inner.dead_letter(delivery, reason)
        if done is not False:
            self.count("dead_lettered")
        return done

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        return self.inner.dead_letters(limit)

    def replay(self, tokens: list[Any] | None = None) -> int:
        return self.inner.replay(tokens)

    def touch(self, delivery: Delivery) -> None:
        self.inner.touch(delivery)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            counts = dict(self.counts)
        return {**self.inner.stats(), **counts}

    def close(self) -> None:
        self.inner.close()
