"""Prometheus metrics for eventforge traffic, handlers, RPC, tasks and work queues.

:class:`PrometheusMetrics` is an interceptor (:mod:`eventforge_observers.intercept`): wrap a
transport with it and every message published or delivered through a MessageQueue on that
transport is counted and timed. Work queues are read at scrape time (their retry and
dead-letter counters), and ``metrics.observer()`` times ``@task`` / ``@observe`` calls::

    metrics = PrometheusMetrics()                 # the default prometheus_client registry
    queue = metrics.queue()                       # MessageQueue on an instrumented transport
    metrics.watch_work_queue(work_queue)
    metrics.start_http_server(9464)               # or generate_latest(metrics.registry)

Labels: ``topic`` is the same for every message metric (published, delivered, failed, handler
duration), whichever way the metrics are installed: the first of ``patterns`` that matches the
message's topic (``"other"`` when none does), or the topic itself when no ``patterns`` are
given (bounded cardinality is your choice of ``patterns``). So a topic's deliveries and its
handler failures always line up. Reply inboxes are labelled ``_inbox``. ``transport`` is the
transport's name.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

from eventforge.message import Message
from eventforge.observing import CallEvent
from eventforge.queue import MessageQueue
from eventforge.topics import topic_matches
from eventforge.transport import Transport

from .intercept import BoundedMap, Callback, InterceptedTransport, intercept

try:
    import prometheus_client
    from prometheus_client import CollectorRegistry, Counter, Histogram
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "eventforge_observers.prometheus needs prometheus-client, which is not installed. "
        "Install it with: pip install 'eventforge-observers[prometheus]'",
        name=exc.name,
    ) from exc

__all__ = ["PrometheusMetrics", "PrometheusMiddleware"]

RPC_PREFIX = "_rpc."
INBOX_PREFIX = "_inbox."
CACHE_LIMIT = 10_000
"""Labelled metric children cached per (topic, transport) before the cache starts over."""


class PrometheusMetrics:
    """Counters and histograms of eventforge activity, registered on ``registry``.

    Create one per registry (registering the same metric names twice is an error in
    prometheus-client). ``namespace`` prefixes every metric name. An RPC call whose reply is
    not seen within ``reply_timeout`` seconds counts in ``rpc_failed`` (noticed when the next
    call is sent).
    """

    nonblocking = True
    """Its hooks only count and time: hand-offs stay on the transport's I/O thread."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        namespace: str = "eventforge",
        patterns: Sequence[str] = (),
        buckets: Sequence[float] = Histogram.DEFAULT_BUCKETS,
        max_open: int = 10_000,
        reply_timeout: float = 300.0,
    ) -> None:
        self.registry = registry if registry is not None else prometheus_client.REGISTRY
        self.patterns = tuple(patterns)
        reg = self.registry
        self.published = Counter(
            "messages_published",
            "Messages published.",
            ["topic", "transport"],
            namespace=namespace,
            registry=reg,
        )
        self.delivered = Counter(
            "messages_delivered",
            "Messages delivered to a subscription.",
            ["topic", "transport"],
            namespace=namespace,
            registry=reg,
        )
        self.failed = Counter(
            "messages_failed",
            "Handler calls that raised.",
            ["topic", "transport"],
            namespace=namespace,
            registry=reg,
        )
        self.handler_duration = Histogram(
            "handler_duration_seconds",
            "Time to deliver a message to a subscription's handler.",
            ["topic", "transport"],
            namespace=namespace,
            registry=reg,
            buckets=buckets,
        )
        self.rpc_duration = Histogram(
            "rpc_duration_seconds",
            "RPC call time: client (until the reply) or server (serving).",
            ["method", "side", "transport"],
            namespace=namespace,
            registry=reg,
            buckets=buckets,
        )
        self.rpc_failed = Counter(
            "rpc_failed",
            "RPC calls whose reply was an error.",
            ["method", "transport"],
            namespace=namespace,
            registry=reg,
        )
        self.task_duration = Histogram(
            "task_duration_seconds",
            "Observed task / function call time.",
            ["task", "outcome"],
            namespace=namespace,
            registry=reg,
            buckets=buckets,
        )
        self._work_queues = _WorkQueueCollector(namespace)
        reg.register(self._work_queues)
        self._published_children: dict[tuple[str, str], Any] = {}
        self._delivery_cache: dict[tuple[str, str], tuple[Any, Any, Any]] = {}
        self._awaiting = BoundedMap(max_open, on_evict=self._no_reply, max_age=reply_timeout)

    # -- installing --------------------------------------------------------------------------

    def instrument(self, transport: Transport | None = None, *others: Any) -> InterceptedTransport:
        """Wrap ``transport`` (default: a new MemoryTransport) so its traffic is measured."""
        return intercept(transport, self, *others)

    def queue(self, transport: Transport | None = None, **options: Any) -> Any:
        """A MessageQueue on an instrumented ``transport`` whose handler failures are counted."""

        queue = MessageQueue(transport=self.instrument(transport), **options)
        self.count_handler_errors(queue)
        return queue

    def count_handler_errors(self, queue: Any) -> None:
        """Count ``queue``'s handler failures (chains any ``error_hook`` it already has)."""
        previous = queue.error_hook
        transport = queue.transport.name

        def error_hook(exc: BaseException, message: Message, handler: Callable[..., Any]) -> None:
            self._message_children(message.topic, transport)[2].inc()
            if previous is not None:
                previous(exc, message, handler)

        queue.error_hook = error_hook

    def watch_work_queue(self, work_queue: Any) -> None:
        """Export ``work_queue.stats`` (retried, dead-lettered, acked, pending...) at each scrape."""
        self._work_queues.add(work_queue)

    def middleware(self) -> PrometheusMiddleware:
        """MessageQueue middleware measuring handlers where they run.

        ``MessageQueue(middleware=[metrics.middleware()])`` counts sends and deliveries and
        times each handler's whole run (``threaded=True`` and ``async def`` handlers too) and
        counts the ones that raise, labelled by topic (see ``patterns``) with transport
        ``"queue"``. RPC client durations need the transport instrumentation (replies are not
        seen by middleware). Use either this or :meth:`instrument` on one queue, not both.
        """
        return PrometheusMiddleware(self)

    def observer(self) -> _TaskTimer:
        """An observer recording ``task_duration_seconds`` for each observed call."""
        return _TaskTimer(self.task_duration)

    def start_http_server(self, port: int, addr: str = "127.0.0.1") -> Any:
        """Serve ``/metrics`` for this registry on ``addr:port`` (a daemon thread)."""
        return prometheus_client.start_http_server(port, addr=addr, registry=self.registry)

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format (what ``/metrics`` serves)."""
        return bytes(prometheus_client.generate_latest(self.registry))

    # -- interceptor ---------------------------------------------------------------------------

    def _label(self, topic: str) -> str:
        if topic.startswith(INBOX_PREFIX):
            return "_inbox"
        if not self.patterns:
            return topic
        for pattern in self.patterns:
            if topic_matches(pattern, topic):
                return pattern
        return "other"

    def _published_child(self, topic: str, transport: str) -> Any:
        key = (topic, transport)
        child = self._published_children.get(key)
        if child is None:
            if len(self._published_children) >= CACHE_LIMIT:
                self._published_children.clear()  # many distinct topics: start over
            child = self.published.labels(self._label(topic), transport)
            self._published_children[key] = child
        return child

    def _message_children(self, topic: str, transport: str) -> tuple[Any, Any, Any]:
        """The delivered, handler-duration and failed children of ``topic``'s label."""
        key = (topic, transport)
        children = self._delivery_cache.get(key)
        if children is None:
            if len(self._delivery_cache) >= CACHE_LIMIT:
                self._delivery_cache.clear()  # many distinct topics: start over
            label = self._label(topic)
            children = self._delivery_cache[key] = (
                self.delivered.labels(label, transport),
                self.handler_duration.labels(label, transport),
                self.failed.labels(label, transport),
            )
        return children

    def on_send(self, message: Message, send: Callable[[Message], None], transport: str) -> None:
        if message.reply_to and message.topic.startswith(RPC_PREFIX):
            self._awaiting.put(
                message.correlation_id or message.id,
                (time.perf_counter(), _method(message), transport),
            )
        send(message)
        self._published_child(message.topic, transport).inc()

    def on_deliver(
        self, message: Message, callback: Callback, pattern: str, transport: str
    ) -> None:
        correlation = message.correlation_id
        if correlation is not None and not message.reply_to:
            started = self._awaiting.pop(correlation)
            if started is not None:
                self._rpc_done(started, message, "client", transport)
        delivered, duration, _ = self._message_children(message.topic, transport)
        start = time.perf_counter()
        try:
            callback(message)
        finally:
            elapsed = time.perf_counter() - start
            delivered.inc()
            duration.observe(elapsed)
            if message.reply_to and message.topic.startswith(RPC_PREFIX):
                self.rpc_duration.labels(_method(message), "server", transport).observe(elapsed)

    def on_request(
        self,
        message: Message,
        request: Callable[[Message, float], Message | None],
        timeout: float,
        transport: str,
    ) -> Message | None:
        start = time.perf_counter()
        reply = request(message, timeout)
        self._published_child(message.topic, transport).inc()
        if message.topic.startswith(RPC_PREFIX):
            if reply is None:
                self.rpc_failed.labels(_method(message), transport).inc()
            else:
                self._rpc_done((start, _method(message), transport), reply, "client", transport)
        return reply

    def _no_reply(self, started: tuple[float, str, str]) -> None:
        self.rpc_failed.labels(started[1], started[2]).inc()

    def _rpc_done(
        self, started: tuple[float, str, str], reply: Message, side: str, transport: str
    ) -> None:
        start, method, _ = started
        self.rpc_duration.labels(method, side, transport).observe(time.perf_counter() - start)
        payload = reply.payload
        if isinstance(payload, dict) and payload.get("ok") is False:
            self.rpc_failed.labels(method, transport).inc()

    @property
    def open_requests(self) -> int:
        """RPC calls sent whose reply has not been seen yet."""
        return len(self._awaiting)


def _method(message: Message) -> str:
    payload = message.payload
    method = payload.get("method") if isinstance(payload, dict) else None
    return f"{message.topic[len(RPC_PREFIX) :]}/{method or '?'}"


class PrometheusMiddleware:
    """Queue middleware feeding a :class:`PrometheusMetrics` (see its ``middleware()``)."""

    def __init__(self, metrics: PrometheusMetrics) -> None:
        self.metrics = metrics

    def on_send(self, message: Message, send: Callable[[Message], None]) -> None:
        send(message)
        self.metrics._published_child(message.topic, "queue").inc()

    def _children(self, message: Message) -> tuple[Any, Any, Any]:
        return self.metrics._message_children(message.topic, "queue")

    def on_receive(self, message: Message, handle: Callable[[Message], Any]) -> Any:
        delivered, duration, failed = self._children(message)
        start = time.perf_counter()
        try:
            return handle(message)
        except Exception:
            failed.inc()
            raise
        finally:
            delivered.inc()
            duration.observe(time.perf_counter() - start)

    async def on_receive_async(
        self, message: Message, handle: Callable[[Message], Awaitable[Any]]
    ) -> Any:
        delivered, duration, failed = self._children(message)
        start = time.perf_counter()
        try:
            return await handle(message)
        except Exception:
            failed.inc()
            raise
        finally:
            delivered.inc()
            duration.observe(time.perf_counter() - start)


class _TaskTimer:
    """Observer feeding ``task_duration_seconds`` with ``outcome`` ok / error."""

    def __init__(self, histogram: Histogram) -> None:
        self._histogram = histogram

    def before(self, event: CallEvent) -> None:
        """Nothing to do before a call."""

    def after(self, event: CallEvent) -> None:
        self._histogram.labels(event.name, "ok").observe(event.elapsed)

    def on_error(self, event: CallEvent) -> None:
        self._histogram.labels(event.name, "error").observe(event.elapsed)


class _WorkQueueCollector:
    """Reads the stats of watched work queues when Prometheus scrapes."""

    COUNTERS = ("acked", "retried", "dead_lettered", "handler_errors")
    GAUGES = ("pending", "in_flight", "dead_letters")

    def __init__(self, namespace: str) -> None:
        self._namespace = namespace
        self._queues: list[Any] = []

    def add(self, work_queue: Any) -> None:
        self._queues.append(work_queue)

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        prefix = f"{self._namespace}_work_queue"
        counters = {
            key: CounterMetricFamily(
                f"{prefix}_{key}", f"Work-queue items {key}.", labels=["queue"]
            )
            for key in self.COUNTERS
        }
        gauges = {
            key: GaugeMetricFamily(
                f"{prefix}_{key}", f"Work-queue items {key} now.", labels=["queue"]
            )
            for key in self.GAUGES
        }
        for work_queue in list(self._queues):
            stats = work_queue.stats
            for key, family in counters.items():
                if key in stats:
                    family.add_metric([work_queue.name], float(stats[key]))
            for key, gauge in gauges.items():
                if key in stats:
                    gauge.add_metric([work_queue.name], float(stats[key]))
        yield from counters.values()
        yield from gauges.values()
