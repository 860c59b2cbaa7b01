"""The quorum-queue work-queue backend passes the WorkQueue conformance suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from eventforge.testing.rabbit import RabbitServer
from eventforge.testing.workqueue_conformance import BackendFactory, WorkQueueConformance
from eventforge_amqp.transport import AmqpTransport

pytestmark = pytest.mark.broker


class TestAmqpWorkQueueConformance(WorkQueueConformance):
    """Each queue gets its own quorum queues on the session's node.

    RabbitMQ has no visibility timeout: an unsettled item comes back when its consumer's
    channel or connection closes (tested in test_workqueue_amqp.py), so the suite's
    visibility-timeout tests are skipped.
    """

    visibility_timeout = None

    @pytest.fixture
    def make_backend(self, rabbit_server: RabbitServer) -> Iterator[BackendFactory]:
        transport = AmqpTransport(rabbit_server.url)
        yield transport.work_queue_backend
        transport.close()
