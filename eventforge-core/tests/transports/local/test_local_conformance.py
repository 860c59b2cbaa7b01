"""local:// passes the transport, queue, events and work-queue conformance suites.

Every factory call opens a new LocalTransport on the test's directory, the way separate
processes share one directory: delivery, groups and RPC all go through the SQLite store.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from eventforge.testing.conformance import TransportConformance, TransportFactory
from eventforge.testing.events_conformance import EventsConformance
from eventforge.testing.queue_conformance import QueueConformance
from eventforge.testing.workqueue_conformance import BackendFactory, WorkQueueConformance
from eventforge.transports.local import LocalTransport


class TestLocalTransportConformance(TransportConformance):
    @pytest.fixture
    def make_transport(self, tmp_path: Path) -> TransportFactory:
        return lambda: LocalTransport(tmp_path)

    @pytest.fixture
    def make_independent_transport(
        self, tmp_path_factory: pytest.TempPathFactory
    ) -> TransportFactory:
        return lambda: LocalTransport(tmp_path_factory.mktemp("other"))


class TestLocalQueueConformance(QueueConformance):
    @pytest.fixture
    def make_transport(self, tmp_path: Path) -> TransportFactory:
        return lambda: LocalTransport(tmp_path)


class TestLocalEventsConformance(EventsConformance):
    @pytest.fixture
    def make_transport(self, tmp_path: Path) -> TransportFactory:
        return lambda: LocalTransport(tmp_path)


class TestLocalWorkQueueConformance(WorkQueueConformance):
    visibility_timeout = 0.3

    @pytest.fixture
    def make_backend(self, tmp_path: Path) -> Iterator[BackendFactory]:
        transport = LocalTransport(tmp_path, visibility_timeout=0.3)
        yield lambda name, retry: transport.work_queue_backend(name, retry)
        transport.close()
