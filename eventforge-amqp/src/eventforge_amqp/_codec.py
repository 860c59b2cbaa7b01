"""Messages as AMQP: the body is eventforge's JSON envelope; the properties repeat what a plain
AMQP consumer needs (message id, correlation id, reply-to, timestamp, content type, headers).

A delivery whose ``type`` property is :data:`ENVELOPE_TYPE` is decoded as an envelope. Anything
else is a *foreign* message (published by aio-pika, pika, another framework): its body must be
JSON; it becomes a message on the routing key with the AMQP headers as headers and the AMQP
message id (when set) as id. A body that is neither raises :class:`ForeignBodyError`; the
transport counts, logs and drops (pub/sub) or dead-letters (work queues) it.
"""

from __future__ import annotations

import time
from typing import Any

import pydantic_core
from eventforge.errors import ProtocolError
from eventforge.message import Message, new_id
from eventforge.topics import validate_topic
from eventforge.wire import WireCodec
from pamqp.commands import Basic

__all__ = ["ENVELOPE_TYPE", "ForeignBodyError", "decode", "decode_delivered", "encode"]

ENVELOPE_TYPE = "eventforge.envelope.v1"
JSON = "application/json"
_HEADER_TYPES = (str, int, float, bool)


class ForeignBodyError(ProtocolError):
    """A delivery that is neither an eventforge envelope nor a JSON body."""


def encode(
    codec: WireCodec, message: Message, *, persistent: bool = False, reply_to: str | None = None
) -> tuple[bytes, Basic.Properties]:
    """The body and properties of ``message`` (``reply_to`` overrides the AMQP property)."""
    body = codec.encode(message)
    properties = Basic.Properties(
        content_type=JSON,
        delivery_mode=2 if persistent else 1,
        message_id=message.id,
        correlation_id=message.correlation_id,
        reply_to=reply_to if reply_to is not None else message.reply_to,
        timestamp=None,
        message_type=ENVELOPE_TYPE,
        headers=dict(message.headers) if message.headers else None,
    )
    return body, properties


def decode(
    codec: WireCodec, body: bytes, properties: Basic.Properties, routing_key: str
) -> Message:
    """The message of a delivery; raises :class:`ProtocolError` (or a subclass) when invalid."""
    if properties.message_type == ENVELOPE_TYPE:
        message = codec.decode(body)
    else:
        message = _foreign(body, properties, routing_key, codec.max_size)
    if properties.reply_to:
        # The broker rewrites amq.rabbitmq.reply-to into the caller's own address.
        message.reply_to = properties.reply_to
    return message


def decode_delivered(codec: WireCodec, delivered: Any) -> Message:
    """:func:`decode` of an aiormq ``DeliveredMessage`` (its topic: the routing key)."""
    return decode(codec, delivered.body, delivered.header.properties, delivered.routing_key or "")


def _foreign(body: bytes, properties: Basic.Properties, routing_key: str, max_size: int) -> Message:
    content_type = properties.content_type
    if content_type and not content_type.split(";")[0].strip().endswith("json"):
        raise ForeignBodyError(
            f"a message on routing key {routing_key!r} has content type {content_type!r}; "
            "eventforge reads JSON bodies only (publish with content_type='application/json')"
        )
    if len(body) > max_size:
        raise ForeignBodyError(
            f"a message on routing key {routing_key!r} has {len(body)} bytes, more than "
            f"max_size={max_size}"
        )
    try:
        payload = pydantic_core.from_json(body)
    except ValueError as exc:
        raise ForeignBodyError(
            f"a message on routing key {routing_key!r} is not valid JSON ({exc}); publish JSON "
            "bodies or eventforge envelopes"
        ) from None
    try:
        topic = validate_topic(routing_key)
    except (TypeError, ValueError) as exc:
        raise ForeignBodyError(f"routing key {routing_key!r} is not a valid topic: {exc}") from None
    headers: dict[str, Any] = {}
    for key, value in (properties.headers or {}).items():
        if isinstance(value, _HEADER_TYPES):
            headers[key] = value
        elif isinstance(value, bytes):
            headers[key] = value.decode("utf-8", "replace")
    stamp = properties.timestamp
    timestamp = stamp.timestamp() if stamp is not None else time.time()
    return Message(
        topic,
        payload,
        headers,
        id=properties.message_id or new_id(),
        timestamp=timestamp,
        reply_to=properties.reply_to,
        correlation_id=properties.correlation_id,
    )
