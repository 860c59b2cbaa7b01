"""pytest fixtures for private brokers (redis-server, nats-server, a RabbitMQ node), loaded through eventforge-core's ``pytest11`` entry point.

The entry point carries this module's name, so a conftest that lists it in ``pytest_plugins``
(the way to opt in before the entry point existed) still loads it once;
``-p no:eventforge.testing.pytest_plugin`` disables it.

``redis_server`` / ``nats_server`` are shared by a whole session; ``redis_server_factory`` /
``nats_server_factory`` make private ones for fault tests (killed, paused, restarted). When the
binary is missing the test is skipped with the reason, unless ``EVENTFORGE_REQUIRE_BROKERS=1``
(CI sets it): then it fails.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from eventforge.testing.brokers import BrokerProcess, BrokerUnavailable, NatsServer, RedisServer
from eventforge.testing.rabbit import RabbitServer

__all__ = [
    "nats_server",
    "nats_server_factory",
    "rabbit_server",
    "rabbit_server_factory",
    "redis_server",
    "redis_server_factory",
    "require_brokers",
]


B = TypeVar("B", bound=BrokerProcess)


def require_brokers() -> bool:
    """Tell whether a missing broker must fail the run instead of skipping."""
    return os.environ.get("EVENTFORGE_REQUIRE_BROKERS", "").strip() in ("1", "true", "yes")


def _unavailable(exc: Exception) -> None:
    if require_brokers():
        pytest.fail(f"broker required (EVENTFORGE_REQUIRE_BROKERS=1) but unavailable: {exc}")
    pytest.skip(f"broker unavailable: {exc}")


def _started(server_type: type[B], **kwargs: Any) -> B:
    try:
        server = server_type(**kwargs)
        server.start()
    except BrokerUnavailable as exc:
        _unavailable(exc)
        raise
    return server


def _factory(server_type: type[B]) -> Iterator[Callable[..., B]]:
    servers: list[B] = []

    def make(**kwargs: Any) -> B:
        server = _started(server_type, **kwargs)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.cleanup()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server for the whole session (no persistence)."""
    server = _started(RedisServer)
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    """A private nats-server with JetStream for the whole session."""
    server = _started(NatsServer)
    yield server
    server.cleanup()


@pytest.fixture
def redis_server_factory() -> Iterator[Callable[..., RedisServer]]:
    """Start private redis-servers (keyword arguments as :class:`RedisServer`); all stopped after."""
    yield from _factory(RedisServer)


@pytest.fixture
def nats_server_factory() -> Iterator[Callable[..., NatsServer]]:
    """Start private nats-servers (keyword arguments as :class:`NatsServer`); all stopped after."""
    yield from _factory(NatsServer)


@pytest.fixture(scope="session")
def rabbit_server() -> Iterator[RabbitServer]:
    """A private RabbitMQ node for the whole session (never the machine's own RabbitMQ)."""
    server = _started(RabbitServer)
    yield server
    server.cleanup()


@pytest.fixture
def rabbit_server_factory() -> Iterator[Callable[..., RabbitServer]]:
    """Start private RabbitMQ nodes (keyword arguments as :class:`RabbitServer`); all stopped after."""
    yield from _factory(RabbitServer)
