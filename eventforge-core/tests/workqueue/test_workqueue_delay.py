"""Delayed puts: an item is not delivered before its time, and a backend that cannot keep a
delayed item refuses it instead of delivering it at once."""

from __future__ import annotations

import gc
import threading
import time
import tracemalloc
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from eventforge.errors import UnsupportedCapabilityError
from eventforge.message import Message
from eventforge.workqueue._api import (
    NOT_BEFORE_HEADER,
    DeadLetter,
    Delivery,
    WorkQueue,
    WorkQueueBackend,
)


def test_a_delayed_item_is_not_delivered_before_its_delay() -> None:
    with WorkQueue("delayed") as queue:
        start = time.time()
        queue.put("later", delay=0.4)
        queue.put("now")
        first = queue.get(timeout=1)
        assert first is not None
        assert first.message.payload == "now"
        first.ack()
        assert queue.get(timeout=0.1) is None
        later = queue.get(timeout=5)
        assert later is not None
        assert later.message.payload == "later"
        assert time.time() - start >= 0.4
        assert later.attempt == 1
        assert later.message.headers[NOT_BEFORE_HEADER] >= start + 0.4


def test_not_before_takes_an_aware_datetime_or_a_unix_time() -> None:
    with WorkQueue("not-before") as queue:
        when = datetime.now(timezone.utc) + timedelta(seconds=0.3)
        queue.put("dt", not_before=when)
        queue.put("ts", not_before=time.time() + 0.3)
        assert queue.get(timeout=0.05) is None
        got = [queue.get(timeout=5), queue.get(timeout=5)]
        assert sorted(d.message.payload for d in got if d is not None) == ["dt", "ts"]
        assert time.time() >= when.timestamp()


def test_a_not_before_in_the_past_or_a_zero_delay_is_ready_at_once() -> None:
    with WorkQueue("past") as queue:
        queue.put("a", not_before=time.time() - 10)
        queue.put("b", delay=0)
        assert queue.get(timeout=0.5) is not None
        assert queue.get(timeout=0.5) is not None


def test_put_many_delays_every_item() -> None:
    with WorkQueue("many") as queue:
        queue.put_many([1, 2, 3], delay=0.3)
        assert queue.get(timeout=0.05) is None
        got = [queue.get(timeout=5) for _ in range(3)]
        assert sorted(d.message.payload for d in got if d is not None) == [1, 2, 3]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"delay": -1}, "delay must be a number of seconds >= 0"),
        ({"delay": "soon"}, "delay must be a number"),
        ({"delay": 1, "not_before": time.time()}, "not both"),
        ({"not_before": datetime(2030, 1, 1)}, "aware datetime"),
        ({"not_before": "tomorrow"}, "datetime or a Unix time"),
    ],
)
def test_bad_delays_are_refused_with_what_to_pass(kwargs: dict[str, Any], match: str) -> None:
    with WorkQueue("bad") as queue, pytest.raises(ValueError, match=match):
        queue.put("x", **kwargs)


class _NoDelays(WorkQueueBackend):
    name = "plain"

    def __init__(self) -> None:
        self.items: list[Message] = []

    def put(self, message: Message) -> None:
        self.items.append(message)

    def fetch(self, max_items: int = 1, timeout: float | None = None) -> list[Delivery]:
        return []

    def ack(self, delivery: Delivery) -> bool:
        return True

    def nack(self, delivery: Delivery, *, delay: float = 0.0) -> bool:
        return True

    def dead_letter(self, delivery: Delivery, reason: str) -> bool:
        return True

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        return []

    def replay(self, tokens: list[Any] | None = None) -> int:
        return 0

    def stats(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass


def test_a_backend_that_cannot_delay_refuses_instead_of_delivering_at_once() -> None:
    backend = _NoDelays()
    queue = WorkQueue("plain", backend=backend)
    with pytest.raises(
        UnsupportedCapabilityError,
        match=r"memory, local://, Redis, AMQP, SQL and JetStream \(nats-server 2\.12",
    ):
        queue.put("x", delay=5)
    with pytest.raises(UnsupportedCapabilityError):
        queue.put_many(["x"], not_before=time.time() + 5)
    assert backend.items == []
    queue.put("y")  # undelayed puts still work
    assert [m.payload for m in backend.items] == ["y"]


def test_a_hundred_thousand_delayed_items_cost_bounded_memory_and_no_thread_or_timer() -> None:
    """100,000 items three days away wait in one heap of the memory backend: each due three
    days from its put, none handed out, no thread or timer per item; the memory per item is
    printed (and bounded)."""
    three_days = 3 * 86_400
    with WorkQueue("many-delayed") as queue:
        threads = threading.active_count()
        put_at = time.monotonic()
        for start in range(0, 90_000, 10_000):
            queue.put_many(list(range(start, start + 10_000)), delay=three_days)
        gc.collect()
        tracemalloc.start()  # the last 10,000: what each item costs
        before = tracemalloc.get_traced_memory()[0]
        queue.put_many(list(range(90_000, 100_000)), delay=three_days)
        done_at = time.monotonic()
        gc.collect()
        per_item = (tracemalloc.get_traced_memory()[0] - before) / 10_000
        tracemalloc.stop()
        assert queue.stats["pending"] == 100_000
        assert threading.active_count() == threads
        heap = queue.backend._delayed  # type: ignore[attr-defined]
        assert len(heap) == 100_000
        earliest, latest = min(heap)[0], max(heap)[0]
        assert put_at + three_days - 1 <= earliest <= latest <= done_at + three_days
        assert queue.get(timeout=0.1) is None
        print(f"\nmemory backend, 100k delayed items: {per_item:.0f} B per item")
        assert per_item < 2048
