"""Fixtures of the AMQP tests: one private RabbitMQ node per session (``rabbit_server``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from eventforge.testing.rabbit import RabbitServer
from eventforge_amqp.transport import AmqpTransport


@pytest.fixture
def amqp_url(rabbit_server: RabbitServer) -> str:
    return rabbit_server.url


@pytest.fixture
def make_amqp(rabbit_server: RabbitServer) -> Iterator[Callable[..., AmqpTransport]]:
    """Transports on the session's node; all closed after the test."""
    made: list[AmqpTransport] = []

    def make(**options: object) -> AmqpTransport:
        transport = AmqpTransport(rabbit_server.url, **options)
        made.append(transport)
        return transport

    yield make
    for transport in made:
        transport.close()
