"""Delayed puts and retries on Redis: kept on the server until due, precise to about 50 ms."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import pytest
from eventforge.workqueue import RetryPolicy, WorkQueue

pytestmark = pytest.mark.broker


def _collect(queue: WorkQueue, n: int, timeout: float = 10.0) -> list[tuple[Any, float]]:
    out: list[tuple[Any, float]] = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        delivery = queue.get(timeout=0.5)
        if delivery is not None:
            out.append((delivery.message.payload, time.time()))
            delivery.ack()
    return out


def test_delayed_items_are_delivered_no_earlier_than_their_time(
    make_redis: Callable[..., Any],
) -> None:
    transport = make_redis()
    queue = WorkQueue(f"delay-{time.time_ns()}", transport)
    put_at: dict[int, float] = {}
    for n in range(10):
        put_at[n] = time.time()
        queue.put(n, delay=0.2 + n * 0.05)
    queue.put("now")
    got = _collect(queue, 11)
    assert got[0][0] == "now"
    lateness = []
    for payload, at in got[1:]:
        due = put_at[payload] + 0.2 + payload * 0.05
        assert at >= due - 0.002, f"item {payload} came {due - at:.3f} s early"
        lateness.append(at - due)
    print(
        f"\nredis delayed put: {len(lateness)} items, lateness p50 "
        f"{statistics.median(lateness) * 1000:.0f} ms, max {max(lateness) * 1000:.0f} ms"
    )
    assert queue.stats["delayed"] == 0
    queue.close()


def test_a_delayed_item_waits_on_the_server_not_in_a_consumer(
    make_redis: Callable[..., Any],
) -> None:
    name = f"delay-server-{time.time_ns()}"
    producer = WorkQueue(name, make_redis())
    producer.put("later", delay=0.5)
    assert producer.stats["delayed"] == 1
    producer.close()
    consumer = WorkQueue(name, make_redis())  # another client: nothing held in memory
    assert consumer.get(timeout=0.1) is None
    got = consumer.get(timeout=5)
    assert got is not None
    assert got.message.payload == "later"
    assert got.attempt == 1
    got.ack()
    consumer.close()


def test_a_short_retry_delay_is_no_longer_rounded_up_to_half_a_second(
    make_redis: Callable[..., Any],
) -> None:
    queue = WorkQueue(
        f"retry-{time.time_ns()}",
        make_redis(),
        retry=RetryPolicy(max_attempts=3, initial_backoff=0.1, jitter=0),
    )
    queue.put("flaky")
    first = queue.get(timeout=5)
    assert first is not None
    nacked = time.time()
    first.nack(delay=0.15)
    second = queue.get(timeout=5)
    assert second is not None
    assert second.attempt == 2
    waited = time.time() - nacked
    assert waited >= 0.15
    print(f"\nredis nack(delay=0.15): redelivered after {waited * 1000:.0f} ms")
    second.ack()
    queue.close()
