"""One trace through a broker: RPC and pub/sub between two connections to Redis or NATS."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, NamedTuple

import pytest

pytest.importorskip("opentelemetry.sdk")

from eventforge import Message, MessageQueue, RPCClient, RPCServer, connect
from eventforge_observers.otel import Tracing
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

pytestmark = pytest.mark.broker


class Traced(NamedTuple):
    tracing: Tracing
    exporter: InMemorySpanExporter
    waiter: Any
    server_side: MessageQueue
    client_side: MessageQueue


@pytest.fixture(params=["redis", "nats"])
def broker_url(request: pytest.FixtureRequest) -> str:
    server = request.getfixturevalue(f"{request.param}_server")
    return str(server.url)


@pytest.fixture
def traced(broker_url: str, span_waiter: Any) -> Iterator[Traced]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    waiter = span_waiter
    provider.add_span_processor(waiter)
    tracing = Tracing(tracer_provider=provider)
    server_side = MessageQueue(transport=tracing.instrument(connect(broker_url)), name="server")
    client_side = MessageQueue(transport=tracing.instrument(connect(broker_url)), name="client")
    yield Traced(tracing, exporter, waiter, server_side, client_side)
    client_side.close()
    server_side.close()
    provider.shutdown()


def parent(span: Any) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def test_rpc_through_a_broker_is_one_trace(traced: Traced) -> None:
    tracing, exporter, _, server_side, client_side = traced
    server = RPCServer(server_side, service_name="calculator")
    server.add_method("add", lambda a, b: a + b)
    server.serve(blocking=False)
    try:
        assert RPCClient(client_side, service_name="calculator", timeout=10).call("add", 4, 5) == 9
    finally:
        server.stop()
    spans = exporter.get_finished_spans()
    call = next(s for s in spans if s.kind is SpanKind.CLIENT)
    serve = next(s for s in spans if s.kind is SpanKind.SERVER)
    reply = next(
        s for s in spans if s.kind is SpanKind.PRODUCER and parent(s) == serve.context.span_id
    )
    assert call.name == serve.name == "calculator/add"
    assert parent(serve) == call.context.span_id
    assert {s.context.trace_id for s in spans} == {call.context.trace_id}
    assert reply.context.trace_id == call.context.trace_id
    assert tracing.open_requests == 0


def test_publish_to_a_subscriber_on_another_connection_is_one_trace(traced: Traced) -> None:
    _, exporter, waiter, server_side, client_side = traced
    got = threading.Event()
    received: list[Message] = []

    def handler(message: Message) -> None:
        received.append(message)
        got.set()

    server_side.subscribe("orders.*", handler)
    client_side.publish("orders.created", {"id": 1})
    assert got.wait(10)
    assert "traceparent" in received[0].headers

    # The process span ends right after the handler returns, on the transport's thread.
    assert waiter.wait_for("orders.* process")
    (process,) = [s for s in exporter.get_finished_spans() if s.name == "orders.* process"]
    publish = next(s for s in exporter.get_finished_spans() if s.name == "orders.created publish")
    assert parent(process) == publish.context.span_id
    assert process.context.trace_id == publish.context.trace_id
