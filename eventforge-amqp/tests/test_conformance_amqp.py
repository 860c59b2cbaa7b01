"""AmqpTransport passes the Transport, MessageQueue/RPC and events conformance suites against a
private RabbitMQ node."""

from __future__ import annotations

import os

import pytest
from eventforge.testing.conformance import TransportConformance, TransportFactory
from eventforge.testing.events_conformance import EventsConformance
from eventforge.testing.queue_conformance import QueueConformance
from eventforge.testing.rabbit import RabbitServer
from eventforge_amqp.transport import AmqpTransport

pytestmark = pytest.mark.broker


class TestAmqpTransportConformance(TransportConformance):
    """Every call of the factory opens a new connection to the session's node."""

    @pytest.fixture
    def make_transport(self, rabbit_server: RabbitServer) -> TransportFactory:
        return lambda: AmqpTransport(rabbit_server.url)

    @pytest.fixture
    def make_independent_transport(self, rabbit_server: RabbitServer) -> TransportFactory:
        """Another exchange on the same node is another space: nothing crosses over."""
        exchange = f"isolated-{os.urandom(4).hex()}"
        return lambda: AmqpTransport(rabbit_server.url, exchange=exchange)


class TestAmqpQueueConformance(QueueConformance):
    @pytest.fixture
    def make_transport(self, rabbit_server: RabbitServer) -> TransportFactory:
        return lambda: AmqpTransport(rabbit_server.url)


class TestAmqpEventsConformance(EventsConformance):
    @pytest.fixture
    def make_transport(self, rabbit_server: RabbitServer) -> TransportFactory:
        return lambda: AmqpTransport(rabbit_server.url)
