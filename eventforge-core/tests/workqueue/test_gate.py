"""PolicyGate: the over-delivery cap, the attempt header, retries within fetch's timeout, what
it counts, and what it passes through to the backend unchanged."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from eventforge.message import Message
from eventforge.transport import (
    ATTEMPT_HEADER,
    DEAD_LETTER_REASON_HEADER,
    DeadLetter,
    Delivery,
    RetryPolicy,
    WorkQueueBackend,
)
from eventforge.workqueue._gate import PolicyGate

POLICY = RetryPolicy(max_attempts=3, initial_backoff=0.25, multiplier=2.0, jitter=0.0)


class ScriptedBackend(WorkQueueBackend):
    """Hands out the batches it is given, one batch per fetch (then nothing), and records every
    call with its arguments. ``answer`` is what settles return; ``fail_dead_letter`` makes
    ``dead_letter`` raise, as a broker that went away would."""

    lease_setting: str | None = "ack_wait"

    def __init__(self, *batches: list[int], answer: bool | None = None) -> None:
        self.name = "scripted"
        self.durable = True
        self.batches = [list(batch) for batch in batches]
        self.answer = answer
        self.fail_dead_letter = False
        self.calls: list[tuple[str, Any]] = []
        self.fetch_timeouts: list[float | None] = []

    def put(self, message: Message) -> None:
        self.calls.append(("put", message.payload))

    def put_many(self, messages: list[Message]) -> None:
        self.calls.append(("put_many", [m.payload for m in messages]))

    def fetch(self, max_items: int = 1, timeout: float | None = None) -> list[Delivery]:
        self.fetch_timeouts.append(timeout)
        self.calls.append(("fetch", max_items))
        if not self.batches:
            return []
        return [
            Delivery(Message(self.name, f"item{n}", {}), attempt, self.name, token=n)
            for n, attempt in enumerate(self.batches.pop(0))
        ]

    def ack(self, delivery: Delivery) -> bool | None:
        self.calls.append(("ack", delivery.token))
        return self.answer

    def nack(self, delivery: Delivery, *, delay: float = 0.0) -> bool | None:
        self.calls.append(("nack", delay))
        return self.answer

    def dead_letter(self, delivery: Delivery, reason: str) -> bool | None:
        self.calls.append(("dead_letter", reason))
        if self.fail_dead_letter:
            raise ConnectionError("broker gone")
        return self.answer

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        self.calls.append(("dead_letters", limit))
        return [DeadLetter(Message(self.name, "dead"), "why", 3)]

    def replay(self, tokens: list[Any] | None = None) -> int:
        self.calls.append(("replay", tokens))
        return 7

    def touch(self, delivery: Delivery) -> None:
        self.calls.append(("touch", delivery.token))

    def stats(self) -> dict[str, Any]:
        return {"pending": 4, "in_flight": 1, "dead_letters": 2}

    def close(self) -> None:
        self.calls.append(("close", None))


def test_attempts_up_to_max_are_handed_out_with_their_attempt_in_the_headers() -> None:
    gate = PolicyGate(ScriptedBackend([1, 2, 3]), POLICY)
    deliveries = gate.fetch(3, 1.0)
    assert [d.attempt for d in deliveries] == [1, 2, 3]
    assert [d.message.headers[ATTEMPT_HEADER] for d in deliveries] == [1, 2, 3]
    assert all(d.backend is gate for d in deliveries)
    assert gate.counts["over_delivered"] == 0


def test_an_item_one_past_max_attempts_is_dead_lettered_with_the_lease_setting_named() -> None:
    backend = ScriptedBackend([4, 1])
    gate = PolicyGate(backend, POLICY)
    [delivery] = gate.fetch(2, 1.0)
    assert delivery.message.payload == "item1"
    reason = (
        "delivered 4 times without being settled (max_attempts=3): its consumers crashed or "
        "exceeded the visibility timeout (ack_wait)"
    )
    assert ("dead_letter", reason) in backend.calls
    assert (gate.counts["over_delivered"], gate.counts["dead_lettered"]) == (1, 1)


def test_the_reason_names_no_setting_when_the_backend_has_no_lease() -> None:
    backend = ScriptedBackend([9])
    backend.lease_setting = None
    gate = PolicyGate(backend, POLICY)
    assert gate.fetch(1, 0) == []
    [(_, reason)] = [call for call in backend.calls if call[0] == "dead_letter"]
    assert reason.endswith("exceeded the visibility timeout")


def test_when_every_item_fetched_is_over_delivered_fetch_asks_again_for_the_next() -> None:
    backend = ScriptedBackend([5, 6], [1])
    gate = PolicyGate(backend, POLICY)
    [delivery] = gate.fetch(2, 30.0)
    assert (delivery.message.payload, delivery.attempt) == ("item0", 1)
    assert [name for name, _ in backend.calls].count("fetch") == 2
    # The second fetch waits only for what is left of the first one's timeout.
    first, second = backend.fetch_timeouts
    assert first == 30.0
    assert second is not None
    assert 0 < second < 30.0
    assert gate.counts["over_delivered"] == 2


def test_a_healthy_item_behind_an_over_delivered_one_comes_within_a_short_timeout() -> None:
    backend = ScriptedBackend([4], [1])
    gate = PolicyGate(backend, POLICY)
    [delivery] = gate.fetch(1, 0.5)
    assert delivery.attempt == 1


def test_without_a_timeout_fetch_keeps_asking_until_a_healthy_item_comes() -> None:
    backend = ScriptedBackend([4], [4], [2])
    gate = PolicyGate(backend, POLICY)
    [delivery] = gate.fetch(1, None)
    assert delivery.attempt == 2
    assert backend.fetch_timeouts == [None, None, None]


def test_fetch_gives_up_empty_handed_once_its_timeout_is_spent() -> None:
    backend = ScriptedBackend(*([[4]] * 50))
    gate = PolicyGate(backend, POLICY)
    assert gate.fetch(1, 0) == []
    assert backend.fetch_timeouts == [0]


def test_an_empty_fetch_returns_at_once() -> None:
    backend = ScriptedBackend()
    gate = PolicyGate(backend, POLICY)
    assert gate.fetch(1, 5.0) == []
    assert backend.fetch_timeouts == [5.0]


def test_an_over_delivered_item_that_cannot_be_dead_lettered_is_logged_and_not_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = ScriptedBackend([4])
    backend.fail_dead_letter = True
    gate = PolicyGate(backend, POLICY)
    with caplog.at_level(logging.WARNING, logger="eventforge.workqueue"):
        assert gate.fetch(1, 0) == []
    assert (gate.counts["over_delivered"], gate.counts["dead_lettered"]) == (0, 0)
    [record] = caplog.records
    assert "could not dead-letter" in record.getMessage()
    assert "delivered again when its lease runs out" in record.getMessage()
    assert record.exc_info is not None  # the backend's error, with its traceback
    assert isinstance(record.exc_info[1], ConnectionError)


def test_an_over_delivered_item_the_backend_reports_stale_is_not_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gate = PolicyGate(ScriptedBackend([4], answer=False), POLICY)
    with caplog.at_level(logging.WARNING, logger="eventforge.workqueue"):
        assert gate.fetch(1, 0) == []
    assert gate.counts["over_delivered"] == 0
    assert not caplog.records


def test_a_dead_lettered_over_delivered_item_is_logged_with_what_to_do(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gate = PolicyGate(ScriptedBackend([4]), POLICY)
    with caplog.at_level(logging.WARNING, logger="eventforge.workqueue"):
        gate.fetch(1, 0)
    [record] = caplog.records
    assert "dead-lettered: delivered 4 times" in record.getMessage()
    assert "replay it from dead_letters()" in record.getMessage()


@pytest.mark.parametrize(("attempt", "delay"), [(1, 0.25), (2, 0.5)])
def test_a_nack_before_the_last_attempt_waits_the_policys_backoff(
    attempt: int, delay: float
) -> None:
    backend = ScriptedBackend([attempt])
    gate = PolicyGate(backend, POLICY)
    [delivery] = gate.fetch(1, 0)
    assert gate.nack(delivery) is None
    assert backend.calls[-1] == ("nack", delay)
    assert gate.counts["retried"] == 1


def test_a_nack_with_a_delay_waits_that_delay() -> None:
    backend = ScriptedBackend([1])
    gate = PolicyGate(backend, POLICY)
    [delivery] = gate.fetch(1, 0)
    gate.nack(delivery, delay=0.01)
    assert backend.calls[-1] == ("nack", 0.01)


def test_a_nack_of_the_last_attempt_dead_letters_it_with_the_reason_in_its_headers() -> None:
    backend = ScriptedBackend([3])
    gate = PolicyGate(backend, POLICY)
    [delivery] = gate.fetch(1, 0)
    gate.nack(delivery, delay=60)
    assert backend.calls[-1] == ("dead_letter", "failed 3 of 3 attempts")
    assert delivery.message.headers[DEAD_LETTER_REASON_HEADER] == "failed 3 of 3 attempts"
    assert (gate.counts["retried"], gate.counts["dead_lettered"]) == (0, 1)


def test_settles_answer_what_the_backend_answered() -> None:
    for answer in (True, None, False):
        backend = ScriptedBackend([1], [1], [1], answer=answer)
        gate = PolicyGate(backend, POLICY)
        first, second, third = (gate.fetch(1, 0)[0] for _ in range(3))
        assert gate.ack(first) is answer
        assert gate.nack(second) is answer
        assert gate.dead_letter(third, "why") is answer
        counted = 0 if answer is False else 1
        assert gate.counts == {
            "acked": counted,
            "retried": counted,
            "dead_lettered": counted,
            "handler_errors": 0,
            "over_delivered": 0,
        }


def test_stats_are_the_backends_and_the_gates_counts_together() -> None:
    gate = PolicyGate(ScriptedBackend(), POLICY)
    gate.count("handler_errors")
    gate.count("handler_errors")
    assert gate.stats() == {
        "pending": 4,
        "in_flight": 1,
        "dead_letters": 2,
        "acked": 0,
        "retried": 0,
        "dead_lettered": 0,
        "handler_errors": 2,
        "over_delivered": 0,
    }


def test_everything_else_passes_through_to_the_backend_unchanged() -> None:
    backend = ScriptedBackend([1])
    gate = PolicyGate(backend, POLICY)
    assert (gate.name, gate.durable, gate.inner, gate.retry) == ("scripted", True, backend, POLICY)
    gate.put(Message("scripted", "one"))
    gate.put_many([Message("scripted", "two"), Message("scripted", "three")])
    [delivery] = gate.fetch(4, 0)
    gate.touch(delivery)
    assert [letter.reason for letter in gate.dead_letters(17)] == ["why"]
    assert gate.replay(["a", "b"]) == 7
    assert gate.replay(None) == 7
    gate.close()
    assert backend.calls == [
        ("put", "one"),
        ("put_many", ["two", "three"]),
        ("fetch", 4),
        ("touch", 0),
        ("dead_letters", 17),
        ("replay", ["a", "b"]),
        ("replay", None),
        ("close", None),
    ]
