"""Fixtures of the AMQP tests: one private RabbitMQ node per session (``rabbit_server``).

On Python 3.10, which eventforge-amqp refuses, only ``test_python_support.py`` runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import eventforge_amqp
import pytest
from eventforge.testing.rabbit import RabbitServer
from eventforge_amqp._python import PYTHON_SUPPORTED

collect_ignore = (
    []
    if PYTHON_SUPPORTED
    else [
        p.name
        for p in Path(__file__).parent.glob("test_*.py")
        if p.name != "test_python_support.py"
    ]
)


@pytest.fixture
def amqp_url(rabbit_server: RabbitServer) -> str:
    return rabbit_server.url


@pytest.fixture
def make_amqp(
    rabbit_server: RabbitServer,
) -> Iterator[Callable[..., eventforge_amqp.AmqpTransport]]:
    """Transports on the session's node; all closed after the test."""
    made: list[eventforge_amqp.AmqpTransport] = []

    def make(**options: object) -> eventforge_amqp.AmqpTransport:
        transport = eventforge_amqp.AmqpTransport(rabbit_server.url, **options)
        made.append(transport)
        return transport

    yield make
    for transport in made:
        transport.close()
