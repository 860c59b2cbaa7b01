"""The JetStream work-queue backend passes the WorkQueue conformance suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from eventforge.testing.brokers import NatsServer
from eventforge.testing.workqueue_conformance import BackendFactory, WorkQueueConformance
from eventforge_nats.transport import NatsTransport

pytestmark = pytest.mark.broker


class TestJetStreamWorkQueueConformance(WorkQueueConformance):
    """Each queue gets its own stream and durable consumer on the session's nats-server."""

    visibility_timeout = 1.0

    @pytest.fixture
    def make_backend(self, nats_server: NatsServer) -> Iterator[BackendFactory]:
        transport = NatsTransport(nats_server.url, ack_wait=self.visibility_timeout)
        yield transport.work_queue_backend
        transport.close()
