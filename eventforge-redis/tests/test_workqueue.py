"""The Redis work-queue backend: a settle by a consumer whose entry was taken over is reported
stale, and a delivery in progress keeps its entry from being taken over."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator

import pytest
from eventforge.workqueue import Delivery, RetryPolicy, WorkQueue

pytestmark = pytest.mark.broker

CLAIM_IDLE = 0.3
POLICY = RetryPolicy(max_attempts=5, initial_backoff=0.0, max_backoff=0.0, jitter=0.0)


@pytest.fixture
def two_consumers(make_redis: Callable[..., object]) -> Iterator[tuple[WorkQueue, WorkQueue]]:
    """Two WorkQueues on one queue, each on its own connection (two consumers of the group)."""
    name = f"stale-{os.urandom(4).hex()}"
    queues = [
        WorkQueue(name, transport=make_redis(claim_idle=CLAIM_IDLE, block=0.1), retry=POLICY)  # type: ignore[arg-type]
        for _ in range(2)
    ]
    yield queues[0], queues[1]
    for queue in queues:
        queue.close()


def _taken_over(first: WorkQueue, second: WorkQueue) -> tuple[Delivery, Delivery]:
    first.put("slow job")
    late = first.get(timeout=10)
    assert late is not None  # ... and held past claim_idle: the other consumer takes it over
    again = second.get(timeout=10 + CLAIM_IDLE)
    assert again is not None
    assert again.message.id == late.message.id
    assert again.attempt == late.attempt + 1
    return late, again


def test_late_ack_after_the_takeover_was_acked(two_consumers: tuple[WorkQueue, WorkQueue]) -> None:
    first, second = two_consumers
    late, again = _taken_over(first, second)
    again.ack()
    assert first.backend.ack(late) is False
    late.ack()
    assert first.stats["acked"] + second.stats["acked"] == 1
    assert first.stats["stale_settles"] == 2
    assert second.join(10)


def test_late_ack_before_the_takeover_settles_leaves_the_item_to_it(
    two_consumers: tuple[WorkQueue, WorkQueue],
) -> None:
    first, second = two_consumers
    late, again = _taken_over(first, second)
    late.ack()
    assert first.stats["acked"] == 0
    assert first.stats["stale_settles"] == 1
    assert second.stats["in_flight"] == 1  # still the other consumer's
    again.ack()
    assert second.join(10)
    assert first.stats["acked"] + second.stats["acked"] == 1


def test_late_nack_and_dead_letter_do_nothing(two_consumers: tuple[WorkQueue, WorkQueue]) -> None:
    first, second = two_consumers
    late, again = _taken_over(first, second)
    assert first.backend.nack(late) is False
    late.nack(requeue=False)
    assert first.stats["retried"] == 0
    assert first.stats["dead_lettered"] == 0
    assert first.dead_letters() == []
    assert first.get(timeout=0.2) is None
    again.ack()
    assert second.join(10)


def test_a_fresh_ack_is_batched(make_redis: Callable[..., object]) -> None:
    """A delivery acked well within claim_idle takes the batched path (``None``: not waited for)."""
    name = f"fresh-{os.urandom(4).hex()}"
    queue = WorkQueue(name, transport=make_redis(claim_idle=30.0, block=0.1), retry=POLICY)  # type: ignore[arg-type]
    try:
        queue.put("quick")
        delivery = queue.get(timeout=10)
        assert delivery is not None
        assert queue.backend.ack(delivery) is None
        assert queue.join(10)
    finally:
        queue.close()


def test_in_progress_keeps_an_entry_from_being_taken_over(
    make_redis: Callable[..., object],
) -> None:
    """``delivery.in_progress()`` resets the idle time, so a slow but alive worker keeps its item."""
    transport = make_redis(claim_idle=1.0, block=0.1)
    name = f"touch-{os.urandom(3).hex()}"
    worker = WorkQueue(name, transport=transport, retry=RetryPolicy())  # type: ignore[arg-type]
    other = WorkQueue(name, backend=transport.work_queue_backend(name, RetryPolicy()))  # type: ignore[attr-defined]
    worker.put("slow job")
    delivery = worker.get(timeout=10)
    assert delivery is not None
    for _ in range(12):  # 2.4 s of work, over twice claim_idle
        time.sleep(0.2)
        delivery.in_progress()
        assert other.get(timeout=0.01) is None
    delivery.ack()
    assert worker.join(10)
    worker.close()
    other.close()


def test_stats_of_a_queue_whose_group_is_gone_raise_saying_so(
    make_redis: Callable[..., object],
) -> None:
    """A destroyed consumer group is an error of ``stats``, not an empty queue (a health check
    reading it must see the loss)."""
    from eventforge.errors import TransportError

    transport = make_redis()
    queue = WorkQueue(f"gone-{os.urandom(4).hex()}", transport=transport)  # type: ignore[arg-type]
    queue.put("stored")
    assert queue.stats["pending"] == 1
    client = transport.client  # type: ignore[attr-defined]
    client.xgroup_destroy(f"eventforge:wq:{queue.name}", "eventforge-workers")
    with pytest.raises(TransportError, match=r"consumer group .* is gone from Redis"):
        queue.stats
    queue.close()
