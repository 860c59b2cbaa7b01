"""The durable consumer of a JetStream work queue is kept present (private nats-servers).

When the streams or the consumer may have been lost (a reconnect to a server with an empty
store, a pull request reporting the consumer deleted), they are checked again, retried until
JetStream answers, and what had to be created again is counted in ``recreated``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from eventforge.message import Message
from eventforge.testing import wait_until
from eventforge.testing.brokers import BrokerUnavailable, NatsServer
from eventforge.workqueue import Delivery, RetryPolicy
from eventforge_nats.jetstream import JetStreamWorkQueue
from eventforge_nats.transport import NatsTransport

pytestmark = [pytest.mark.broker, pytest.mark.slow]

FAST = {"reconnect_time_wait": 0.1, "ping_interval": 1.0, "connect_timeout": 1.0}


def start_on(port: int, **options: Any) -> NatsServer:
    """A fresh nats-server (empty store) on ``port``, retried while the old one lets it go."""
    deadline = time.monotonic() + 20
    while True:
        server = NatsServer(port=port, **options)
        try:
            server.start()
            return server
        except BrokerUnavailable:
            server.cleanup()
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


def backend_of(transport: NatsTransport, name: str) -> JetStreamWorkQueue:
    backend = transport.work_queue_backend(name, RetryPolicy())
    assert isinstance(backend, JetStreamWorkQueue)
    return backend


def take_one(backend: JetStreamWorkQueue, timeout: float = 20.0) -> Delivery:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for delivery in backend.fetch(1, 1.0):
            delivery.ack()
            return delivery
    raise AssertionError(f"nothing fetched within {timeout}s")


def delete_consumer(server: NatsServer, backend: JetStreamWorkQueue) -> None:
    import nats

    async def main() -> None:
        nc = await nats.connect(server.url)
        try:
            await nc.jetstream().delete_consumer(backend.stream, "eventforge")
        finally:
            await nc.close()

    asyncio.run(main())


def test_streams_lost_in_a_restart_are_recreated_once_jetstream_answers(
    nats_server_factory: Any,
) -> None:
    first: NatsServer = nats_server_factory()
    transport = NatsTransport(first.url, **FAST)
    backend = backend_of(transport, "kept")
    backend.put(Message("kept", 0))
    assert take_one(backend).message.payload == 0
    supervisor = backend._consumer.supervisor
    first.stop()
    # The server comes back without JetStream: the check fails and is retried, not dropped.
    without_js = start_on(first.port, jetstream=False)
    try:
        assert wait_until(lambda: supervisor.stats()["failed_connect_attempts"] >= 2, 20)
        assert supervisor.state == "reconnecting"
    finally:
        without_js.cleanup()
    fresh = start_on(first.port)
    try:
        assert wait_until(lambda: backend.counters["recreated"] == 1, 30)
        assert wait_until(lambda: supervisor.state == "connected", 20)
        backend.put(Message("kept", 1))
        assert take_one(backend).message.payload == 1
    finally:
        transport.close()
        fresh.cleanup()


def test_a_consumer_deleted_under_a_waiting_fetch_is_recreated(nats_server: NatsServer) -> None:
    transport = NatsTransport(nats_server.url)
    backend = backend_of(transport, "deleted-under-fetch")
    fetched: list[list[Delivery]] = []
    waiting = threading.Thread(target=lambda: fetched.append(backend.fetch(1, 10.0)))
    waiting.start()
    time.sleep(0.5)  # the fetch is parked in a long poll

    delete_consumer(nats_server, backend)
    waiting.join(15)
    assert fetched == [[]]
    assert wait_until(lambda: backend.counters["recreated"] == 1, 20)
    backend.put(Message("deleted-under-fetch", "after"))
    assert take_one(backend).message.payload == "after"
    transport.close()


def test_a_consumer_deleted_while_nobody_fetched_is_recreated_by_the_next_fetches(
    nats_server: NatsServer,
) -> None:
    """A pull request to a missing consumer is refused (503, nats-server 2.10 and later) or
    never answered (older servers): either way the consumer is checked and created again, so
    fetching resumes without a restart."""
    transport = NatsTransport(nats_server.url)
    backend = backend_of(transport, "deleted-idle")
    delete_consumer(nats_server, backend)
    deadline = time.monotonic() + 30
    while backend.counters["recreated"] == 0:
        assert time.monotonic() < deadline, backend.counters
        assert backend.fetch(1, 0.5) == []
    backend.put(Message("deleted-idle", "after"))
    assert take_one(backend).message.payload == "after"
    transport.close()
