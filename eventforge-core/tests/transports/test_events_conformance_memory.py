"""Typed events, middleware, header routing, caches, typed RPC and rendezvous: the in-process run
of the events conformance suite."""

from __future__ import annotations

import pytest
from eventforge.testing.conformance import TransportFactory
from eventforge.testing.events_conformance import EventsConformance
from eventforge.transports.memory import MemoryTransport


class TestMemoryEventsConformance(EventsConformance):
    """Every queue of a test shares one MemoryTransport."""

    @pytest.fixture
    def make_transport(self) -> TransportFactory:
        transport = MemoryTransport()
        return lambda: transport


def test_silent_override_of_an_events_contract_test_is_refused() -> None:
    with pytest.raises(TypeError, match="silently replace part of the EventsConformance contract"):

        class TestSloppy(EventsConformance):
            def test_header_match_all_and_any(self) -> None:
                pass
