"""Fanout and headers exchanges next to the topic exchange: who receives what, the broker's
x-match all / any filtering (a message that does not match never reaches the client), and
declarations that conflict with what the broker has."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from eventforge import MessageQueue
from eventforge.errors import ConfigurationError
from eventforge.message import Message
from eventforge.testing.conformance import Collector
from eventforge.testing.rabbit import RabbitServer
from eventforge.testing.waiting import wait_until
from eventforge_amqp import TopologyConflictError
from eventforge_amqp.transport import AmqpTransport

from .helpers import raw_channel

pytestmark = pytest.mark.broker

Make = Callable[..., AmqpTransport]


def unique(name: str) -> str:
    return f"{name}-{os.urandom(4).hex()}"


def test_fanout_delivers_to_every_bound_subscriber_whatever_its_topic(make_amqp: Make) -> None:
    fanout = unique("fx")
    publisher = make_amqp(fanout_exchange=fanout, routes="alerts.**=fanout")
    first, second, grouped_a, grouped_b, on_topic = (
        make_amqp(fanout_exchange=fanout) for _ in range(5)
    )
    got_first, got_second, got_a, got_b, got_topic = (Collector() for _ in range(5))
    first.subscribe("alerts.disk", got_first, exchange_type="fanout")
    second.subscribe("something.else.entirely", got_second, exchange_type="fanout")
    group = unique("g")
    grouped_a.subscribe("alerts.**", got_a, group=group, exchange_type="fanout")
    grouped_b.subscribe("alerts.**", got_b, group=group, exchange_type="fanout")
    on_topic.subscribe("alerts.cpu", got_topic)  # the topic exchange: not where alerts go
    for n in range(4):
        publisher.send(Message("alerts.cpu", n))
    assert got_first.wait_for_count(4, 10)
    assert got_second.wait_for_count(4, 10)
    assert wait_until(lambda: len(got_a) + len(got_b) == 4, 10)
    assert got_first.payloads() == [0, 1, 2, 3]
    assert got_second.payloads() == [0, 1, 2, 3]
    assert sorted(got_a.payloads() + got_b.payloads()) == [0, 1, 2, 3]  # once per group
    assert [m.topic for m in got_second.messages] == ["alerts.cpu"] * 4
    assert len(got_topic) == 0


def test_exchange_type_option_makes_fanout_the_default_of_both_sides(make_amqp: Make) -> None:
    fanout = unique("fx")
    publisher = make_amqp(exchange_type="fanout", fanout_exchange=fanout)
    subscriber = make_amqp(exchange_type="fanout", fanout_exchange=fanout)
    got = Collector()
    subscriber.subscribe("only.this", got)
    assert publisher.send_counted(Message("any.topic.at.all", "x")) == 1
    assert got.wait_for_count(1, 10)
    assert got.payloads() == ["x"]


def headers_setup(make_amqp: Make) -> tuple[str, AmqpTransport]:
    headers = unique("hx")
    return headers, make_amqp(headers_exchange=headers, routes="reports.**=headers")


def test_headers_match_all_and_any_are_filtered_by_the_broker(make_amqp: Make) -> None:
    headers, publisher = headers_setup(make_amqp)
    all_side, any_side = make_amqp(headers_exchange=headers), make_amqp(headers_exchange=headers)
    got_all, got_any = Collector(), Collector()
    wanted = {"format": "pdf", "type": "report"}
    all_side.subscribe("reports.**", got_all, match=wanted, match_mode="all")
    any_side.subscribe("reports.**", got_any, match=wanted, match_mode="any")
    sent = [
        ("both", {"format": "pdf", "type": "report", "author": "ann"}),
        ("any only", {"format": "pdf", "type": "invoice"}),
        ("neither", {"format": "doc", "type": "memo"}),
        ("no headers", {}),
        ("last", {"format": "pdf", "type": "report"}),
    ]
    for payload, message_headers in sent:
        publisher.send(Message("reports.monthly", payload, message_headers))
    # One publisher, one queue each: once "last" is in, everything before it was routed.
    assert got_all.wait_for(lambda c: "last" in c.payloads(), 10)
    assert got_any.wait_for(lambda c: "last" in c.payloads(), 10)
    assert got_all.payloads() == ["both", "last"]
    assert got_any.payloads() == ["both", "any only", "last"]
    # What did not match never reached the client: the broker did the filtering.
    assert all_side.stats()["delivered"] == 2
    assert any_side.stats()["delivered"] == 3
    assert all_side.stats()["decode_errors"] == any_side.stats()["decode_errors"] == 0


def test_headers_match_compares_typed_values_and_x_prefixed_names(make_amqp: Make) -> None:
    headers, publisher = headers_setup(make_amqp)
    subscriber = make_amqp(headers_exchange=headers)
    got = Collector()
    subscriber.subscribe("reports.**", got, match={"priority": 1, "x-tenant": "acme"})
    sent = [
        ("string one", {"priority": "1", "x-tenant": "acme"}),
        ("other tenant", {"priority": 1, "x-tenant": "umbrella"}),
        ("true", {"priority": True, "x-tenant": "acme"}),  # equal to 1 in Python, not here
        ("float one", {"priority": 1.0, "x-tenant": "acme"}),
        ("match", {"priority": 1, "x-tenant": "acme"}),
    ]
    for payload, message_headers in sent:
        publisher.send(Message("reports.a", payload, message_headers))
    assert got.wait_for(lambda c: "match" in c.payloads(), 10)
    assert got.payloads() == ["float one", "match"]
    assert subscriber.stats()["delivered"] == 2


def test_message_queue_publish_reaches_a_headers_subscription(make_amqp: Make) -> None:
    headers, publisher = headers_setup(make_amqp)
    subscriber = make_amqp(headers_exchange=headers)
    got = Collector()
    subscriber.subscribe("reports.**", got, match={"format": "pdf"})
    queue = MessageQueue(transport=publisher)
    try:
        queue.publish("reports.weekly", "skipped", format="doc")
        queue.publish("reports.weekly", "kept", format="pdf")
        assert got.wait_for_count(1, 10)
    finally:
        queue.close()
    assert got.payloads() == ["kept"]
    assert got.messages[0].headers["format"] == "pdf"
    assert subscriber.stats()["delivered"] == 1


def test_message_queue_match_is_applied_by_the_broker_on_a_headers_route(make_amqp: Make) -> None:
    headers, publisher = headers_setup(make_amqp)
    # Both sides read the same routes, so both meet on the headers exchange.
    subscriber = MessageQueue(
        transport=make_amqp(headers_exchange=headers, routes="reports.**=headers")
    )
    queue = MessageQueue(transport=publisher)
    got: list[str] = []
    try:
        subscriber.subscribe("reports.**", lambda m: got.append(m.payload), match={"format": "pdf"})
        for payload, fmt in [("a", "doc"), ("b", "pdf"), ("c", "txt"), ("d", "pdf")]:
            queue.publish("reports.weekly", payload, format=fmt)
        assert wait_until(lambda: got == ["b", "d"], 10)
        stats = subscriber.stats
        # Only the matching messages left the broker; the queue's own filter saw nothing else.
        assert stats["transport"]["delivered"] == 2
        assert stats["filtered"] == 0
    finally:
        queue.close()
        subscriber.close()


def test_message_queue_match_on_a_topic_route_is_filtered_by_the_queue(make_amqp: Make) -> None:
    subscriber = MessageQueue(transport=make_amqp())
    queue = MessageQueue(transport=make_amqp())
    got: list[str] = []
    try:
        subscriber.subscribe("orders.*", lambda m: got.append(m.payload), match={"region": "eu"})
        for payload, region in [("a", "us"), ("b", "eu"), ("c", "eu")]:
            queue.publish("orders.created", payload, region=region)
        assert wait_until(lambda: got == ["b", "c"], 10)
        assert wait_until(lambda: subscriber.stats["filtered"] == 1, 10)
    finally:
        queue.close()
        subscriber.close()


def test_a_broker_exchange_is_used_without_being_declared(make_amqp: Make) -> None:
    tag = unique("tag")
    publisher = make_amqp(headers_exchange="amq.match", exchange_type="headers")
    subscriber = make_amqp(headers_exchange="amq.match")
    got = Collector()
    subscriber.subscribe("any", got, exchange_type="headers", match={"tag": tag})
    publisher.send(Message("any", "hello", {"tag": tag}))
    assert got.wait_for_count(1, 10)


def test_match_with_a_kind_other_than_headers_is_refused_with_what_to_do(make_amqp: Make) -> None:
    t = make_amqp(routes="reports.**=topic")
    with pytest.raises(ConfigurationError) as info:
        t.subscribe("reports.**", lambda m: None, match={"format": "pdf"})
    text = str(info.value)
    assert "the route reports.**=topic" in text
    assert "headers exchange" in text
    assert "MessageQueue.subscribe" in text
    with pytest.raises(ConfigurationError, match="exchange_type='fanout'"):
        t.subscribe("other", lambda m: None, exchange_type="fanout", match={"format": "pdf"})


def test_exchange_of_another_kind_is_a_conflict_and_the_transport_stays_usable(
    make_amqp: Make, rabbit_server: RabbitServer
) -> None:
    fanout = unique("fx")
    with raw_channel(rabbit_server.port) as channel:
        channel.exchange_declare(fanout, exchange_type="topic", durable=True)
    t = make_amqp(fanout_exchange=fanout)
    before = Collector()
    name = unique("steady")
    t.subscribe(name, before)
    with pytest.raises(TopologyConflictError) as info:
        t.subscribe("alerts.**", lambda m: None, exchange_type="fanout")
    text = str(info.value)
    assert f"exchange {fanout!r}" in text
    assert "'type' differs" in text
    assert "'topic'" in text
    assert "'fanout'" in text
    assert "fanout_exchange" in text
    assert "rabbitmqadmin delete exchange" in text
    # The refused declaration closed a channel of its own: the consumers never noticed.
    t.send(Message(name, "after"))
    assert before.wait_for_count(1, 5)
    stats = t.stats()
    assert stats["reconnects"] == 0
    assert stats["resubscribes"] == 0
    after = Collector()
    t.subscribe(unique("new"), after)
    t.subscribe("x", after, exchange_type="headers")
    assert t.send_counted(Message(name, "confirmed")) == 1


def test_publishing_to_an_exchange_of_another_kind_fails_at_connect(
    rabbit_server: RabbitServer,
) -> None:
    headers = unique("hx")
    with raw_channel(rabbit_server.port) as channel:
        channel.exchange_declare(headers, exchange_type="fanout", durable=True)
    with pytest.raises(TopologyConflictError, match="headers_exchange"):
        AmqpTransport(rabbit_server.url, headers_exchange=headers, routes="r.**=headers")
