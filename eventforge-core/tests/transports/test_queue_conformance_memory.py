"""MessageQueue and RPC pass the queue conformance suite over the in-process transport."""

from __future__ import annotations

import pytest
from eventforge.testing.conformance import TransportFactory
from eventforge.testing.queue_conformance import QueueConformance
from eventforge.transports.memory import MemoryTransport


class TestMemoryQueueConformance(QueueConformance):
    """Every queue of a test shares one MemoryTransport: groups and RPC pools span the queues."""

    @pytest.fixture
    def make_transport(self) -> TransportFactory:
        transport = MemoryTransport()
        return lambda: transport


def test_silent_override_of_a_queue_contract_test_is_refused() -> None:
    with pytest.raises(TypeError, match="silently replace part of the QueueConformance contract"):

        class TestSloppy(QueueConformance):
            def test_request_gets_the_reply(self) -> None:
                pass


def test_xfail_with_reason_is_a_deliberate_override() -> None:
    class TestHonest(QueueConformance):
        @pytest.mark.xfail(reason="this transport cannot reply")
        def test_request_gets_the_reply(self) -> None:
            raise AssertionError

    assert "test_request_gets_the_reply" in vars(TestHonest)


def test_every_contract_test_has_a_one_line_docstring() -> None:
    contract = set(QueueConformance._contract)
    assert {
        "test_rpc_servers_with_one_service_name_compete",
        "test_close_is_idempotent_and_final",
    } <= contract
    for name in contract:
        doc = getattr(QueueConformance, name).__doc__
        assert doc, f"{name} needs a contract docstring"
        assert "\n" not in doc.strip(), f"{name}: the contract docstring must be one line"
