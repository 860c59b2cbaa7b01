"""A publish built by the transport's own marshaller is byte for byte what pamqp builds."""

from __future__ import annotations

from typing import Any

import pamqp.frame
import pytest
from eventforge_amqp._marshal import publish_bytes
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.header import ContentHeader


def pamqp_bytes(
    channel: int, max_body: int, exchange: str, key: str, body: bytes, props: Basic.Properties,
    mandatory: bool,
) -> bytes:  # fmt: skip
    frames: list[Any] = [
        Basic.Publish(exchange=exchange, routing_key=key, mandatory=mandatory),
        ContentHeader(properties=props, body_size=len(body)),
    ]
    frames += [ContentBody(body[i : i + max_body]) for i in range(0, len(body), max_body)]
    return b"".join(pamqp.frame.marshal(frame, channel) for frame in frames)


CASES = [
    Basic.Properties(
        content_type="application/json",
        delivery_mode=1,
        message_id="abc",
        correlation_id="c-1",
        reply_to="amq.rabbitmq.reply-to",
        message_type="eventforge.envelope.v1",
    ),
    Basic.Properties(
        content_type="application/json",
        delivery_mode=2,
        message_id="é-id",
        headers={"x-n": 1, "who": "alice", "ok": True, "ratio": 0.5},
    ),
    Basic.Properties(message_id="only", headers={}, reply_to=""),
    Basic.Properties(),
]


@pytest.mark.parametrize("props", CASES)
@pytest.mark.parametrize("body", [b"", b'{"n": 1}', bytes(range(256)) * 40])
@pytest.mark.parametrize("mandatory", [False, True])
def test_a_publish_is_the_bytes_pamqp_makes(
    props: Basic.Properties, body: bytes, mandatory: bool
) -> None:
    args = (5, 4096, "eventforge", "orders.created", body, props, mandatory)
    assert publish_bytes(*args) == pamqp_bytes(*args)


def test_a_property_it_does_not_write_is_left_to_pamqp() -> None:
    props = Basic.Properties(message_id="x", expiration="1000")
    assert publish_bytes(1, 4096, "", "k", b"{}", props, False) is None
