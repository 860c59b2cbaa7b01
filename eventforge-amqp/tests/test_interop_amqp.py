"""Interop with plain AMQP clients: a JSON body from pika or aio-pika reaches an eventforge
subscriber; an eventforge message is readable by a plain consumer (envelope body, AMQP headers,
content type, message id)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable

import pika
import pytest
from eventforge.message import Message
from eventforge.testing.conformance import Collector
from eventforge.testing.rabbit import RabbitServer
from eventforge_amqp.transport import AmqpTransport

from .helpers import raw_channel

pytestmark = pytest.mark.broker

Make = Callable[..., AmqpTransport]


def topic(name: str) -> str:
    return f"i{os.urandom(4).hex()}.{name}"


def test_json_published_by_pika_reaches_a_subscriber(
    make_amqp: Make, rabbit_server: RabbitServer
) -> None:
    t = make_amqp()
    name = topic("from.pika")
    got = Collector()
    t.subscribe(name, got)
    with raw_channel(rabbit_server.port) as channel:
        channel.basic_publish(
            "eventforge",
            name,
            json.dumps({"order": 7}).encode(),
            pika.BasicProperties(
                content_type="application/json",
                message_id="pika-1",
                headers={"source": "pika", "retries": 2},
            ),
        )
    assert got.wait_for_count(1, 5)
    (message,) = got.messages
    assert message.topic == name
    assert message.payload == {"order": 7}
    assert message.id == "pika-1"
    assert message.headers == {"source": "pika", "retries": 2}


def test_json_published_by_aio_pika_reaches_a_subscriber(
    make_amqp: Make, rabbit_server: RabbitServer
) -> None:
    import aio_pika

    t = make_amqp()
    name = topic("from.aiopika")
    got = Collector()
    t.subscribe(name, got)

    async def publish() -> None:
        connection = await aio_pika.connect(rabbit_server.url)
        async with connection:
            channel = await connection.channel()
            exchange = await channel.get_exchange("eventforge")
            await exchange.publish(aio_pika.Message(body=b"[1, 2, 3]"), routing_key=name)

    asyncio.run(publish())
    assert got.wait_for_count(1, 5)
    assert got.payloads() == [[1, 2, 3]]


def test_plain_consumer_reads_the_envelope_headers_and_properties(
    make_amqp: Make, rabbit_server: RabbitServer
) -> None:
    t = make_amqp()
    name = topic("to.pika")
    with raw_channel(rabbit_server.port) as channel:
        queue = channel.queue_declare("", exclusive=True).method.queue
        channel.queue_bind(queue, "eventforge", name)
        sent = Message(name, {"order": 7}, {"tenant": "acme", "attempt": 3}, correlation_id="c-1")
        t.send(sent)
        t.flush()
        method, properties, body = None, None, None
        for method, properties, body in channel.consume(queue, inactivity_timeout=5):
            break
        assert method is not None, "the plain consumer got nothing"
        envelope = json.loads(body)
        assert envelope["payload"] == {"order": 7}
        assert envelope["topic"] == name
        assert properties.content_type == "application/json"
        assert properties.message_id == sent.id
        assert properties.correlation_id == "c-1"
        assert properties.type == "eventforge.envelope.v1"
        assert properties.headers == {"tenant": "acme", "attempt": 3}
