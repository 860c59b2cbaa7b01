"""Subscriptions of a NatsTransport against a private nats-server: queue groups, coroutine
callbacks, malformed input, slow callbacks, and ``receive`` through a temporary subscription."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from eventforge.message import Message
from eventforge.testing import wait_until
from eventforge.testing.brokers import NatsServer
from eventforge_nats.transport import NatsTransport

pytestmark = pytest.mark.broker


# -- groups, coroutines, bad input ---------------------------------------------------------


def test_group_spans_transports(make: Callable[..., NatsTransport]) -> None:
    a, b, publisher = make(), make(), make()
    got: dict[str, list[Any]] = {"a": [], "b": []}
    a.subscribe("jobs.*", lambda m: got["a"].append(m.payload), group="workers")
    b.subscribe("jobs.*", lambda m: got["b"].append(m.payload), group="workers")
    for n in range(100):
        publisher.send(Message("jobs.x", n))
    publisher.flush()
    assert wait_until(lambda: len(got["a"]) + len(got["b"]) == 100)
    assert sorted(got["a"] + got["b"]) == list(range(100))
    assert got["a"]
    assert got["b"]


def test_coroutine_callback_runs_on_the_subscribing_loop(
    make: Callable[..., NatsTransport],
) -> None:
    transport = make()

    async def main() -> tuple[Any, bool]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[tuple[Any, bool]] = loop.create_future()

        async def handler(message: Message) -> None:
            if not done.done():
                done.set_result((message.payload, asyncio.get_running_loop() is loop))

        await transport.subscribe_async("coro.topic", handler)
        await transport.send_async(Message("coro.topic", "hi"))
        return await asyncio.wait_for(done, 10)

    assert asyncio.run(main()) == ("hi", True)


@pytest.mark.parametrize(
    "garbage",
    [
        b"not json",
        b"\xff\xfe\x00",
        b'{"version": 1, "topic": "bad.in", "payload": 1}',
        b'{"version": 99, "id": "x", "topic": "bad.in", "payload": 1}',
        b'{"version": 1, "id": 5, "topic": "bad.in", "payload": 1}',
        b"[1, 2, 3]",
        b"9" * 5000,
    ],
)
def test_malformed_envelopes_are_counted_and_subscriber_survives(
    make: Callable[..., NatsTransport], nats_server: NatsServer, run_plain: Any, garbage: bytes
) -> None:
    transport = make()
    got: list[Any] = []
    transport.subscribe("bad.in", lambda m: got.append(m.payload))

    async def publish(nc: Any) -> None:
        await nc.publish("bad.in", garbage)
        await nc.flush()

    run_plain(nats_server.url, publish)
    assert wait_until(lambda: transport.stats()["decode_errors"] == 1)
    transport.send(Message("bad.in", "valid"))
    assert wait_until(lambda: got == ["valid"])


def test_slow_subscriber_drops_are_counted(make: Callable[..., NatsTransport]) -> None:
    receiver, sender = make(max_pending=5), make()
    release = threading.Event()
    got: list[int] = []

    def slow(message: Message) -> None:
        release.wait(10)
        got.append(message.payload)

    receiver.subscribe("firehose", slow)
    for n in range(200):
        sender.send(Message("firehose", n))
    sender.flush()
    assert wait_until(lambda: receiver.stats()["delivered"] + receiver.stats()["dropped"] >= 150)
    release.set()
    assert wait_until(lambda: receiver.stats()["delivery_queue"] == 0)
    stats = receiver.stats()
    assert stats["dropped"] > 0
    assert len(got) + stats["dropped"] == 200, (len(got), stats)


# -- receive -------------------------------------------------------------------------------


@pytest.fixture
def repeating(make: Callable[..., NatsTransport]) -> Iterator[Callable[..., None]]:
    """``repeating(*topics)``: publish on each topic, in turn, every 20 ms until the test ends
    (a receive sees only what is published while it waits)."""
    sender = make()
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def start(*topics: str) -> None:
        def run() -> None:
            n = 0
            while not stop.wait(0.02):
                for topic in topics:
                    sender.send(Message(topic, n))
                n += 1

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        threads.append(thread)

    yield start
    stop.set()
    for thread in threads:
        thread.join(5)


def test_receive_returns_the_next_matching_message_and_leaves_nothing_subscribed(
    make: Callable[..., NatsTransport], repeating: Callable[..., None]
) -> None:
    transport = make()
    before = len(transport._conn.client._subs)
    repeating("orders.eu.paid", "orders.eu.failed")
    # '**' in the middle: the broad subject 'orders.>' is subscribed and every message filtered
    message = transport.receive("orders.**.failed", timeout=10)
    assert message is not None
    assert message.topic == "orders.eu.failed"
    assert transport.stats()["subscriptions"] == 0
    assert wait_until(lambda: len(transport._conn.client._subs) == before)


def test_receive_returns_none_when_nothing_comes(make: Callable[..., NatsTransport]) -> None:
    transport = make()
    assert transport.receive("nothing.here", timeout=0.2) is None
    assert transport.stats()["subscriptions"] == 0


def test_receive_async_on_another_loop_and_on_the_transports_own_loop(
    nats_server: NatsServer, make: Callable[..., NatsTransport], repeating: Callable[..., None]
) -> None:
    background = make()
    repeating("ticks.a")

    async def main() -> tuple[Any, Any]:
        first = await background.receive_async("ticks.*", timeout=10)
        bound = await NatsTransport.connect_async(nats_server.url)
        try:
            second = await bound.receive_async("ticks.a", timeout=10)
        finally:
            await bound.close_async()
        return first, second

    first, second = asyncio.run(asyncio.wait_for(main(), 30))
    assert first is not None
    assert first.topic == "ticks.a"
    assert second is not None
    assert second.topic == "ticks.a"
