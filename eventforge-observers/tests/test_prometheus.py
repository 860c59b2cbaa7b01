"""Prometheus: counters and histograms read back from a private registry."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import urllib.request

import pytest

pytest.importorskip("prometheus_client")

from eventforge import Message, MessageQueue, observe
from eventforge_observers.prometheus import PrometheusMetrics
from prometheus_client import CollectorRegistry


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    sample = registry.get_sample_value(name, labels)
    return 0.0 if sample is None else sample


def test_published_delivered_failed_and_handler_durations(registry: CollectorRegistry) -> None:
    metrics = PrometheusMetrics(registry, patterns=["orders.*"])
    queue = metrics.queue()
    got: list[Message] = []
    queue.subscribe("orders.*", got.append)

    def picky(message: Message) -> None:
        if message.payload == "bad":
            raise ValueError("bad order")

    queue.subscribe("orders.*", picky)
    try:
        queue.publish("orders.new", "good")
        queue.publish("orders.paid", "bad")
        queue.publish("audit.log", "x")
    finally:
        queue.close()
    assert len(got) == 2
    assert (
        value(registry, "eventforge_messages_published_total", topic="orders.*", transport="memory")
        == 2
    )
    assert (
        value(registry, "eventforge_messages_published_total", topic="other", transport="memory")
        == 1
    )
    assert (
        value(registry, "eventforge_messages_delivered_total", topic="orders.*", transport="memory")
        == 4
    )
    assert (
        value(registry, "eventforge_messages_failed_total", topic="orders.*", transport="memory")
        == 1
    )
    count = value(
        registry, "eventforge_handler_duration_seconds_count", topic="orders.*", transport="memory"
    )
    assert count == 4


@pytest.mark.parametrize("installed", ["instrument", "middleware"])
def test_deliveries_and_handler_failures_share_one_topic_label(
    registry: CollectorRegistry, installed: str
) -> None:
    """A wildcard subscription's failure is counted under the label its delivery is: failed and
    delivered of one topic line up, however the metrics are installed."""
    metrics = PrometheusMetrics(registry)  # no patterns: the label is the topic itself
    if installed == "instrument":
        queue, transport = metrics.queue(), "memory"
    else:
        queue, transport = MessageQueue(middleware=[metrics.middleware()]), "queue"

    def picky(message: Message) -> None:
        if message.payload == "bad":
            raise ValueError("bad order")

    queue.subscribe("orders.*", picky)
    try:
        queue.publish("orders.new", "good")
        queue.publish("orders.paid", "bad")
    finally:
        queue.close()
    for topic, failed in (("orders.new", 0), ("orders.paid", 1)):
        labels = {"topic": topic, "transport": transport}
        assert value(registry, "eventforge_messages_delivered_total", **labels) == 1
        assert value(registry, "eventforge_messages_failed_total", **labels) == failed
        assert value(registry, "eventforge_handler_duration_seconds_count", **labels) == 1
    text = metrics.exposition().decode()
    assert 'topic="orders.*"' not in text, "a series is labelled by the subscription pattern"


def test_rpc_durations_on_both_sides_and_failures(registry: CollectorRegistry) -> None:
    from eventforge import RPCClient, RPCServer
    from eventforge.errors import RemoteError

    metrics = PrometheusMetrics(registry)
    queue = MessageQueue(transport=metrics.instrument())
    server = RPCServer(queue, service_name="calc")
    server.add_method("add", lambda a, b: a + b)

    def fail() -> None:
        raise ValueError("no")

    server.add_method("fail", fail)
    server.serve(blocking=False)
    client = RPCClient(queue, service_name="calc")
    try:
        assert client.call("add", 1, 2) == 3
        assert client.call("add", 3, 4) == 7
        with pytest.raises(RemoteError):
            client.call("fail")
    finally:
        server.stop()
        queue.close()
    name = "eventforge_rpc_duration_seconds_count"
    assert value(registry, name, method="calc/add", side="client", transport="memory") == 2
    assert value(registry, name, method="calc/add", side="server", transport="memory") == 2
    assert (
        value(registry, "eventforge_rpc_failed_total", method="calc/fail", transport="memory") == 1
    )
    assert (
        value(registry, "eventforge_rpc_failed_total", method="calc/add", transport="memory") == 0
    )
    assert (
        value(registry, "eventforge_messages_published_total", topic="_inbox", transport="memory")
        == 3
    )
    assert metrics.open_requests == 0


def test_task_durations_by_outcome(registry: CollectorRegistry) -> None:
    metrics = PrometheusMetrics(registry)

    @observe(metrics.observer())
    def job(fail: bool) -> None:
        if fail:
            raise RuntimeError("x")

    job(False)
    job(False)
    with pytest.raises(RuntimeError):
        job(True)
    name = job.__qualname__
    assert value(registry, "eventforge_task_duration_seconds_count", task=name, outcome="ok") == 2
    assert (
        value(registry, "eventforge_task_duration_seconds_count", task=name, outcome="error") == 1
    )


def test_work_queue_retries_and_dead_letters_are_scraped(registry: CollectorRegistry) -> None:
    from eventforge import RetryPolicy, WorkQueue

    metrics = PrometheusMetrics(registry)
    work = WorkQueue("jobs", retry=RetryPolicy(max_attempts=2, initial_backoff=0.0, jitter=0.0))
    metrics.watch_work_queue(work)
    try:
        work.put({"n": 1})

        def always_fails(delivery: object) -> None:
            raise ValueError("broken job")

        work.process(always_fails, max_items=2, timeout=2.0)
    finally:
        work.close()
    assert value(registry, "eventforge_work_queue_retried_total", queue="jobs") == 1
    assert value(registry, "eventforge_work_queue_dead_lettered_total", queue="jobs") == 1
    assert value(registry, "eventforge_work_queue_dead_letters", queue="jobs") == 1


def test_exposition_over_http(registry: CollectorRegistry) -> None:
    metrics = PrometheusMetrics(registry)
    queue = metrics.queue()
    queue.publish("a.b", 1)
    queue.close()
    assert b"eventforge_messages_published_total" in metrics.exposition()
    server, thread = metrics.start_http_server(0)
    try:
        port = server.server_address[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            body = response.read()
    finally:
        server.shutdown()
        thread.join(5)
    assert b'eventforge_messages_published_total{topic="a.b",transport="memory"} 1.0' in body


def test_missing_prometheus_client_names_the_extra() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["prometheus_client"] = None
        try:
            import eventforge_observers.prometheus
        except ImportError as exc:
            print(exc)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'eventforge-observers[prometheus]'" in out.stdout


def test_an_rpc_call_never_answered_counts_as_failed(registry: CollectorRegistry) -> None:
    from eventforge import RPCClient
    from eventforge.errors import RPCTimeout

    metrics = PrometheusMetrics(registry, reply_timeout=0.0)
    queue = metrics.queue()
    # A listener that never answers, subscribed past the metrics (it is not measured itself).
    queue.transport.inner.subscribe("_rpc.absent", lambda m: None)  # type: ignore[attr-defined]
    client = RPCClient(queue, service_name="absent")
    try:
        for _ in range(2):
            with pytest.raises(RPCTimeout):
                client.call("ping", timeout=0.01)
    finally:
        queue.close()
    assert (
        value(registry, "eventforge_rpc_failed_total", method="absent/ping", transport="memory")
        == 1
    )
    assert metrics.open_requests == 1


def test_middleware_times_async_handlers_and_counts_their_failures(
    registry: CollectorRegistry,
) -> None:
    import asyncio
    import threading
    from collections.abc import Awaitable, Callable
    from typing import Any

    metrics = PrometheusMetrics(registry, patterns=["jobs.*"])
    both_done = threading.Barrier(3, timeout=10)

    class Finished:
        """Outermost on receive: runs after the metrics middleware has recorded the call."""

        async def on_receive_async(
            self, message: Message, handle: Callable[[Message], Awaitable[Any]]
        ) -> Any:
            try:
                return await handle(message)
            finally:
                threading.Thread(target=both_done.wait).start()

    queue = MessageQueue(middleware=[metrics.middleware(), Finished()])

    async def handler(message: Message) -> None:
        await asyncio.sleep(0)
        if message.payload == 2:
            raise ValueError("second job fails")

    queue.subscribe("jobs.*", handler)
    try:
        queue.publish("jobs.a", 1)
        queue.publish("jobs.b", 2)
        both_done.wait()
    finally:
        queue.close()
    labels = {"topic": "jobs.*", "transport": "queue"}
    assert value(registry, "eventforge_messages_published_total", **labels) == 2
    assert value(registry, "eventforge_messages_delivered_total", **labels) == 2
    assert value(registry, "eventforge_handler_duration_seconds_count", **labels) == 2
    assert value(registry, "eventforge_messages_failed_total", **labels) == 1
