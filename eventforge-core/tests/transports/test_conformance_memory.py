"""MemoryTransport passes the Transport conformance suite, and the suite guards its contract."""

from __future__ import annotations

import pytest
from eventforge.message import Message
from eventforge.testing.conformance import Collector, TransportConformance, TransportFactory
from eventforge.transports.memory import MemoryTransport


class TestMemoryTransportConformance(TransportConformance):
    """The in-process transport: the factory hands out one shared instance."""

    @pytest.fixture
    def make_transport(self) -> TransportFactory:
        transport = MemoryTransport()
        return lambda: transport

    @pytest.fixture
    def make_independent_transport(self) -> TransportFactory:
        return MemoryTransport


class TestMemoryTransportFreshInstances(TransportConformance):
    """A factory that returns a new MemoryTransport per call still passes every test that
    needs only one transport; the cross-transport test is skipped (not CROSS_PROCESS)."""

    @pytest.fixture
    def make_transport(self) -> TransportFactory:
        return MemoryTransport


# -- the override guard ----------------------------------------------------------------------


def test_silent_override_of_a_contract_test_is_refused() -> None:
    with pytest.raises(TypeError, match="test_unsubscribe overrides the conformance test") as info:

        class TestSloppy(TransportConformance):
            def test_unsubscribe(self) -> None:
                pass

    assert "@TransportConformance.overrides(reason='why')" in str(info.value)


def test_override_guard_applies_to_grandchildren() -> None:
    class Base(TransportConformance):
        pass

    with pytest.raises(TypeError, match="test_order_per_publisher"):

        class TestChild(Base):
            def test_order_per_publisher(self) -> None:
                pass


def test_xfail_with_reason_is_a_deliberate_override() -> None:
    class TestHonest(TransportConformance):
        @pytest.mark.xfail(reason="broker reorders under load")
        def test_order_per_publisher(self) -> None:
            raise AssertionError

    assert "test_order_per_publisher" in vars(TestHonest)


def test_xfail_without_reason_is_refused() -> None:
    with pytest.raises(TypeError, match="overrides the conformance test"):

        class TestVague(TransportConformance):
            @pytest.mark.xfail
            def test_order_per_publisher(self) -> None:
                pass


def test_overrides_decorator_is_a_deliberate_override() -> None:
    class TestReplaced(TransportConformance):
        @TransportConformance.overrides("test_receive_timeout_returns_none", reason="no pull API")
        def test_receive_timeout_returns_none(self) -> None:
            pass

        @TransportConformance.overrides(reason="patterns are filtered client-side")
        def test_double_wildcard_in_the_middle(self) -> None:
            pass

    assert "test_receive_timeout_returns_none" in vars(TestReplaced)


def test_overrides_decorator_checks_name_and_reason() -> None:
    with pytest.raises(TypeError, match="non-empty reason"):
        TransportConformance.overrides(reason="  ")
    with pytest.raises(TypeError, match="the names must match"):

        @TransportConformance.overrides("test_unsubscribe", reason="x")
        def test_unsubscirbe() -> None:
            pass


def test_new_test_names_are_allowed() -> None:
    class TestExtra(TransportConformance):
        def test_my_transport_specific_behaviour(self) -> None:
            pass

    assert "test_my_transport_specific_behaviour" in vars(TestExtra)


def test_contract_lists_every_test() -> None:
    contract = TransportConformance._contract
    assert set(contract.values()) == {"TransportConformance"}
    assert "test_subscriber_receives_sent_message" in contract
    assert "test_group_members_share_messages" in contract
    assert all(name.startswith("test_") for name in contract)
    for name in contract:
        doc = getattr(TransportConformance, name).__doc__
        assert doc, f"{name} needs a contract docstring"
        assert "\n" not in doc.strip(), f"{name}: the contract docstring must be one line"


def test_collector_ignores_probes() -> None:
    collector = Collector()
    collector(Message("a", {"eventforge_conformance_probe": 0}))
    collector(Message("a", "real"))
    assert collector.probes == 1
    assert collector.payloads() == ["real"]


def test_lazy_package_exports() -> None:
    import eventforge.testing as testing

    assert testing.TransportConformance is TransportConformance
    with pytest.raises(AttributeError):
        _ = testing.NoSuchThing


def test_the_guard_serves_any_sealed_suite() -> None:
    from eventforge.testing._transport_harness import ContractGuard, seal_contract

    class WidgetSuite(ContractGuard):
        def test_spins(self) -> None:
            pass

    assert seal_contract(WidgetSuite) == {"test_spins"}
    with pytest.raises(TypeError, match=r"@WidgetSuite\.overrides"):

        class TestWidget(WidgetSuite):
            def test_spins(self) -> None:
                pass


def test_a_suite_composed_of_area_classes_seals_the_tests_it_inherits() -> None:
    from eventforge.testing._transport_harness import ContractGuard, seal_contract

    class TurningArea(ContractGuard):
        def test_turns(self) -> None:
            pass

    class WidgetSuite(TurningArea):
        def test_spins(self) -> None:
            pass

    assert seal_contract(WidgetSuite) == {"test_spins", "test_turns"}
    with pytest.raises(TypeError, match=r"@WidgetSuite\.overrides"):

        class TestWidget(WidgetSuite):
            def test_turns(self) -> None:
                pass
