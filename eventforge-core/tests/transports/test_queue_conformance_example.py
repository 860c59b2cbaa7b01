"""The example third-party transport (a spool directory) passes the queue conformance suite.

It declares no competing-consumer groups, so the two tests that need groups across queues are
skipped for it; everything else, RPC included, runs over its files and reader threads.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from eventforge.testing.conformance import TransportFactory
from eventforge.testing.queue_conformance import QueueConformance

spool = pytest.importorskip(
    "eventforge_example_transport", reason="the example plugin is installed by the workspace"
)


class TestSpoolQueueConformance(QueueConformance):
    delivery_timeout = 10.0

    @pytest.fixture
    def make_transport(self, tmp_path: Path) -> TransportFactory:
        return lambda: spool.SpoolTransport(tmp_path / "spool", poll_interval=0.005)
