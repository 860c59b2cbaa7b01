"""Objects that pick a transport themselves use the configured broker, never silently memory.

``EVENTFORGE_TRANSPORT`` names a real TCP server or a private redis-server here, and
``MessageQueue()`` / ``WorkQueue()`` created without a transport must deliver through it.
"""

from __future__ import annotations

import pytest
from eventforge import MessageQueue, WorkQueue
from eventforge.config import _settings as config
from eventforge.errors import UnsupportedCapabilityError
from eventforge.testing.brokers import RedisServer
from eventforge.testing.conformance import Collector
from eventforge.testing.waiting import wait_until


@pytest.fixture(autouse=True)
def unconfigured(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("EVENTFORGE_TRANSPORT", "EVENTFORGE_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(config, "_current", None)


def test_message_queue_without_a_transport_publishes_through_the_configured_tcp_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tcp = pytest.importorskip("eventforge_tcp.transport")
    server = tcp.TCPServerTransport("127.0.0.1", 0).start()
    try:
        got = Collector()
        server.subscribe("orders.new", got)
        monkeypatch.setenv("EVENTFORGE_TRANSPORT", f"tcp://127.0.0.1:{server.port}")
        with MessageQueue() as queue:
            assert isinstance(queue.transport, tcp.TCPClientTransport)
            queue.publish("orders.new", {"id": 1})
            assert got.wait_for_count(1, 10.0), "the configured broker never got the message"
        assert wait_until(lambda: server.stats()["connections"] == 0), "queue left its link open"
    finally:
        server.close()


def test_work_queue_without_a_transport_uses_the_configured_non_durable_transport_or_refuses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tcp = pytest.importorskip("eventforge_tcp.transport")
    server = tcp.TCPServerTransport("127.0.0.1", 0).start()
    try:
        monkeypatch.setenv("EVENTFORGE_TRANSPORT", f"tcp://127.0.0.1:{server.port}")
        with pytest.raises(UnsupportedCapabilityError):
            WorkQueue("jobs")  # TCP has no durable work queues: an error, not in-process items
        assert wait_until(lambda: server.stats()["connections"] == 0), "the refused queue leaked"
    finally:
        server.close()


@pytest.mark.broker
def test_work_queue_without_a_transport_stores_items_in_the_configured_redis(
    monkeypatch: pytest.MonkeyPatch, redis_server: RedisServer
) -> None:
    pytest.importorskip("eventforge_redis")
    import redis

    monkeypatch.setenv("EVENTFORGE_TRANSPORT", f"{redis_server.url}?key_prefix=default-wq")
    admin = redis.Redis(port=redis_server.port)
    clients = int(admin.info("clients")["connected_clients"])
    with WorkQueue("jobs") as jobs:
        jobs.put({"n": 1})
        assert admin.xlen("default-wq:wq:jobs") == 1, "the item did not reach the configured Redis"
    assert wait_until(lambda: int(admin.info("clients")["connected_clients"]) <= clients)
    admin.close()
