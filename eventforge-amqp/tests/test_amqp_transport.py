"""What the AMQP transport adds to the contract: routing reports, fast no-responders,
declaration conflicts, the async twins and unreadable messages."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import pytest
from eventforge import MessageQueue
from eventforge.errors import NoRespondersError, UnsupportedCapabilityError
from eventforge.message import Message
from eventforge.queue._routing import UnroutableError
from eventforge.service import Service
from eventforge.testing.conformance import Collector
from eventforge.testing.rabbit import RabbitServer
from eventforge.testing.waiting import wait_until
from eventforge_amqp import TopologyConflictError
from eventforge_amqp.transport import AmqpTransport

from .helpers import raw_channel

pytestmark = pytest.mark.broker

Make = Callable[..., AmqpTransport]


def topic(name: str) -> str:
    return f"t{os.urandom(4).hex()}.{name}"


def test_send_counted_reports_whether_any_queue_took_the_message(make_amqp: Make) -> None:
    t = make_amqp()
    name = topic("orders")
    assert t.send_counted(Message(name, 1)) == 0
    assert t.stats()["returned"] == 1
    got = Collector()
    t.subscribe(name, got)
    assert t.send_counted(Message(name, 2)) == 1
    assert got.wait_for_count(1, 5)
    assert got.payloads() == [2]


def test_unroutable_return_policy_raises_in_the_publisher(make_amqp: Make) -> None:
    queue = MessageQueue(transport=make_amqp(), unroutable="return")
    try:
        with pytest.raises(UnroutableError):
            queue.publish(topic("nobody.listens"), {"x": 1})
        assert queue.stats["unroutable"] == 1
    finally:
        queue.close()


def test_request_without_responders_raises_at_once(make_amqp: Make) -> None:
    t = make_amqp()
    with pytest.raises(NoRespondersError):
        t.request(Message(topic("rpc.none"), 1), timeout=30)
    assert t.stats()["pending_requests"] == 0


def test_request_gets_the_reply_through_direct_reply_to(make_amqp: Make) -> None:
    server, client = make_amqp(), make_amqp()
    name = topic("rpc.echo")

    def echo(message: Message) -> None:
        assert message.reply_to is not None
        assert message.reply_to.startswith("amq.rabbitmq.reply-to.")
        reply = Message(message.reply_to, {"echo": message.payload})
        reply.correlation_id = message.correlation_id or message.id
        server.send(reply)

    server.subscribe(name, echo)
    reply = client.request(Message(name, 41), timeout=10)
    assert reply is not None
    assert reply.payload == {"echo": 41}
    assert client.stats()["pending_requests"] == 0


def test_exchange_of_another_type_is_a_conflict_naming_what_differs(
    rabbit_server: RabbitServer,
) -> None:
    exchange = f"conflict-{os.urandom(3).hex()}"
    with raw_channel(rabbit_server.port) as channel:
        channel.exchange_declare(exchange, exchange_type="fanout", durable=True)
    with pytest.raises(TopologyConflictError) as info:
        AmqpTransport(rabbit_server.url, exchange=exchange)
    text = str(info.value)
    assert exchange in text
    assert "type" in text
    assert "delete" in text


def test_group_queue_of_other_arguments_is_a_conflict(
    make_amqp: Make, rabbit_server: RabbitServer
) -> None:
    t = make_amqp()
    group = f"g{os.urandom(3).hex()}"
    pattern = topic("jobs")
    with raw_channel(rabbit_server.port) as channel:
        channel.queue_declare(
            f"eventforge.group.{group}.{pattern}", durable=True, arguments={"x-max-length": 5}
        )
    with pytest.raises(TopologyConflictError, match="x-max-length"):
        t.subscribe(pattern, lambda m: None, group=group)
    # The transport keeps working after the refused declaration.
    got = Collector()
    t.subscribe(pattern, got)
    t.send(Message(pattern, "after"))
    assert got.wait_for_count(1, 5)


def test_group_with_a_wildcard_pattern_shares_one_validly_named_queue(make_amqp: Make) -> None:
    a, b, publisher = make_amqp(), make_amqp(), make_amqp()
    prefix, group = topic("jobs"), f"g{os.urandom(3).hex()}"
    got_a, got_b = Collector(), Collector()
    a.subscribe(f"{prefix}.*", got_a, group=group)
    b.subscribe(f"{prefix}.*", got_b, group=group)
    for n in range(6):
        publisher.send(Message(f"{prefix}.{n}", n))
    assert wait_until(lambda: len(got_a) + len(got_b) == 6, 10)
    assert sorted(got_a.payloads() + got_b.payloads()) == list(range(6))


def test_unreadable_foreign_body_is_counted_and_the_subscriber_goes_on(
    make_amqp: Make, rabbit_server: RabbitServer
) -> None:
    t = make_amqp()
    name = topic("mixed")
    got = Collector()
    t.subscribe(name, got)
    with raw_channel(rabbit_server.port) as channel:
        channel.basic_publish("eventforge", name, b"\xff not json {")
    t.send(Message(name, "fine"))
    assert got.wait_for_count(1, 5)
    assert got.payloads() == ["fine"]
    assert wait_until(lambda: t.stats()["decode_errors"] == 1, 5)


def test_connect_async_transport_awaits_on_the_running_loop(rabbit_server: RabbitServer) -> None:
    async def main() -> None:
        t = await AmqpTransport.connect_async(rabbit_server.url)
        try:
            name = topic("async")
            arrived: asyncio.Queue[Message] = asyncio.Queue()

            async def on_message(message: Message) -> None:
                await arrived.put(message)

            await t.subscribe_async(name, on_message)
            await t.send_async(Message(name, "hello"))
            message = await asyncio.wait_for(arrived.get(), 5)
            assert message.payload == "hello"
            assert await t.send_counted_async(Message(topic("nobody"), 1)) == 0
        finally:
            await t.close_async()

    asyncio.run(main())


def test_password_is_masked_in_repr_and_stats(make_amqp: Make) -> None:
    t = make_amqp()
    assert "guest:***@" in repr(t)
    assert "guest:guest" not in repr(t)
    assert "guest:guest" not in str(t.stats())


def test_schedules_are_refused_at_start_for_want_of_claims(make_amqp: Make) -> None:
    """RabbitMQ keeps no record of message ids, so no claim can be deduplicated: a service
    with a schedule refuses to start on AMQP instead of firing each tick in every worker."""
    transport = make_amqp()
    svc = Service("amqp-ticker", transport, probe_interval=None)
    svc.every(1, name="tick")(lambda: None)
    with pytest.raises(UnsupportedCapabilityError, match="'claims' capability"):
        svc.start()
    assert not svc.running
    with pytest.raises(UnsupportedCapabilityError, match="cannot claim a key"):
        transport.claim("schedule.amqp-ticker.tick.0", 60)


@pytest.mark.broker
def test_subscription_status_reports_the_depth_of_the_subscriptions_queue(
    make_amqp: Callable[..., AmqpTransport], rabbit_server: RabbitServer
) -> None:
    """The backlog a service's health shows for an AMQP subscription is the depth the broker
    reports for its queue (a passive declare on a channel of its own): 0 for a live idle
    subscription, the ready count for a queue holding messages, and ``None`` (not an error,
    not a broken transport) for a queue that is gone."""
    transport = make_amqp()
    got = Collector()
    topic = f"depth.{os.urandom(3).hex()}"
    sub_id = transport.subscribe(topic, got)
    assert transport.subscription_status(sub_id).backlog == 0
    parked = f"parked-{os.urandom(3).hex()}"
    with raw_channel(rabbit_server.port) as channel:
        channel.queue_declare(parked)
        for n in range(7):
            channel.basic_publish("", parked, str(n).encode())
    depth = transport._subs._depth  # type: ignore[attr-defined]
    assert wait_until(lambda: depth(parked) == 7, 10)
    assert depth(f"missing-{os.urandom(3).hex()}") is None
    transport.send(Message(topic, 1))  # the transport still works
    assert got.wait_for(lambda c: len(c.payloads()) >= 1, 10)
    assert transport.subscription_status(sub_id).present
