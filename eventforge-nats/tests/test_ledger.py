"""JetStream work queue: a settle of a delivery whose item this process fetched again is stale.

JetStream itself cannot tell (it acks by stream sequence and answers every ack alike), so
the backends on one connection remember the newest delivery count of each item they hold.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from eventforge.testing.brokers import NatsServer
from eventforge.workqueue import Delivery, RetryPolicy, WorkQueue
from eventforge_nats.transport import NatsTransport

pytestmark = pytest.mark.broker

ACK_WAIT = 1.0
POLICY = RetryPolicy(max_attempts=5, initial_backoff=0.0, max_backoff=0.0, jitter=0.0)


@pytest.fixture
def two_consumers(nats_server: NatsServer) -> Iterator[tuple[WorkQueue, WorkQueue]]:
    """Two WorkQueues (two backends) on one queue and one connection."""
    transport = NatsTransport(nats_server.url, ack_wait=ACK_WAIT)
    name = f"stale-{os.urandom(4).hex()}"
    queues = (
        WorkQueue(name, transport=transport, retry=POLICY),
        WorkQueue(name, transport=transport, retry=POLICY),
    )
    yield queues
    for queue in queues:
        queue.close()
    transport.close()


def _redelivered(first: WorkQueue, second: WorkQueue) -> tuple[Delivery, Delivery]:
    first.put("slow job")
    late = first.get(timeout=10)
    assert late is not None  # ... and held past ack_wait: JetStream delivers it again
    again = second.get(timeout=10 + ACK_WAIT)
    assert again is not None
    assert again.message.id == late.message.id
    assert again.attempt == late.attempt + 1
    return late, again


def test_late_ack_after_the_redelivery_was_acked(
    two_consumers: tuple[WorkQueue, WorkQueue],
) -> None:
    first, second = two_consumers
    late, again = _redelivered(first, second)
    again.ack()
    late.ack()
    assert first.stats["acked"] + second.stats["acked"] == 1
    assert first.stats["stale_settles"] == 1
    assert second.join(10)


def test_late_nack_does_not_take_the_item_from_its_holder(
    two_consumers: tuple[WorkQueue, WorkQueue],
) -> None:
    first, second = two_consumers
    late, again = _redelivered(first, second)
    # Sent, it would make JetStream redeliver the item while `again` works on it.
    assert first.backend.nack(late) is False
    assert first.stats["retried"] == 0
    assert first.stats["stale_settles"] == 1
    assert first.get(timeout=0.5) is None
    again.ack()
    assert second.join(10)
    assert first.stats["acked"] + second.stats["acked"] == 1


def test_late_dead_letter_is_not_stored(two_consumers: tuple[WorkQueue, WorkQueue]) -> None:
    first, second = two_consumers
    late, again = _redelivered(first, second)
    late.nack(requeue=False)
    assert first.stats["dead_lettered"] == 0
    assert first.dead_letters() == []
    again.ack()
    assert second.join(10)
    assert first.dead_letters() == []
