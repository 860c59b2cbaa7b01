"""The work-queue backend contract: what a backend gets for free, the names every backend shares,
and the stand-in of an item that cannot be decoded."""

from __future__ import annotations

import time
from typing import Any

from eventforge.message import Message
from eventforge.transport import (
    ATTEMPT_HEADER,
    DEAD_LETTER_REASON_HEADER,
    MALFORMED_HEADER,
    NOT_BEFORE_HEADER,
    WORK_QUEUE_STATS,
    DeadLetter,
    Delivery,
    WorkQueueBackend,
    malformed_item,
)


class Minimal(WorkQueueBackend):
    """Only what the contract requires; records what it is asked to do."""

    def __init__(self) -> None:
        self.name = "minimal"
        self.calls: list[tuple[str, Any]] = []

    def put(self, message: Message) -> None:
        self.calls.append(("put", message.payload))

    def fetch(self, max_items: int = 1, timeout: float | None = None) -> list[Delivery]:
        return []

    def ack(self, delivery: Delivery) -> bool | None:
        self.calls.append(("ack", delivery.token))
        return None

    def nack(self, delivery: Delivery, *, delay: float = 0.0) -> bool | None:
        self.calls.append(("nack", delay))
        return None

    def dead_letter(self, delivery: Delivery, reason: str) -> bool | None:
        self.calls.append(("dead_letter", reason))
        return None

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        return []

    def replay(self, tokens: list[Any] | None = None) -> int:
        return 0

    def stats(self) -> dict[str, Any]:
        return dict.fromkeys(WORK_QUEUE_STATS, 0)


def test_the_shared_header_and_stats_names() -> None:
    assert ATTEMPT_HEADER == "x-eventforge-attempt"
    assert DEAD_LETTER_REASON_HEADER == "x-eventforge-dead-letter-reason"
    assert NOT_BEFORE_HEADER == "x-eventforge-not-before"
    assert MALFORMED_HEADER == "x-eventforge-malformed"
    assert WORK_QUEUE_STATS == ("pending", "in_flight", "dead_letters")


def test_a_backend_is_neither_durable_nor_delaying_nor_leased_unless_it_says_so() -> None:
    backend = Minimal()
    assert (backend.durable, backend.delays, backend.lease_setting) == (False, False, None)


def test_put_many_stores_each_item_in_order_by_default() -> None:
    backend = Minimal()
    backend.put_many([Message("minimal", n) for n in range(3)])
    assert backend.calls == [("put", 0), ("put", 1), ("put", 2)]


def test_touch_and_close_do_nothing_by_default() -> None:
    backend = Minimal()
    delivery = Delivery(Message("minimal", 1), 1, "minimal", token="t", backend=backend)
    delivery.in_progress()
    backend.close()
    backend.close()
    assert backend.calls == []
    assert not delivery.settled


def test_a_delivery_settles_through_its_backend_exactly_once() -> None:
    backend = Minimal()
    acked = Delivery(Message("minimal", 1), 1, "minimal", token="a", backend=backend)
    acked.ack()
    acked.ack()
    acked.nack()
    nacked = Delivery(Message("minimal", 2), 2, "minimal", token="n", backend=backend)
    nacked.nack(delay=1.5)
    nacked.nack(requeue=False)
    nacked.ack()
    rejected = Delivery(Message("minimal", 3), 1, "minimal", token="r", backend=backend)
    rejected.nack(requeue=False)
    rejected.nack()
    assert backend.calls == [
        ("ack", "a"),
        ("nack", 1.5),
        ("dead_letter", "rejected by the consumer (requeue=False)"),
    ]
    assert (acked.settled, nacked.settled, rejected.settled) == (True, True, True)


def test_a_fresh_delivery_is_unsettled_and_has_no_token_or_backend() -> None:
    delivery = Delivery(Message("minimal", 1), 1, "minimal")
    assert (delivery.settled, delivery.token, delivery.backend) == (False, None, None)


def test_a_dead_letter_records_when_it_failed() -> None:
    before = time.time()
    letter = DeadLetter(Message("jobs", 1), "why", 3)
    assert before <= letter.failed_at <= time.time()
    assert letter.token is None


def test_an_undecodable_item_becomes_a_marked_stand_in_with_its_bytes_as_text() -> None:
    message, reason = malformed_item("jobs", b"not json \xff", ValueError("bad byte"))
    assert message.topic == "jobs"
    assert message.payload == "not json \ufffd"
    assert message.headers == {MALFORMED_HEADER: True}
    assert reason == "malformed item: bad byte"


def test_in_progress_extends_the_lease_only_until_the_delivery_is_settled() -> None:
    class Leased(Minimal):
        def touch(self, delivery: Delivery) -> None:
            self.calls.append(("touch", delivery.token))

    backend = Leased()
    delivery = Delivery(Message("leased", 1), 1, "leased", token="t", backend=backend)
    delivery.in_progress()
    delivery.ack()
    delivery.in_progress()
    assert backend.calls == [("touch", "t"), ("ack", "t")]
