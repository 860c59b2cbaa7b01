"""The transport conformance suite over a real redis-server."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from eventforge.testing.brokers import RedisServer
from eventforge.testing.conformance import TransportConformance
from eventforge.transport import Transport

pytestmark = pytest.mark.broker


class TestRedisTransportConformance(TransportConformance):
    @pytest.fixture
    def make_transport(self, redis_server: RedisServer) -> Callable[[], Transport]:
        from eventforge_redis import RedisTransport

        return lambda: RedisTransport.from_url(redis_server.url)

    @pytest.fixture
    def make_independent_transport(
        self, redis_server_factory: Callable[..., RedisServer]
    ) -> Callable[[], Transport]:
        from eventforge_redis import RedisTransport

        other = redis_server_factory()
        return lambda: RedisTransport.from_url(other.url)
