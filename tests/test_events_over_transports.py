"""Typed events, middleware, header routing, caches, typed RPC and rendezvous over TCP, Redis, NATS.

The events conformance suite runs once per network transport with real peers: every queue is a
client of a TCP server on a free loopback port, or of the session's private redis-server /
nats-server. Two more tests start worker processes (the "controller waits for three workers"
rendezvous) and check how an unroutable policy is reported. A transport whose plugin is not
installed is skipped.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import pytest
from eventforge import MessageQueue
from eventforge.config import connect
from eventforge.queue.cache import WaitMode
from eventforge.testing.conformance import TransportFactory
from eventforge.testing.events_conformance import EventsConformance

TIMEOUT = 10.0


class TestTCPEventsConformance(EventsConformance):
    """Every queue is a client of one TCP server started for the test."""

    @pytest.fixture
    def make_transport(self) -> Iterator[TransportFactory]:
        tcp = pytest.importorskip("eventforge_tcp.transport")
        server = tcp.TCPServerTransport("127.0.0.1", 0).start()
        yield lambda: tcp.TCPClientTransport("127.0.0.1", server.port).connect()
        server.close()


class TestRedisEventsConformance(EventsConformance):
    """Every queue has its own connection to the session's redis-server."""

    @pytest.fixture
    def make_transport(self, request: pytest.FixtureRequest) -> TransportFactory:
        redis = pytest.importorskip("eventforge_redis")
        url = request.getfixturevalue("redis_server").url
        return lambda: redis.RedisTransport.from_url(url)


class TestNatsEventsConformance(EventsConformance):
    """Every queue has its own connection to the session's nats-server."""

    @pytest.fixture
    def make_transport(self, request: pytest.FixtureRequest) -> TransportFactory:
        nats = pytest.importorskip("eventforge_nats.transport")
        url = request.getfixturevalue("nats_server").url
        return lambda: nats.NatsTransport(url)


class Space:
    """Queues of one transport that reach each other, and the URL a worker process uses."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        self.queues: list[MessageQueue] = []

    def queue(self, **options: Any) -> MessageQueue:
        q = MessageQueue(connect(self.url), **options)
        self.queues.append(q)
        return q

    def topic(self, suffix: str) -> str:
        return f"{self.prefix}.{suffix}"

    def close(self) -> None:
        for q in reversed(self.queues):
            q.close()


@pytest.fixture(params=["tcp", "redis", "nats"])
def space(request: pytest.FixtureRequest) -> Iterator[Space]:
    prefix = f"xt{os.urandom(4).hex()}"
    kind = request.param
    server: Any = None
    if kind == "tcp":
        tcp = pytest.importorskip("eventforge_tcp.transport")
        server = tcp.TCPServerTransport("127.0.0.1", 0).start()
        url = f"tcp://127.0.0.1:{server.port}"
    elif kind == "redis":
        pytest.importorskip("eventforge_redis")
        url = request.getfixturevalue("redis_server").url
    else:
        pytest.importorskip("eventforge_nats")
        url = request.getfixturevalue("nats_server").url
    made = Space(url, prefix)
    yield made
    made.close()
    if server is not None:
        server.close()


WORKER = textwrap.dedent(
    """
    import sys, threading
    from eventforge import MessageQueue
    from eventforge.config import connect

    url, prefix, index = sys.argv[1], sys.argv[2], int(sys.argv[3])
    queue = MessageQueue(connect(url))
    stop = threading.Event()

    def on_start(message):
        queue.publish(f"{prefix}.done", {"worker": index, "suite": message.payload["suite"]})

    queue.subscribe(f"{prefix}.start", on_start, threaded=True)
    queue.subscribe(f"{prefix}.stop", lambda message: stop.set())
    queue.announce_ready(["worker"], space=prefix)
    stop.wait(60)
    queue.close()
    """
)


def test_controller_waits_for_three_worker_processes(space: Space) -> None:
    controller = space.queue()
    done = controller.cache(space.topic("done"))
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, space.url, space.prefix, str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for i in range(3)
    ]
    try:
        assert controller.wait_until_ready({"worker": 3}, timeout=60, space=space.prefix)
        targets = [lambda m, i=i: m.payload["worker"] == i for i in range(3)]
        got: dict[int, Any] = {}
        deadline = time.monotonic() + TIMEOUT
        while len(got) < 3 and time.monotonic() < deadline:
            controller.publish(space.topic("start"), {"suite": "regression"})
            got = done.wait_for_many(targets, WaitMode.ALL_IN_RANDOM_ORDER, timeout=0.5)
            if len(got) < 3:
                done.drain()
        assert sorted(m.payload["worker"] for m in got.values()) == [0, 1, 2]
        assert all(m.payload["suite"] == "regression" for m in got.values())
        controller.publish(space.topic("stop"), None)
        for proc in workers:
            out, _ = proc.communicate(timeout=30)
            assert proc.returncode == 0, out.decode(errors="replace")
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        done.close()


def test_unroutable_policy_is_reported_where_the_transport_cannot_count(
    space: Space, caplog: pytest.LogCaptureFixture
) -> None:
    """NATS does not count the receivers of a publish: the queue says so, and publishing to
    nobody neither raises nor counts, instead of pretending."""
    import logging

    if space.url.startswith("redis"):
        pytest.skip(
            "Redis counts receivers: see test_unroutable_policies_apply_where_receivers_are_counted"
        )
    if space.url.startswith("tcp"):
        pytest.skip(
            "TCP counts receivers: see test_unroutable_policies_apply_where_receivers_are_counted"
        )
    with caplog.at_level(logging.WARNING, logger="eventforge.routing"):
        queue = space.queue(unroutable="return")
    assert "cannot tell whether anyone received a message" in caplog.text
    queue.publish(space.topic("nobody.listens"), 1)
    assert queue.stats["unroutable"] == 0
    assert queue.stats["published"] == 1


@contextlib.contextmanager
def _counting_space(kind: str, request: pytest.FixtureRequest) -> Iterator[Space]:
    """A space on a transport that counts receivers: a Redis server, or a TCP hub."""
    prefix = f"xu{os.urandom(4).hex()}"
    if kind == "redis":
        pytest.importorskip("eventforge_redis")
        space = Space(request.getfixturevalue("redis_server").url, prefix)
        try:
            yield space
        finally:
            space.close()
        return
    tcp = pytest.importorskip("eventforge_tcp.transport")
    server = tcp.TCPServerTransport("127.0.0.1", 0).start()
    space = Space(f"tcp://127.0.0.1:{server.port}", prefix)
    try:
        yield space
    finally:
        space.close()
        server.close()


@pytest.mark.parametrize("kind", ["redis", "tcp"])
def test_unroutable_policies_apply_where_receivers_are_counted(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """Over Redis and TCP (queues made by connect(url)): drop counts, return raises
    UnroutableError, reroute delivers on the alternate topic, and a message a plain subscriber
    or a group member takes is not unroutable."""
    from eventforge.queue._routing import REROUTED_FROM_HEADER, UnroutableError

    with _counting_space(kind, request) as space:
        parking, nobody = space.topic("parking"), space.topic("nobody.listens")
        listener = space.queue()
        dropping = space.queue(unroutable="drop")
        strict = space.queue(unroutable="return")
        rerouting = space.queue(unroutable=f"reroute:{parking}")

        dropping.publish(nobody, 1)
        with pytest.raises(UnroutableError):
            strict.publish(nobody, 2)
        parked: list[Any] = []
        listener.subscribe(parking, lambda m: parked.append(m))
        rerouting.publish(nobody, 3)

        taken: list[Any] = []
        listener.subscribe(space.topic("plain"), lambda m: taken.append(m.payload))
        listener.subscribe(space.topic("grouped"), lambda m: taken.append(m.payload), group="g")
        for queue in (dropping, strict, rerouting):
            queue.publish(space.topic("plain"), "plain")
            queue.publish(space.topic("grouped"), "grouped")
        deadline = time.monotonic() + TIMEOUT
        while (len(parked) < 1 or len(taken) < 6) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [(m.payload, m.headers[REROUTED_FROM_HEADER]) for m in parked] == [(3, nobody)]
        assert sorted(taken) == ["grouped"] * 3 + ["plain"] * 3
        assert [q.stats["unroutable"] for q in (dropping, strict, rerouting)] == [1, 1, 1]


@pytest.mark.parametrize("broker", ["redis", "nats"])
def test_durable_events_on_the_broker_work_queue(
    broker: str, request: pytest.FixtureRequest
) -> None:
    """Events put on a Redis Streams / JetStream work queue reach a typed listener; an invalid
    one is dead-lettered on the broker at once."""
    from eventforge.events import EVENT_HEADER, event, event_listener
    from eventforge.workqueue._events import consume_events, event_work_queue, put_event
    from pydantic import BaseModel

    pytest.importorskip(f"eventforge_{broker}")
    url = request.getfixturevalue(f"{broker}_server").url
    name = f"durable.t{os.urandom(4).hex()}"

    @event(name)
    class Order(BaseModel):
        order_id: int

    got: list[int] = []

    @event_listener(Order)
    class Billing:
        async def on(self, event: Order) -> None:
            got.append(event.order_id)

    transport = connect(url)
    orders = event_work_queue(Order, transport)
    try:
        put_event(orders, Order(order_id=1))
        orders.put({"order_id": "x"}, **{EVENT_HEADER: name})
        put_event(orders, Order(order_id=2))
        with consume_events(orders, Billing()) as consumer:
            deadline = time.monotonic() + TIMEOUT
            while not (consumer.handled == 2 and consumer.rejected == 1):
                assert time.monotonic() < deadline, (consumer.handled, consumer.rejected)
                time.sleep(0.01)
        assert sorted(got) == [1, 2]
        assert [d.message.payload for d in orders.dead_letters()] == [{"order_id": "x"}]
    finally:
        orders.close()
        transport.close()
