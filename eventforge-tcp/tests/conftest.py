"""Fixtures of the TCP transport tests: a server on a free loopback port per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from eventforge_tcp.transport import TCPClientTransport, TCPServerTransport


@pytest.fixture
def server() -> Iterator[TCPServerTransport]:
    srv = TCPServerTransport("127.0.0.1", 0).start()
    yield srv
    srv.close()


@pytest.fixture
def make_client(server: TCPServerTransport) -> Iterator[Callable[..., TCPClientTransport]]:
    made: list[TCPClientTransport] = []

    def make(**options: object) -> TCPClientTransport:
        client = TCPClientTransport("127.0.0.1", server.port, **options).connect()  # type: ignore[arg-type]
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()
