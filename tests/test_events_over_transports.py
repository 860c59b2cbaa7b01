"""Typed events, middleware, header routing, caches, typed RPC and rendezvous over TCP, Redis, NATS.

Every test runs once per network transport, with real peers: a TCP server on a free loopback
port (every queue is a client of it), or the session's private redis-server / nats-server.
The rendezvous test starts three worker processes. A transport whose plugin is not installed
is skipped.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from eventforge import MessageQueue, RPCClient, RPCServer
from eventforge.cache import WaitMode
from eventforge.config import connect
from eventforge.events import event, event_listener
from eventforge.message import Message
from eventforge.middleware import ContextHeader
from pydantic import BaseModel

TIMEOUT = 10.0


@event("xt.order.created")
class OrderCreated(BaseModel):
    order_id: int
    total: float


@event("xt.hello")
@dataclass
class Hello:
    world: str


@dataclass
class Total:
    total: float


tenant: contextvars.ContextVar[str] = contextvars.ContextVar("xt_tenant")


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


def wait_until(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            return predicate()
        pause.wait(0.01)
    return True


def make_live(publisher: MessageQueue, *subscribers: MessageQueue, space: Space) -> None:
    """Subscribe a probe on each subscriber after its real handlers, and publish probes until
    every one saw one: the subscriptions made before the probe are live at the broker."""
    seen: list[set[int]] = [set() for _ in subscribers]
    topic = space.topic("probe")
    ids = []
    for n, queue in enumerate(subscribers):
        ids.append(queue.subscribe(topic, lambda m, n=n: seen[n].add(1)))
    deadline = time.monotonic() + TIMEOUT
    while not all(seen):
        assert time.monotonic() < deadline, "subscriptions never became live"
        publisher.publish(topic, None)
        wait_until(lambda: all(seen), 0.05)
    for queue, handler_id in zip(subscribers, ids, strict=True):
        queue.unsubscribe(handler_id)


@pytest.mark.parametrize("use_async", [False, True])
def test_typed_event_round_trip_with_a_validation_failure(space: Space, use_async: bool) -> None:
    errors: list[BaseException] = []
    sender = space.queue()
    receiver = space.queue(error_hook=lambda exc, msg, h: errors.append(exc))
    got: list[Any] = []
    if use_async:

        async def on_order(evt: OrderCreated) -> None:
            got.append(evt)

        async def on_hello(evt: Hello) -> None:
            got.append(evt)
    else:

        def on_order(evt: OrderCreated) -> None:  # type: ignore[misc]
            got.append(evt)

        def on_hello(evt: Hello) -> None:  # type: ignore[misc]
            got.append(evt)

    receiver.subscribe(OrderCreated, on_order)
    receiver.subscribe(Hello, on_hello)
    make_live(sender, receiver, space=space)
    sender.publish("xt.order.created", {"order_id": "not a number", "total": 1})
    sender.publish(OrderCreated(order_id=1, total=9.5))
    sender.publish(Hello("world"))
    assert wait_until(lambda: len(got) == 2), got
    assert sorted(map(repr, got)) == sorted(
        [repr(OrderCreated(order_id=1, total=9.5)), repr(Hello("world"))]
    )
    assert type(got[0]) in (OrderCreated, Hello)
    assert receiver.stats["rejected"] == 1
    assert len(errors) == 1


def test_listeners_share_work_across_queues_per_process_ones_get_all(space: Space) -> None:
    shared: list[tuple[str, int]] = []
    every: list[tuple[str, int]] = []

    @event_listener(OrderCreated, name=f"billing-{space.prefix}")
    class Billing:
        def __init__(self, tag: str) -> None:
            self.tag = tag

        def on(self, event: OrderCreated) -> None:
            shared.append((self.tag, event.order_id))

    @event_listener(OrderCreated, per_process=True)
    class Audit:
        def __init__(self, tag: str) -> None:
            self.tag = tag

        async def on(self, event: OrderCreated) -> None:
            every.append((self.tag, event.order_id))

    sender = space.queue()
    a, b = space.queue(), space.queue()
    for tag, queue in (("a", a), ("b", b)):
        queue.listen(Billing(tag))
        queue.listen(Audit(tag))
    make_live(sender, a, b, space=space)
    for n in range(20):
        sender.publish(OrderCreated(order_id=n, total=1.0))
    assert wait_until(lambda: len(shared) >= 20 and len(every) >= 40)
    assert sorted(n for _, n in shared) == list(range(20))  # each event once in the group
    assert {tag for tag, _ in shared} == {"a", "b"}
    assert sorted(every) == sorted((t, n) for t in "ab" for n in range(20))


@pytest.mark.parametrize("use_async", [False, True])
def test_middleware_carries_a_tenant_header_to_the_handler(space: Space, use_async: bool) -> None:
    sender = space.queue(middleware=[ContextHeader("tenant", tenant)])
    receiver = space.queue(middleware=[ContextHeader("tenant", tenant)])
    seen: list[str | None] = []
    if use_async:

        async def handler(message: Message) -> None:
            seen.append(tenant.get(None))
    else:

        def handler(message: Message) -> None:  # type: ignore[misc]
            seen.append(tenant.get(None))

    receiver.subscribe(space.topic("jobs"), handler)
    make_live(sender, receiver, space=space)

    def publish() -> None:
        tenant.set("acme")
        sender.publish(space.topic("jobs"), {"n": 1})

    contextvars.copy_context().run(publish)
    assert wait_until(lambda: seen == ["acme"])


def test_header_match_all_and_any(space: Space) -> None:
    sender = space.queue()
    receiver = space.queue()
    all_of: list[int] = []
    any_of: list[int] = []
    wanted = {"format": "pdf", "type": "report"}
    receiver.subscribe(space.topic("docs.*"), lambda m: all_of.append(m.payload), match=wanted)

    async def on_any(message: Message) -> None:
        any_of.append(message.payload)

    receiver.subscribe(space.topic("docs.*"), on_any, match=wanted, match_mode="any")
    make_live(sender, receiver, space=space)
    sender.publish(space.topic("docs.a"), 1, format="pdf", type="report", author="john")
    sender.publish(space.topic("docs.b"), 2, format="pdf", type="invoice")
    sender.publish(space.topic("docs.c"), 3, format="html")
    sender.publish(space.topic("docs.d"), 4, format="pdf", type="report")
    assert wait_until(lambda: len(all_of) == 2 and len(any_of) == 3)
    assert sorted(all_of) == [1, 4]
    assert sorted(any_of) == [1, 2, 4]
    assert receiver.stats["filtered"] == 3


def test_cache_wait_for_many_and_rpc_by_correlation(space: Space) -> None:
    server_queue = space.queue()
    client_queue = space.queue()

    def answer(message: Message) -> None:
        server_queue.publish(
            message.payload["reply_to"],
            {"result": message.payload["n"] * 2},
            correlation_id=message.headers["correlation_id"],
        )

    server_queue.subscribe(space.topic("rpc.requests"), answer, threaded=True)
    replies = client_queue.cache(space.topic("rpc.replies"))
    make_live(client_queue, server_queue, client_queue, space=space)
    for n in range(3):
        client_queue.publish(
            space.topic("rpc.requests"),
            {"n": n, "reply_to": space.topic("rpc.replies")},
            correlation_id=f"c{n}",
        )
    reply = replies.wait_for_one(lambda m: m.headers.get("correlation_id") == "c1", TIMEOUT)
    assert reply is not None
    assert reply.payload == {"result": 2}
    rest = replies.wait_for_many(
        [{"result": 0}, {"result": 4}], WaitMode.ALL_IN_RANDOM_ORDER, TIMEOUT
    )
    assert len(rest) == 2
    replies.close()


def test_typed_rpc_round_trip(space: Space) -> None:
    server_queue = space.queue()
    client_queue = space.queue()
    server = RPCServer(server_queue, service_name=f"shop-{space.prefix}")

    @server.register()
    def total(order: OrderCreated) -> Total:
        assert isinstance(order, OrderCreated)
        return Total(total=order.total * 2)

    server.serve(blocking=False)
    try:
        client = RPCClient(client_queue, service_name=f"shop-{space.prefix}", timeout=2)
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                result = client.call_typed(Total, "total", OrderCreated(order_id=1, total=2.5))
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
        assert result == Total(total=5.0)
        assert type(result) is Total

        async def main() -> Total:
            return await client.call_typed_async(Total, "total", {"order_id": 2, "total": 1})

        assert asyncio.run(main()) == Total(total=2.0)
    finally:
        server.stop()


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
    """TCP, Redis and NATS do not count receivers (yet): the queue says so, and publishing
    to nobody neither raises nor counts, instead of pretending."""
    import logging

    with caplog.at_level(logging.WARNING, logger="eventforge.routing"):
        queue = space.queue(unroutable="return")
    assert "cannot tell whether anyone received a message" in caplog.text
    queue.publish(space.topic("nobody.listens"), 1)
    assert queue.stats["unroutable"] == 0
    assert queue.stats["published"] == 1
