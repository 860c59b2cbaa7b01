"""The policy gate: what every delivery of a :class:`~eventforge.workqueue.WorkQueue` passes through.

The gate enforces the queue's :class:`RetryPolicy` the same way on every backend: a nack waits
out the policy's backoff or, after the last attempt, dead-letters the item; an item delivered
more than ``max_attempts`` times *without being settled* (its consumers crashed, or held it past
their lease) is dead-lettered when it is fetched again, instead of being handed to yet another
consumer that it may kill. Every delivery it hands out carries its attempt number in the
``x-eventforge-attempt`` header, whatever the backend, so a handler can tell a retry.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from eventforge.message import Message
from eventforge.transport import (
    ATTEMPT_HEADER,
    DEAD_LETTER_REASON_HEADER,
    DeadLetter,
    Delivery,
    RetryPolicy,
    WorkQueueBackend,
)

__all__ = ["PolicyGate"]

log = logging.getLogger("eventforge.workqueue")


class PolicyGate(WorkQueueBackend):
    """What a :class:`Delivery` from a :class:`WorkQueue` settles through.

    It applies the queue's :class:`RetryPolicy` on ``nack`` (backoff, or dead-letter once
    attempts are exhausted) and on ``fetch`` (an item delivered more than ``max_attempts`` times
    is dead-lettered, not handed out), stamps each delivery's attempt number into its headers
    and counts every outcome, so that pull (``get``) and push (``consume``) behave the same on
    every backend.
    """

    def __init__(self, inner: WorkQueueBackend, retry: RetryPolicy) -> None:
        self.inner = inner
        self.name = inner.name
        self.durable = inner.durable
        self.retry = retry
        self._lock = threading.Lock()
        self.counts = {
            "acked": 0,
            "retried": 0,
            "dead_lettered": 0,
            "handler_errors": 0,
            "over_delivered": 0,
        }

    def count(self, key: str) -> None:
        with self._lock:
            self.counts[key] += 1

    def put(self, message: Message) -> None:
        self.inner.put(message)

    def put_many(self, messages: list[Message]) -> None:
        self.inner.put_many(messages)

    def fetch(self, max_items: int = 1, timeout: float | None = None) -> list[Delivery]:
        """The backend's deliveries, minus over-delivered items (dead-lettered here).

        When every item fetched was over-delivered, it fetches again within what is left of
        ``timeout``, so a run of such items never makes ``get`` return early or empty-handed
        while healthy items wait behind them.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            deliveries = self.inner.fetch(max_items, timeout)
            out: list[Delivery] = []
            for delivery in deliveries:
                delivery.backend = self
                delivery.message.headers[ATTEMPT_HEADER] = delivery.attempt
                if delivery.attempt > self.retry.max_attempts:
                    self._over_delivered(delivery)
                else:
                    out.append(delivery)
            if out or not deliveries:
                return out
            if deadline is not None:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    return []

    def _over_delivered(self, delivery: Delivery) -> None:
        """Dead-letter an item delivered more often than the policy allows, never settled."""
        lease = self.inner.lease_setting
        reason = (
            f"delivered {delivery.attempt} times without being settled (max_attempts="
            f"{self.retry.max_attempts}): its consumers crashed or exceeded the visibility "
            f"timeout{f' ({lease})' if lease else ''}"
        )
        try:
            done = self.dead_letter(delivery, reason)
        except Exception:
            log.warning(
                "work queue %r: could not dead-letter message %s (%s); it is delivered again "
                "when its lease runs out",
                self.name,
                delivery.message.id,
                reason,
                exc_info=True,
            )
            return
        if done is not False:
            self.count("over_delivered")
            log.warning(
                "work queue %r: message %s dead-lettered: %s. Find out why its handler kills "
                "or stalls the consumer, then replay it from dead_letters()",
                self.name,
                delivery.message.id,
                reason,
            )

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
