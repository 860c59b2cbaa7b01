"""MessageQueue and RPC semantics over TCP: the queue conformance suite, clients of one server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from eventforge.testing.conformance import TransportFactory
from eventforge.testing.queue_conformance import QueueConformance
from eventforge_tcp.transport import TCPClientTransport, TCPServerTransport


class TestTCPClientsQueueConformance(QueueConformance):
    """Every queue gets its own client of one server started for the test."""

    @pytest.fixture
    def make_transport(self, server: TCPServerTransport) -> TransportFactory:
        return lambda: TCPClientTransport("127.0.0.1", server.port).connect()


class TestTCPServerQueueConformance(QueueConformance):
    """The first queue sits on the server transport itself, the others on its clients."""

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
