"""NatsTransport passes the Transport conformance suite against a private nats-server."""

from __future__ import annotations

import pytest
from eventforge.testing.brokers import NatsServer
from eventforge.testing.conformance import TransportConformance, TransportFactory
from eventforge_nats.transport import NatsTransport

pytestmark = pytest.mark.broker


class TestNatsTransportConformance(TransportConformance):
    """Every call of the factory opens a new connection to the session's nats-server."""

    @pytest.fixture
    def make_transport(self, nats_server: NatsServer) -> TransportFactory:
        return lambda: NatsTransport(nats_server.url)

    @pytest.fixture
    def make_independent_transport(self, nats_server_factory) -> TransportFactory:  # type: ignore[no-untyped-def]
        other = nats_server_factory(jetstream=False)
        return lambda: NatsTransport(other.url)


class TestNatsTransportLoopDeliveryConformance(TransportConformance):
    """``delivery="loop"``: callbacks run on the connection's event loop (no thread hop)."""

    @pytest.fixture
    def make_transport(self, nats_server: NatsServer) -> TransportFactory:
        return lambda: NatsTransport(nats_server.url, delivery="loop")
