"""The work-queue conformance suite over Redis Streams, and the same user code on Redis."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from eventforge.testing.brokers import RedisServer
from eventforge.testing.workqueue_conformance import BackendFactory, WorkQueueConformance
from eventforge.workqueue import RetryPolicy, WorkQueueBackend

pytestmark = pytest.mark.broker

CLAIM_IDLE = 0.5


class TestRedisWorkQueueConformance(WorkQueueConformance):
    visibility_timeout = CLAIM_IDLE

    @pytest.fixture
    def make_backend(self, redis_server: RedisServer) -> Iterator[BackendFactory]:
        from eventforge_redis import RedisTransport

        transport = RedisTransport.from_url(redis_server.url, claim_idle=CLAIM_IDLE, block=0.2)

        def make(name: str, retry: RetryPolicy) -> WorkQueueBackend:
            return transport.work_queue_backend(name, retry)

        yield make
        transport.close()


def test_same_user_code_runs_durably_by_changing_the_transport(
    make_redis: Callable[..., object],
) -> None:
    """``WorkQueue(name, transport=...)`` picks the Redis Streams backend and keeps items in Redis."""
    from eventforge.workqueue import WorkQueue

    transport = make_redis()
    queue = WorkQueue("orders-durable-check", transport=transport)  # type: ignore[arg-type]
    try:
        assert queue.backend.durable
        message_id = queue.put({"order": 1})
        # Another process (here: another client) sees the stored item.
        other = make_redis()
        assert other.client.xlen("eventforge:wq:orders-durable-check") == 1  # type: ignore[attr-defined]
        delivery = queue.get(timeout=5)
        assert delivery is not None
        assert delivery.message.id == message_id
        delivery.ack()
        assert queue.join(5)
    finally:
        queue.close()
