"""Closing gives back everything opening took: sockets, server-side clients, threads, fds.

Each test runs against a private redis-server, so ``INFO clients`` counts only the
connections made here.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
from eventforge import MessageQueue
from eventforge.message import Message
from eventforge.testing.brokers import RedisServer
from eventforge.testing.resources import PROC_FD_AVAILABLE, settled_to, snapshot
from eventforge.testing.waiting import wait_until
from eventforge.workqueue import RetryPolicy
from eventforge_redis import RedisTransport

pytestmark = [
    pytest.mark.broker,
    pytest.mark.skipif(not PROC_FD_AVAILABLE, reason="counts sockets through /proc/self/fd"),
]


def connected_clients(admin: redis.Redis) -> int:
    """Clients the server holds, not counting ``admin`` itself."""
    return int(admin.info("clients")["connected_clients"]) - 1


def test_close_releases_every_connection_while_the_transport_is_still_referenced(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    server = redis_server_factory()
    admin = redis.Redis(port=server.port)
    assert connected_clients(admin) == 0
    baseline = snapshot()
    kept = []
    for i in range(20):
        transport = RedisTransport.from_url(server.url)
        transport.subscribe("orders.*", lambda m: None)
        transport.subscribe("jobs", lambda m: None, group="workers")
        transport.send(Message(topic="orders.new", payload=i))
        assert transport.flush(5.0)
        backend = transport.work_queue_backend("tasks", RetryPolicy())
        backend.put(Message(topic="tasks", payload=i))
        transport.close()
        kept.append(transport)  # still referenced: garbage collection cannot close anything
    after = settled_to(baseline)
    assert after.sockets == baseline.sockets, f"before: {baseline}; after close: {after}"
    assert wait_until(lambda: connected_clients(admin) == 0), (
        f"the server still holds {connected_clients(admin)} clients of closed transports"
    )
    admin.close()


def test_500_queues_opened_and_closed_return_threads_fds_sockets_and_server_clients(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    server = redis_server_factory()
    admin = redis.Redis(port=server.port)
    # The first transport imports redis-py's lazily loaded parts; count from a warm process.
    RedisTransport.from_url(server.url).close()
    baseline = snapshot()
    for i in range(500):
        queue = MessageQueue(RedisTransport.from_url(server.url))
        queue.subscribe("orders.new", lambda m: None)
        queue.publish("orders.new", i)
        queue.close()
    after = settled_to(baseline)
    assert not after.exceeds(baseline), f"before: {baseline}; after 500 closes: {after}"
    assert wait_until(lambda: connected_clients(admin) == 0), (
        f"the server still holds {connected_clients(admin)} clients of closed transports"
    )
    admin.close()
