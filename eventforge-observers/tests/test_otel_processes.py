"""One trace across two processes: an RPC over TCP, each side tracing with its own provider."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from eventforge import MessageQueue, RPCClient
from eventforge_observers.otel import Tracing
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

SERVER = textwrap.dedent(
    """
    import json, sys
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from eventforge import MessageQueue, RPCServer
    from eventforge.transports.tcp import TCPServerTransport
    from eventforge_observers.otel import Tracing

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = Tracing(tracer_provider=provider)
    transport = TCPServerTransport(host="127.0.0.1", port=0)
    transport.start()
    queue = MessageQueue(transport=tracing.instrument(transport))
    server = RPCServer(queue, service_name="calculator")
    server.add_method("add", lambda a, b: a + b)
    server.serve(blocking=False)
    print(transport.url, flush=True)
    sys.stdin.readline()  # the client says when it is done
    server.stop()
    queue.close()
    print(json.dumps([
        {"name": s.name, "kind": s.kind.name, "trace": s.context.trace_id,
         "span": s.context.span_id, "parent": s.parent.span_id if s.parent else None}
        for s in exporter.get_finished_spans()
    ]), flush=True)
    """
)


def spans_of(exporter: InMemorySpanExporter) -> list[dict[str, Any]]:
    return [
        {
            "name": s.name,
            "kind": s.kind.name,
            "trace": s.context.trace_id,
            "span": s.context.span_id,
            "parent": s.parent.span_id if s.parent else None,
        }
        for s in exporter.get_finished_spans()
    ]


def test_rpc_over_tcp_between_processes_is_one_trace() -> None:
    try:
        from eventforge.transports.tcp import TCPClientTransport
    except ImportError as exc:
        pytest.skip(f"the tcp transport is not available: {exc}")

    child = subprocess.Popen(
        [sys.executable, "-c", SERVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = Tracing(tracer_provider=provider)
    try:
        assert child.stdout is not None
        assert child.stdin is not None
        url = child.stdout.readline().strip()
        assert url.startswith("tcp://"), url
        host, port = url.removeprefix("tcp://").rsplit(":", 1)
        transport = TCPClientTransport(host=host, port=int(port))
        transport.connect()
        queue = MessageQueue(transport=tracing.instrument(transport))
        try:
            assert RPCClient(queue, service_name="calculator", timeout=10).call("add", 2, 3) == 5
        finally:
            queue.close()
        child.stdin.write("done\n")
        child.stdin.flush()
        remote = json.loads(child.stdout.readline())
    finally:
        if child.stdin is not None:
            child.stdin.close()  # ends the child's wait even when the test failed early
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()
    local = spans_of(exporter)

    assert len({s["trace"] for s in local + remote}) == 1
    call = next(s for s in local if s["kind"] == "CLIENT")
    serve = next(s for s in remote if s["kind"] == "SERVER")
    reply = next(s for s in remote if s["kind"] == "PRODUCER")
    reply_received = next(s for s in local if s["kind"] == "CONSUMER")
    assert call["name"] == serve["name"] == "calculator/add"
    assert call["parent"] is None
    assert serve["parent"] == call["span"]
    assert reply["parent"] == serve["span"]
    assert reply_received["parent"] == reply["span"]
    assert tracing.open_requests == 0
