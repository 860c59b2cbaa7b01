"""An intercepted transport is still a conforming transport, and the queue suite passes on it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from eventforge import MemoryTransport, Message, MessageQueue
from eventforge.testing.conformance import TransportConformance, TransportFactory
from eventforge.testing.queue_conformance import QueueConformance
from eventforge.transport import Capability, is_nonblocking, nonblocking
from eventforge_observers.intercept import BoundedMap, InterceptedTransport, intercept
from eventforge_observers.otel import Tracing
from eventforge_observers.prometheus import PrometheusMetrics


class Recorder:
    """Records what passes through, in order."""

    def __init__(self, label: str, log: list[str]) -> None:
        self.label = label
        self.log = log

    def on_send(self, message: Message, send: Callable[[Message], None], transport: str) -> None:
        self.log.append(f"{self.label}:send:{message.topic}")
        send(message)

    def on_deliver(
        self, message: Message, callback: Callable[[Message], Any], pattern: str, transport: str
    ) -> None:
        self.log.append(f"{self.label}:deliver:{pattern}")
        callback(message)

    def on_request(
        self,
        message: Message,
        request: Callable[[Message, float], Message | None],
        timeout: float,
        transport: str,
    ) -> Message | None:
        return request(message, timeout)


def both_instruments() -> list[Any]:
    from prometheus_client import CollectorRegistry

    return [Tracing(), PrometheusMetrics(CollectorRegistry())]


class TestInterceptedTransportConformance(TransportConformance):
    """Tracing and metrics wrapped around the memory transport change nothing it promises."""

    @pytest.fixture
    def make_transport(self) -> TransportFactory:
        transport = intercept(MemoryTransport(), *both_instruments())
        return lambda: transport


class TestInterceptedQueueConformance(QueueConformance):
    """MessageQueue, groups, request/reply and RPC behave the same on an intercepted transport."""

    @pytest.fixture
    def make_transport(self) -> TransportFactory:
        transport = intercept(MemoryTransport(), *both_instruments())
        return lambda: transport


def test_interceptors_run_outermost_first_around_send_and_delivery() -> None:
    log: list[str] = []
    transport = intercept(MemoryTransport(), Recorder("outer", log), Recorder("inner", log))
    queue = MessageQueue(transport=transport)
    queue.subscribe("a.*", lambda m: log.append("handler"))
    queue.publish("a.b", 1)
    queue.close()
    assert log == [
        "outer:send:a.b",
        "inner:send:a.b",
        "outer:deliver:a.*",
        "inner:deliver:a.*",
        "handler",
    ]


def test_the_wrapper_answers_to_the_inner_name_and_capabilities() -> None:
    inner = MemoryTransport()
    wrapped = InterceptedTransport(inner, [Recorder("r", [])])
    assert wrapped.name == inner.name
    assert wrapped.capabilities == inner.capabilities
    assert wrapped.stats() == inner.stats()
    wrapped.close()


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(TypeError, match="Transport"):
        InterceptedTransport(object(), [Recorder("r", [])])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one interceptor"):
        intercept(MemoryTransport())


def test_bounded_map_forgets_the_oldest_and_reports_them() -> None:
    evicted: list[int] = []
    bounded = BoundedMap(2, on_evict=evicted.append)
    for i in range(4):
        bounded.put(str(i), i)
    assert evicted == [0, 1]
    assert len(bounded) == 2
    assert bounded.pop("3") == 3
    assert bounded.pop("0") is None


class _InlineTransport(MemoryTransport):
    """Declares inline hand-offs and records whether each callback arrived marked."""

    capabilities = MemoryTransport.capabilities | {Capability.NONBLOCKING_INLINE}

    def __init__(self) -> None:
        super().__init__()
        self.marks: list[bool] = []

    def subscribe(self, topic: str, callback: Any, **options: Any) -> str:  # type: ignore[override]
        self.marks.append(is_nonblocking(callback))
        return super().subscribe(topic, callback, **options)


class _Counting(Recorder):
    nonblocking = True


def test_interceptors_that_may_wait_drop_inline_hand_offs() -> None:
    inner = _InlineTransport()
    wrapped = intercept(inner, Recorder("a", []))
    assert not wrapped.has(Capability.NONBLOCKING_INLINE)
    wrapped.subscribe("x", nonblocking(lambda m: None))
    assert inner.marks == [False]  # delivered through the interceptor, off the I/O thread


def test_interceptors_that_never_wait_keep_hand_offs_marked() -> None:
    inner = _InlineTransport()
    log: list[str] = []
    wrapped = intercept(inner, _Counting("a", log), _Counting("b", log))
    assert wrapped.has(Capability.NONBLOCKING_INLINE)
    wrapped.subscribe("x", nonblocking(lambda m: None))
    wrapped.subscribe("y", lambda m: None)
    assert inner.marks == [True, False]
    wrapped.send(Message("x", 1))
    assert log == ["a:send:x", "b:send:x", "a:deliver:x", "b:deliver:x"]


def test_builtin_interceptors_declare_whether_they_wait() -> None:
    assert PrometheusMetrics.nonblocking is True
    assert Tracing.nonblocking is False
