"""The TCP transport passes the Transport conformance suite, as clients and as the server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from eventforge.testing.conformance import TransportConformance, TransportFactory
from eventforge_tcp.transport import TCPClientTransport, TCPServerTransport


class TestTCPClientsConformance(TransportConformance):
    """Every transport handed out is a new client of one server started for the test."""

    @pytest.fixture
    def make_transport(self, server: TCPServerTransport) -> TransportFactory:
        return lambda: TCPClientTransport("127.0.0.1", server.port).connect()

    @pytest.fixture
    def make_independent_transport(self) -> Iterator[TransportFactory]:
        other = TCPServerTransport("127.0.0.1", 0).start()
        yield lambda: TCPClientTransport("127.0.0.1", other.port).connect()
        other.close()


class TestTCPServerAndClientsConformance(TransportConformance):
    """The first transport handed out is the server itself, the next ones its clients."""

    @pytest.fixture
    def make_transport(self) -> Iterator[TransportFactory]:
        srv = TCPServerTransport("127.0.0.1", 0)
        handed: list[bool] = []

        def make() -> TCPServerTransport | TCPClientTransport:
            if not handed:
                handed.append(True)
                return srv.start()
            return TCPClientTransport("127.0.0.1", srv.port).connect()

        yield make
        srv.close()
