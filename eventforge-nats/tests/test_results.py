"""Task results in a NATS KV bucket: the result-store conformance suite (every client a new
transport on the session's server), results read from a worker process, and the bucket."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from eventforge.errors import ConfigurationError
from eventforge.testing.brokers import NatsServer
from eventforge.testing.results_conformance import ResultStoreConformance, StoreFactory
from eventforge.testing.results_processes import ResultsAcrossProcesses
from eventforge_nats import NatsTransport

pytestmark = pytest.mark.broker


class TestNatsResultStore(ResultStoreConformance):
    short_ttl = 1.0  # Nats-TTL counts whole seconds
    expiry_slack = 2.0

    @pytest.fixture
    def make_store(self, make: Callable[..., NatsTransport]) -> StoreFactory:
        return lambda: make().result_store()


class TestNatsResultsAcrossProcesses(ResultsAcrossProcesses):
    @pytest.fixture
    def results_url(self, nats_server: NatsServer) -> str:
        return nats_server.url


def test_records_live_in_the_kv_bucket_with_their_ttl(
    make: Callable[..., NatsTransport], run_plain: Callable[..., Any], nats_server: NatsServer
) -> None:
    """A record is the key ``<task id>`` of the bucket ``EF_RESULTS``, a plain NATS client can
    read it, and its message carries the put's ttl in whole seconds, rounded up."""
    store = make().result_store()
    store.put("order-7", b"outcome", ttl=2.5, final=True)

    async def read(nc: Any) -> tuple[bytes, str]:
        js = nc.jetstream()
        entry = await (await js.key_value("EF_RESULTS")).get("order-7")
        raw = await js.get_msg("KV_EF_RESULTS", subject="$KV.EF_RESULTS.order-7")
        return entry.value, raw.headers["Nats-TTL"]

    assert run_plain(nats_server.url, read) == (b"Foutcome", "3")


def test_a_bucket_without_per_message_ttls_is_refused_with_what_to_do(
    nats_server_factory: Callable[..., NatsServer], run_plain: Callable[..., Any]
) -> None:
    """A bucket ``EF_RESULTS`` made without per-message TTLs (by another tool) makes ``put``
    raise a ``ConfigurationError`` that says to delete it, instead of a bare server error."""
    from nats.js.api import StreamConfig

    server = nats_server_factory()

    async def make_bucket(nc: Any) -> None:
        await nc.jetstream().add_stream(
            StreamConfig(name="KV_EF_RESULTS", subjects=["$KV.EF_RESULTS.>"])
        )

    run_plain(server.url, make_bucket)
    transport = NatsTransport(server.url)
    try:
        with pytest.raises(ConfigurationError, match="nats kv del EF_RESULTS"):
            transport.result_store().put("t1", b"x", ttl=5, final=True)
    finally:
        transport.close()
