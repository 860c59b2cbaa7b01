"""Raw AMQP access for the tests (pika), to look at and disturb the broker from outside."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pika
import pika.adapters.blocking_connection


@contextmanager
def raw_channel(port: int) -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
    """A pika channel on the node at ``port`` (guest/guest), closed afterwards."""
    params = pika.ConnectionParameters(
        host="127.0.0.1",
        port=port,
        credentials=pika.PlainCredentials("guest", "guest"),
        heartbeat=0,
    )
    connection = pika.BlockingConnection(params)
    try:
        yield connection.channel()
    finally:
        if connection.is_open:
            connection.close()


def ready_count(port: int, queue: str, arguments: dict[str, Any] | None = None) -> int:
    """Messages ready in ``queue`` (a passive declare)."""
    with raw_channel(port) as channel:
        ok = channel.queue_declare(queue, passive=True)
        return int(ok.method.message_count)
