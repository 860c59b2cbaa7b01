"""RetryPolicy: the documented defaults, the backoff formula, jitter, validation, and how a
WorkQueue applies it when a delivery is nacked (retry after the backoff, or dead-letter)."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest
from eventforge import Message, RetryPolicy, WorkQueue
from eventforge.workqueue._api import (
    DEAD_LETTER_REASON_HEADER,
    DeadLetter,
    Delivery,
    WorkQueueBackend,
)


class RecordingBackend(WorkQueueBackend):
    """A backend that hands out one delivery with a chosen attempt number and records settles.

    It stands for a durable backend whose broker counts deliveries (the attempt can pass
    ``max_attempts`` when a consumer crashed before settling). ``answer`` is what every settle
    returns (``False``: the delivery was stale).
    """

    def __init__(self, attempt: int = 1, answer: bool | None = None) -> None:
        self.name = "recorded"
        self.attempt = attempt
        self.answer = answer
        self.calls: list[tuple[str, Any]] = []

    def put(self, message: Message) -> None:
        self.calls.append(("put", message.payload))

    def fetch(self, max_items: int = 1, timeout: float | None = None) -> list[Delivery]:
        return [Delivery(Message(self.name, "item"), self.attempt, self.name, token="t1")]

    def ack(self, delivery: Delivery) -> bool | None:
        self.calls.append(("ack", delivery.token))
        return self.answer

    def nack(self, delivery: Delivery, *, delay: float = 0.0) -> bool | None:
        self.calls.append(("nack", delay))
        return self.answer

    def dead_letter(self, delivery: Delivery, reason: str) -> bool | None:
        self.calls.append(("dead_letter", reason))
        return self.answer

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        return []

    def replay(self, tokens: list[Any] | None = None) -> int:
        return 0

    def touch(self, delivery: Delivery) -> None:
        self.calls.append(("touch", delivery.token))

    def stats(self) -> dict[str, Any]:
        return {"pending": 0, "in_flight": 0, "dead_letters": 0}


def test_defaults_are_the_documented_ones() -> None:
    policy = RetryPolicy()
    assert policy.max_attempts == 5
    assert policy.initial_backoff == 0.1
    assert policy.max_backoff == 900.0
    assert policy.multiplier == 2.0
    assert policy.jitter == 0.1


def test_work_queue_defaults_are_the_documented_ones() -> None:
    with WorkQueue() as queue:
        assert queue.retry == RetryPolicy()
        assert queue.backend.visibility_timeout == 300.0
        assert queue.backend.max_size == 100_000


def test_a_policy_and_a_dead_letter_cannot_be_changed_once_made() -> None:
    policy = RetryPolicy()
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.max_attempts = 100  # type: ignore[misc]
    letter = DeadLetter(Message("jobs", 1), "rejected", attempts=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        letter.reason = "fine"  # type: ignore[misc]


def test_the_queue_keeps_the_policy_it_was_given() -> None:
    policy = RetryPolicy(max_attempts=2, jitter=0)
    with WorkQueue(retry=policy) as queue:
        assert queue.retry is policy


def test_backoff_follows_the_documented_formula_without_jitter() -> None:
    policy = RetryPolicy(initial_backoff=0.5, multiplier=3.0, max_backoff=100.0, jitter=0)
    # min(max_backoff, initial_backoff * multiplier ** (n - 1)) after failed attempt n
    assert [policy.backoff(n) for n in range(1, 7)] == [0.5, 1.5, 4.5, 13.5, 40.5, 100.0]


def test_backoff_is_capped_at_max_backoff() -> None:
    policy = RetryPolicy(initial_backoff=1.0, multiplier=2.0, max_backoff=5.0, jitter=0)
    assert policy.backoff(3) == 4.0
    assert policy.backoff(4) == 5.0
    assert policy.backoff(50) == 5.0


def test_a_multiplier_of_one_gives_a_constant_backoff() -> None:
    policy = RetryPolicy(initial_backoff=0.25, multiplier=1.0, jitter=0)
    assert {policy.backoff(n) for n in range(1, 10)} == {0.25}


def test_an_attempt_number_below_one_is_treated_as_the_first() -> None:
    policy = RetryPolicy(initial_backoff=0.5, multiplier=3.0, jitter=0)
    assert policy.backoff(0) == 0.5


def test_jitter_only_lengthens_the_delay_and_stays_within_its_fraction() -> None:
    random.seed(20240611)
    policy = RetryPolicy(initial_backoff=1.0, multiplier=2.0, max_backoff=1000.0, jitter=0.5)
    for attempt, base in [(1, 1.0), (2, 2.0), (4, 8.0)]:
        delays = [policy.backoff(attempt) for _ in range(300)]
        assert all(base <= d <= base * 1.5 for d in delays), (base, min(delays), max(delays))
        # The delays are spread over the whole allowance, not bunched at one end.
        assert min(delays) < base * 1.1
        assert max(delays) > base * 1.4


def test_jitter_never_goes_past_max_backoff() -> None:
    random.seed(7)
    policy = RetryPolicy(initial_backoff=8.0, multiplier=2.0, max_backoff=10.0, jitter=1.0)
    delays = [policy.backoff(1) for _ in range(300)]
    assert all(8.0 <= d <= 10.0 for d in delays)
    assert max(delays) == 10.0  # over half of the draws would pass the cap
    assert all(policy.backoff(5) == 10.0 for _ in range(50))


def test_no_jitter_means_the_same_delay_every_time() -> None:
    policy = RetryPolicy(initial_backoff=0.3, jitter=0)
    assert {policy.backoff(2) for _ in range(100)} == {0.6}


@pytest.mark.parametrize(
    ("settings", "complaint"),
    [
        ({"max_attempts": 0}, "max_attempts must be >= 1, got 0"),
        ({"max_attempts": -3}, "max_attempts must be >= 1"),
        ({"initial_backoff": -0.001}, "backoff times must be >= 0"),
        ({"max_backoff": -1.0}, "backoff times must be >= 0"),
        ({"multiplier": 0.99}, "multiplier must be >= 1, got 0.99"),
        ({"jitter": -0.1}, "jitter must be between 0 and 1, got -0.1"),
        ({"jitter": 1.01}, "jitter must be between 0 and 1"),
    ],
)
def test_invalid_settings_are_refused(settings: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        RetryPolicy(**settings)


def test_settings_on_the_edge_of_the_valid_range_are_accepted() -> None:
    policy = RetryPolicy(max_attempts=1, initial_backoff=0, max_backoff=0, multiplier=1, jitter=0)
    assert policy.backoff(1) == 0
    assert RetryPolicy(jitter=1).jitter == 1


def test_exhausted_from_the_last_allowed_attempt_on() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert not policy.exhausted(1)
    assert not policy.exhausted(2)
    assert policy.exhausted(3)
    # Deliveries counted by a broker can pass the maximum (a consumer crashed before settling).
    assert policy.exhausted(4)
    assert policy.exhausted(11)


def test_nack_before_the_last_attempt_retries_after_the_policy_backoff() -> None:
    backend = RecordingBackend(attempt=2)
    policy = RetryPolicy(max_attempts=3, initial_backoff=0.5, multiplier=3.0, jitter=0)
    with WorkQueue("recorded", backend=backend, retry=policy) as queue:
        delivery = queue.get(timeout=1)
        assert delivery is not None
        delivery.nack()
        assert backend.calls == [("nack", 1.5)]
        assert queue.stats["retried"] == 1
        assert queue.stats["dead_lettered"] == 0


def test_nack_with_a_delay_uses_the_callers_delay() -> None:
    backend = RecordingBackend(attempt=1)
    with WorkQueue("recorded", backend=backend, retry=RetryPolicy(jitter=0)) as queue:
        delivery = queue.get(timeout=1)
        assert delivery is not None
        delivery.nack(delay=0.5)
        assert backend.calls == [("nack", 0.5)]


def test_nack_of_the_last_attempt_dead_letters_it() -> None:
    backend = RecordingBackend(attempt=3)
    with WorkQueue("recorded", backend=backend, retry=RetryPolicy(max_attempts=3)) as queue:
        delivery = queue.get(timeout=1)
        assert delivery is not None
        delivery.nack(delay=5)  # a caller's delay does not buy an attempt past the maximum
        assert backend.calls == [("dead_letter", "failed 3 of 3 attempts")]
        assert delivery.message.headers[DEAD_LETTER_REASON_HEADER] == "failed 3 of 3 attempts"
        assert queue.stats["dead_lettered"] == 1
        assert queue.stats["retried"] == 0


def test_an_item_delivered_past_max_attempts_is_dead_lettered_not_retried() -> None:
    # Attempt 7 of 3: it was delivered that often without being settled (its consumers
    # crashed); it is dead-lettered as it is fetched, never handed to a handler again.
    backend = RecordingBackend(attempt=7)
    with WorkQueue("recorded", backend=backend, retry=RetryPolicy(max_attempts=3)) as queue:
        assert queue.get(timeout=0.05) is None
        assert backend.calls
        assert {name for name, _ in backend.calls} == {"dead_letter"}
        reason = backend.calls[0][1]
        assert reason.startswith("delivered 7 times without being settled (max_attempts=3)")


def test_settles_that_the_backend_reports_stale_are_not_counted() -> None:
    backend = RecordingBackend(attempt=1, answer=False)
    with WorkQueue("recorded", backend=backend, retry=RetryPolicy(max_attempts=2)) as queue:
        for settle in ("ack", "nack", "reject"):
            delivery = queue.get(timeout=1)
            assert delivery is not None
            if settle == "ack":
                delivery.ack()
            elif settle == "nack":
                delivery.nack()
            else:
                delivery.nack(requeue=False)
        stats = queue.stats
        assert (stats["acked"], stats["retried"], stats["dead_lettered"]) == (0, 0, 0)
        assert [name for name, _ in backend.calls] == ["ack", "nack", "dead_letter"]


def test_settles_that_took_effect_are_counted_once_each() -> None:
    backend = RecordingBackend(attempt=1, answer=None)
    with WorkQueue("recorded", backend=backend, retry=RetryPolicy(max_attempts=2)) as queue:
        stats = queue.stats
        assert (stats["acked"], stats["retried"], stats["dead_lettered"]) == (0, 0, 0)
        assert stats["handler_errors"] == 0
        for settle in ("ack", "ack", "nack", "reject"):
            delivery = queue.get(timeout=1)
            assert delivery is not None
            if settle == "ack":
                delivery.ack()
            elif settle == "nack":
                delivery.nack()
            else:
                delivery.nack(requeue=False)
        stats = queue.stats
        assert (stats["acked"], stats["retried"], stats["dead_lettered"]) == (2, 1, 1)
        assert backend.calls[-1] == ("dead_letter", "rejected by the consumer (requeue=False)")
