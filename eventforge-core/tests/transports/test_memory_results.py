"""The memory transport's result store passes the result-store conformance suite."""

from __future__ import annotations

import pytest
from eventforge.errors import TransportClosedError, UnsupportedCapabilityError
from eventforge.testing.results_conformance import ResultStoreConformance, StoreFactory
from eventforge.transport import Capability, Transport
from eventforge.transports.memory import MemoryTransport
from eventforge.transports.roundtrip import RoundTripTransport


class TestMemoryResultStore(ResultStoreConformance):
    short_ttl = 0.2
    expiry_slack = 0.1

    @pytest.fixture
    def make_store(self) -> StoreFactory:
        transport = MemoryTransport()
        return transport.result_store  # one store per transport: every call returns it


def test_one_store_per_transport_closed_with_it() -> None:
    transport = RoundTripTransport()
    assert transport.has(Capability.RESULTS)
    store = transport.result_store()
    assert transport.result_store() is store
    store.put("t1", b"x", ttl=60, final=True)
    transport.close()
    with pytest.raises(TransportClosedError):
        store.get("t1")


def test_a_transport_without_the_capability_refuses_with_the_ones_that_can() -> None:
    class Bare(Transport):
        name = "bare"

        def send(self, message: object) -> None: ...
        def subscribe(self, topic: str, callback: object, *, group: str | None = None) -> str:
            return ""

        def unsubscribe(self, subscription_id: str) -> bool:
            return False

        def close(self) -> None: ...

    with pytest.raises(UnsupportedCapabilityError, match="redis, nats, sql, local") as info:
        Bare().result_store()  # type: ignore[abstract]
    assert info.value.capability == Capability.RESULTS


def test_override_guard_refuses_a_silent_replacement() -> None:
    with pytest.raises(TypeError, match="overrides the result-store conformance test"):

        class Sneaky(ResultStoreConformance):
            def test_final_record_is_never_replaced(self) -> None:  # type: ignore[override]
                pass


def test_override_guard_accepts_a_marked_override() -> None:
    class Honest(ResultStoreConformance):
        @ResultStoreConformance.overrides(reason="this backend cannot expire records")
        def test_record_expires_after_its_ttl(self) -> None:  # type: ignore[override]
            pass

    assert Honest.test_record_expires_after_its_ttl is not (
        ResultStoreConformance.test_record_expires_after_its_ttl
    )
