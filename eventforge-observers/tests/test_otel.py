"""OpenTelemetry: one trace follows a message to its handler and back, through RPC too."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from eventforge import MemoryTransport, Message, MessageQueue, observe
from eventforge_observers.otel import Tracing
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracing(exporter: InMemorySpanExporter, span_waiter: Any) -> Iterator[Tracing]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.add_span_processor(span_waiter)
    yield Tracing(tracer_provider=provider)
    provider.shutdown()


def by_name(spans: Any) -> dict[str, ReadableSpan]:
    found = {span.name: span for span in spans}
    assert len(found) == len(spans), [s.name for s in spans]
    return found


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def test_publish_handle_reply_chain_is_one_trace(
    tracing: Tracing, exporter: InMemorySpanExporter
) -> None:
    queue = MessageQueue(transport=tracing.instrument(MemoryTransport()))

    @queue.on("math.add")
    def add(message: Message) -> None:
        queue.reply(message, message.payload["a"] + message.payload["b"])

    try:
        reply = queue.request("math.add", {"a": 1, "b": 2}, timeout=5)
    finally:
        queue.close()
    assert reply is not None
    assert reply.payload == 3
    assert "traceparent" in reply.headers

    spans = exporter.get_finished_spans()
    assert len({s.context.trace_id for s in spans}) == 1
    names = by_name(spans)
    request = names["math.add request"]
    handle = names["math.add process"]
    reply_publish = next(
        s for n, s in names.items() if n.startswith("_inbox") and n.endswith("publish")
    )
    reply_handle = next(
        s for n, s in names.items() if n.startswith("_inbox") and n.endswith("process")
    )
    assert request.parent is None
    assert request.kind is SpanKind.CLIENT
    assert handle.kind is SpanKind.CONSUMER
    assert parent_of(handle) == request.context.span_id
    assert parent_of(reply_publish) == handle.context.span_id
    assert reply_publish.kind is SpanKind.PRODUCER
    assert parent_of(reply_handle) == reply_publish.context.span_id
    assert tracing.open_requests == 0


def test_plain_publish_links_handler_to_publisher_inside_a_task_span(
    tracing: Tracing, exporter: InMemorySpanExporter
) -> None:
    queue = MessageQueue(transport=tracing.instrument())
    got: list[Message] = []
    queue.subscribe("events.*", got.append)

    @observe(tracing.observer())
    def job() -> None:
        queue.publish("events.user", {"user": "alice"})

    try:
        job()
    finally:
        queue.close()
    assert len(got) == 1
    names = by_name(exporter.get_finished_spans())
    task_span = next(s for n, s in names.items() if n.startswith("task "))
    publish = names["events.user publish"]
    process = names["events.* process"]
    assert parent_of(publish) == task_span.context.span_id
    assert parent_of(process) == publish.context.span_id
    assert process.attributes["messaging.destination.name"] == "events.user"
    assert publish.attributes["eventforge.transport"] == "memory"
    assert {s.context.trace_id for s in names.values()} == {task_span.context.trace_id}


def test_rpc_across_two_queues_is_one_trace(
    tracing: Tracing, exporter: InMemorySpanExporter
) -> None:
    from eventforge import RPCClient, RPCServer

    shared = tracing.instrument(MemoryTransport())
    server_queue = MessageQueue(transport=shared, close_transport=False, name="server")
    client_queue = MessageQueue(transport=shared, close_transport=False, name="client")
    server = RPCServer(server_queue, service_name="calculator")
    server.add_method("add", lambda a, b: a + b)
    server.serve(blocking=False)
    try:
        client = RPCClient(client_queue, service_name="calculator")
        assert client.call("add", 10, 20) == 30
    finally:
        server.stop()
        client_queue.close()
        server_queue.close()
        shared.close()

    spans = exporter.get_finished_spans()
    assert len({s.context.trace_id for s in spans}) == 1
    call = next(s for s in spans if s.name == "calculator/add" and s.kind is SpanKind.CLIENT)
    serve = next(s for s in spans if s.name == "calculator/add" and s.kind is SpanKind.SERVER)
    reply = next(s for s in spans if s.kind is SpanKind.PRODUCER)
    assert call.parent is None
    assert parent_of(serve) == call.context.span_id
    assert parent_of(reply) == serve.context.span_id
    assert tracing.open_requests == 0  # the client span closed when the reply arrived


def test_failed_rpc_marks_the_client_span_as_an_error(
    tracing: Tracing, exporter: InMemorySpanExporter
) -> None:
    from eventforge import RPCClient, RPCServer
    from eventforge.errors import RemoteError

    queue = MessageQueue(transport=tracing.instrument())
    server = RPCServer(queue, service_name="svc")

    def boom() -> None:
        raise ValueError("bad input")

    server.add_method("boom", boom)
    server.serve(blocking=False)
    try:
        with pytest.raises(RemoteError):
            RPCClient(queue, service_name="svc").call("boom")
    finally:
        server.stop()
        queue.close()
    call = next(s for s in exporter.get_finished_spans() if s.kind is SpanKind.CLIENT)
    assert call.status.status_code is StatusCode.ERROR
    assert "ValueError" in (call.status.description or "")


def test_task_span_records_errors(tracing: Tracing, exporter: InMemorySpanExporter) -> None:
    @observe(tracing.observer())
    def broken() -> None:
        raise KeyError("missing")

    with pytest.raises(KeyError):
        broken()
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.events[0].name == "exception"


def test_missing_opentelemetry_names_the_extra() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["opentelemetry"] = None
        try:
            import eventforge_observers.otel
        except ImportError as exc:
            print(exc)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'eventforge-observers[otel]'" in out.stdout


def test_a_request_never_answered_ends_its_span_as_an_error(
    exporter: InMemorySpanExporter,
) -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = Tracing(tracer_provider=provider, reply_timeout=0.0)
    queue = MessageQueue(transport=tracing.instrument())
    # A listener that never answers, subscribed past the tracing (it makes no spans of its own).
    queue.transport.inner.subscribe("nobody.home", lambda m: None)  # type: ignore[attr-defined]
    try:
        assert queue.request("nobody.home", 1, timeout=0.01) is None
        assert exporter.get_finished_spans() == ()
        assert queue.request("nobody.home", 2, timeout=0.01) is None  # the next request sweeps
    finally:
        queue.close()
        provider.shutdown()
    (abandoned,) = exporter.get_finished_spans()
    assert abandoned.kind is SpanKind.CLIENT
    assert abandoned.status.status_code is StatusCode.ERROR
    assert abandoned.status.description == "no reply observed"


def test_middleware_traces_threaded_and_async_handlers_for_their_whole_run(
    tracing: Tracing, exporter: InMemorySpanExporter, span_waiter: Any
) -> None:
    import threading

    from opentelemetry import trace

    queue = MessageQueue(middleware=[tracing.middleware()])
    inside: dict[str, int] = {}
    done = threading.Event()

    def threaded(message: Message) -> None:
        inside["threaded"] = trace.get_current_span().get_span_context().span_id
        done.set()

    async def failing(message: Message) -> None:
        raise RuntimeError("async handler failed")

    queue.subscribe("jobs.threaded", threaded, threaded=True)
    queue.subscribe("jobs.async", failing)
    try:
        queue.publish("jobs.threaded", 1)
        assert done.wait(10)
        queue.publish("jobs.async", 2)
        assert span_waiter.wait_for("jobs.async process")  # it ends on the loop thread
    finally:
        queue.close()

    def named(name: str) -> ReadableSpan:
        return next(s for s in exporter.get_finished_spans() if s.name == name)

    process = named("jobs.threaded process")
    publish = named("jobs.threaded publish")
    assert inside["threaded"] == process.context.span_id  # current while the handler ran
    assert parent_of(process) == publish.context.span_id
    failed = named("jobs.async process")
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.events[0].name == "exception"


def test_middleware_rpc_links_server_to_client_and_reply_to_server(
    tracing: Tracing, exporter: InMemorySpanExporter
) -> None:
    from eventforge import RPCClient, RPCServer

    queue = MessageQueue(middleware=[tracing.middleware()])
    server = RPCServer(queue, service_name="calculator")
    server.add_method("add", lambda a, b: a + b)
    server.serve(blocking=False)
    try:
        assert RPCClient(queue, service_name="calculator").call("add", 2, 2) == 4
    finally:
        server.stop()
        queue.close()
    spans = exporter.get_finished_spans()
    call = next(s for s in spans if s.kind is SpanKind.CLIENT)
    serve = next(s for s in spans if s.kind is SpanKind.SERVER)
    reply = next(s for s in spans if s.kind is SpanKind.PRODUCER)
    assert call.name == serve.name == "calculator/add"
    assert parent_of(serve) == call.context.span_id
    assert parent_of(reply) == serve.context.span_id
    assert len({s.context.trace_id for s in spans}) == 1
