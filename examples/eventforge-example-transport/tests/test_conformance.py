"""SpoolTransport against eventforge's Transport conformance suite."""

from __future__ import annotations

from pathlib import Path

import pytest
from eventforge.testing.conformance import TransportConformance, TransportFactory
from eventforge_example_transport import SpoolTransport


class TestSpoolConformance(TransportConformance):
    delivery_timeout = 10.0

    @pytest.fixture
    def make_transport(self, tmp_path: Path) -> TransportFactory:
        return lambda: SpoolTransport(tmp_path / "spool", poll_interval=0.005)

    @pytest.fixture
    def make_independent_transport(self, tmp_path: Path) -> TransportFactory:
        return lambda: SpoolTransport(tmp_path / "other-spool", poll_interval=0.005)
