"""Fixtures shared by the NATS tests (the private nats-server fixtures come from eventforge-core)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from eventforge.testing.brokers import NatsServer
from eventforge_nats.transport import NatsTransport


@pytest.fixture
def make(nats_server: NatsServer) -> Iterator[Callable[..., NatsTransport]]:
    """Make transports to the session's nats-server; every one is closed after the test."""
    made: list[NatsTransport] = []

    def factory(**options: Any) -> NatsTransport:
        transport = NatsTransport(nats_server.url, **options)
        made.append(transport)
        return transport

    yield factory
    for transport in made:
        transport.close()


def _run_plain(url: str, coro_fn: Callable[[Any], Any]) -> Any:
    import nats

    async def main() -> Any:
        nc = await nats.connect(url)
        try:
            return await coro_fn(nc)
        finally:
            await nc.close()

    return asyncio.run(main())


@pytest.fixture
def run_plain() -> Callable[[str, Callable[[Any], Any]], Any]:
    """``run_plain(url, coro_fn)``: run ``coro_fn(nc)`` with a plain nats-py connection (an
    outsider's client) and return its result."""
    return _run_plain
