"""Task results in Redis: the result-store conformance suite (every client a new transport on
the session's server), results read from a worker process, and what Redis holds."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from eventforge.testing.brokers import RedisServer
from eventforge.testing.results_conformance import ResultStoreConformance, StoreFactory
from eventforge.testing.results_processes import ResultsAcrossProcesses

pytestmark = pytest.mark.broker


class TestRedisResultStore(ResultStoreConformance):
    short_ttl = 0.2
    expiry_slack = 0.5

    @pytest.fixture
    def make_store(self, make_redis: Callable[..., Any]) -> StoreFactory:
        return lambda: make_redis().result_store()


class TestRedisResultsAcrossProcesses(ResultsAcrossProcesses):
    @pytest.fixture
    def results_url(self, redis_server: RedisServer) -> str:
        return redis_server.url


def test_a_record_is_a_hash_that_redis_expires(make_redis: Callable[..., Any]) -> None:
    """The record is the hash ``<key_prefix>:result:<id>`` with a Redis TTL of the put's."""
    transport = make_redis(key_prefix="shop")
    store = transport.result_store()
    store.put("order-7", b"outcome", ttl=30, final=True)
    client = transport.client
    assert client.hgetall("shop:result:order-7") == {b"d": b"outcome", b"f": b"1"}
    assert 29_000 < client.pttl("shop:result:order-7") <= 30_000
