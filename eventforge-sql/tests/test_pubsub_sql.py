"""Pub/sub over PostgreSQL LISTEN/NOTIFY: the transport conformance suite, and its limits."""

from __future__ import annotations

import os

import pytest
from eventforge.errors import FrameTooLarge
from eventforge.message import Message
from eventforge.testing.conformance import TransportConformance, TransportFactory
from eventforge.transport import Capability
from eventforge_sql.testing import PostgresServer
from eventforge_sql.transport import SqlTransport

pytestmark = pytest.mark.broker


class TestPostgresNotifyConformance(TransportConformance):
    """Every transport of the factory shares one channel; independent ones use another."""

    @pytest.fixture
    def make_transport(self, pg_server: PostgresServer) -> TransportFactory:
        channel = f"conformance_{os.urandom(4).hex()}"
        return lambda: SqlTransport.from_url(pg_server.url, channel=channel, create=False)

    @pytest.fixture
    def make_independent_transport(self, pg_server: PostgresServer) -> TransportFactory:
        channel = f"independent_{os.urandom(4).hex()}"
        return lambda: SqlTransport.from_url(pg_server.url, channel=channel, create=False)


def test_pubsub_capabilities_are_declared_on_postgresql_only(
    pg_server: PostgresServer, tmp_path: object
) -> None:
    pg = SqlTransport.from_url(pg_server.url, create=False)
    lite = SqlTransport.from_url(f"sqlite:///{tmp_path}/x.db")  # type: ignore[str-bytes-safe]
    try:
        assert pg.has(Capability.WILDCARDS)
        assert pg.has(Capability.DURABLE)
        assert not lite.has(Capability.WILDCARDS)
        assert lite.has(Capability.DURABLE)
    finally:
        pg.close()
        lite.close()


def test_a_payload_over_the_notify_limit_is_refused(pg_server: PostgresServer) -> None:
    transport = SqlTransport.from_url(pg_server.url, create=False)
    try:
        with pytest.raises(FrameTooLarge):
            transport.send(Message("big", "x" * 9000))
    finally:
        transport.close()


@pytest.mark.slow
def test_subscribers_listen_again_after_a_database_restart(pg_server: PostgresServer) -> None:
    """At-most-once: what is sent while the database is down is lost; afterwards delivery
    resumes without the application doing anything."""
    from eventforge.testing.conformance import Collector
    from eventforge.testing.waiting import wait_until

    sender = SqlTransport.from_url(pg_server.url, create=False)
    receiver = SqlTransport.from_url(pg_server.url, create=False)
    got = Collector()
    receiver.subscribe("restart.probe", got)
    try:
        pg_server.kill()
        pg_server.restart()
        sent = 0

        def probe() -> bool:
            nonlocal sent
            try:
                sender.send(Message("restart.probe", sent))
                sent += 1
            except Exception:
                pass  # the database is still coming back
            return bool(got.payloads())

        assert wait_until(probe, 30, interval=0.2)
        assert receiver.stats()["reconnects"] >= 1
    finally:
        sender.close()
        receiver.close()
