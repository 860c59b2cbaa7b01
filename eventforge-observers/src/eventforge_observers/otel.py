"""OpenTelemetry tracing: one trace follows a message from publisher to handler and back.

:class:`Tracing` is an interceptor (:mod:`eventforge_observers.intercept`) and a source of
observers. Wrap the transport of every MessageQueue you want traced, and add
``tracing.observer()`` to tasks::

    tracing = Tracing()                      # uses the global TracerProvider
    queue = MessageQueue(transport=tracing.instrument(MemoryTransport()))

Spans (names follow the OpenTelemetry messaging and RPC conventions):

* ``<topic> publish`` (PRODUCER) for each publish; ``<topic> process`` (CONSUMER) for each
  delivery, a child of the publish span whose ``traceparent`` header it carries;
* ``<service>/<method>`` (CLIENT) for an RPC call or any ``request``, open until its reply
  arrives; ``<service>/<method>`` (SERVER) where the call is served;
* ``task <name>`` (INTERNAL) from ``tracing.observer()`` around ``@task`` / ``@observe`` calls.

The W3C ``traceparent`` (and ``tracestate``) header is injected into every outgoing message,
so the chain crosses processes on any transport that carries headers. A reply sent from a
thread or loop other than the one that received the request still joins the right trace: the
serving span is remembered by request id until the reply leaves.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from eventforge.message import Message
from eventforge.observing import CallEvent
from eventforge.transport import Transport

from . import __version__
from .intercept import BoundedMap, Callback, InterceptedTransport, intercept

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "eventforge_observers.otel needs OpenTelemetry, which is not installed. "
        "Install it with: pip install 'eventforge-observers[otel]'",
        name=exc.name,
    ) from exc

__all__ = ["Tracing", "TracingMiddleware", "TracingObserver"]

RPC_PREFIX = "_rpc."
INBOX_PREFIX = "_inbox."
MAX_OPEN = 10_000
"""How many requests awaiting a reply (and calls being served) are remembered at most."""


def _rpc_name(message: Message) -> str | None:
    """``service/method`` when ``message`` is an RPC call, else ``None``."""
    topic = message.topic
    if not topic.startswith(RPC_PREFIX):
        return None
    payload = message.payload
    method = payload.get("method") if isinstance(payload, dict) else None
    return f"{topic[len(RPC_PREFIX) :]}/{method or '?'}"


class Tracing:
    """Creates the spans of eventforge traffic with an OpenTelemetry tracer.

    ``tracer_provider`` defaults to the global one (``trace.set_tracer_provider``). The same
    instance may instrument many transports and be used by many threads. A request whose reply
    is not seen within ``reply_timeout`` seconds (or that is pushed out by ``max_open`` newer
    ones) has its CLIENT span ended with an error status when the next request is sent.
    """

    nonblocking = False
    """Ending a span runs the provider's span processors, which may export synchronously
    (``SimpleSpanProcessor``): deliveries it wraps stay off the transport's I/O thread."""

    def __init__(
        self,
        tracer_provider: Any = None,
        *,
        max_open: int = MAX_OPEN,
        reply_timeout: float = 300.0,
    ) -> None:
        self.tracer = trace.get_tracer("eventforge", __version__, tracer_provider=tracer_provider)
        self.propagator = TraceContextTextMapPropagator()
        self._awaiting_reply = BoundedMap(max_open, on_evict=self._abandon, max_age=reply_timeout)
        self._serving = BoundedMap(max_open, max_age=reply_timeout)

    # -- installing --------------------------------------------------------------------------

    def instrument(self, transport: Transport | None = None, *others: Any) -> InterceptedTransport:
        """Wrap ``transport`` (default: a new MemoryTransport) so its traffic is traced.

        ``others`` are further interceptors (a :class:`~eventforge_observers.prometheus.
        PrometheusMetrics`, say) to run inside the tracing one.
        """
        return intercept(transport, self, *others)

    def middleware(self) -> TracingMiddleware:
        """MessageQueue middleware tracing at the queue instead of the transport.

        ``MessageQueue(middleware=[tracing.middleware()])``: the ``process`` span wraps the
        handler itself, so ``threaded=True`` and ``async def`` handlers are covered for their
        whole run and a handler's exception is recorded on it. Replies are not seen by
        middleware, so a CLIENT span ends when the request has been sent. Use either this or
        :meth:`instrument` on one queue, not both.
        """
        return TracingMiddleware(self)

    def observer(self) -> TracingObserver:
        """An observer that opens a ``task <name>`` span around each observed call."""
        return TracingObserver(self)

    # -- interceptor ---------------------------------------------------------------------------

    def on_send(self, message: Message, send: Callable[[Message], None], transport: str) -> None:
        correlation = message.correlation_id
        parent = None
        if correlation is not None and not message.reply_to:
            parent = self._serving.pop(correlation)
        if message.reply_to:
            self._send_request(message, send, transport)
            return
        with self.tracer.start_as_current_span(
            f"{message.topic} publish",
            context=parent,
            kind=trace.SpanKind.PRODUCER,
            attributes=self._attributes(message, transport, "publish"),
        ):
            self.propagator.inject(message.headers)
            send(message)

    def _send_request(
        self, message: Message, send: Callable[[Message], None], transport: str
    ) -> None:
        name = _rpc_name(message) or f"{message.topic} request"
        span = self.tracer.start_span(
            name,
            kind=trace.SpanKind.CLIENT,
            attributes=self._attributes(message, transport, "request"),
        )
        self.propagator.inject(message.headers, context=trace.set_span_in_context(span))
        self._awaiting_reply.put(message.correlation_id or message.id, span)
        try:
            with trace.use_span(span, end_on_exit=False):
                send(message)
        except BaseException as exc:
            self._awaiting_reply.pop(message.correlation_id or message.id)
            span.record_exception(exc)
            span.set_status(trace.Status(trace.StatusCode.ERROR, str(exc)))
            span.end()
            raise

    def on_deliver(
        self, message: Message, callback: Callback, pattern: str, transport: str
    ) -> None:
        correlation = message.correlation_id
        if correlation is not None and not message.reply_to:
            client_span = self._awaiting_reply.pop(correlation)
            if client_span is not None:
                self._finish_client(client_span, message)
        parent = self.propagator.extract(message.headers)
        if message.reply_to:
            rpc = _rpc_name(message)
            name, kind = (
                (rpc, trace.SpanKind.SERVER)
                if rpc
                else (f"{pattern} process", trace.SpanKind.CONSUMER)
            )
        else:
            name, kind = f"{pattern} process", trace.SpanKind.CONSUMER
        with self.tracer.start_as_current_span(
            name,
            context=parent,
            kind=kind,
            attributes=self._attributes(message, transport, "process"),
        ) as span:
            if message.reply_to:
                self._serving.put(
                    message.correlation_id or message.id, trace.set_span_in_context(span)
                )
            callback(message)

    def on_request(
        self,
        message: Message,
        request: Callable[[Message, float], Message | None],
        timeout: float,
        transport: str,
    ) -> Message | None:
        name = _rpc_name(message) or f"{message.topic} request"
        with self.tracer.start_as_current_span(
            name,
            kind=trace.SpanKind.CLIENT,
            attributes=self._attributes(message, transport, "request"),
        ) as span:
            self.propagator.inject(message.headers)
            reply = request(message, timeout)
            if reply is None:
                span.set_status(trace.Status(trace.StatusCode.ERROR, "no reply before the timeout"))
            else:
                self._mark_reply(span, reply)
            return reply

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    def _attributes(message: Message, transport: str, operation: str) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "messaging.system": "eventforge",
            "messaging.destination.name": message.topic,
            "messaging.message.id": message.id,
            "messaging.operation": operation,
            "eventforge.transport": transport,
        }
        if message.correlation_id:
            attributes["messaging.message.conversation_id"] = message.correlation_id
        return attributes

    @staticmethod
    def _mark_reply(span: Any, reply: Message) -> None:
        payload = reply.payload
        if isinstance(payload, dict) and payload.get("ok") is False:
            error = payload.get("error") or {}
            span.set_status(
                trace.Status(trace.StatusCode.ERROR, f"{error.get('type')}: {error.get('message')}")
            )

    def _finish_client(self, span: Any, reply: Message) -> None:
        self._mark_reply(span, reply)
        span.end()

    @staticmethod
    def _abandon(span: Any) -> None:
        span.set_status(trace.Status(trace.StatusCode.ERROR, "no reply observed"))
        span.end()

    @property
    def open_requests(self) -> int:
        """Requests whose CLIENT span is still waiting for a reply."""
        return len(self._awaiting_reply)


class TracingMiddleware:
    """Queue middleware (``on_send`` / ``on_receive`` / ``on_receive_async``) opening spans.

    Spans and names are those of :class:`Tracing`'s transport instrumentation; see
    :meth:`Tracing.middleware` for what differs.
    """

    def __init__(self, tracing: Tracing) -> None:
        self.tracing = tracing

    def on_send(self, message: Message, send: Callable[[Message], None]) -> None:
        tracing = self.tracing
        parent = None
        if message.correlation_id is not None and not message.reply_to:
            parent = tracing._serving.pop(message.correlation_id)
        if message.reply_to:
            name, kind = _rpc_name(message) or f"{message.topic} request", trace.SpanKind.CLIENT
        else:
            name, kind = f"{message.topic} publish", trace.SpanKind.PRODUCER
        with tracing.tracer.start_as_current_span(
            name,
            context=parent,
            kind=kind,
            attributes=tracing._attributes(message, "", "publish"),
        ):
            tracing.propagator.inject(message.headers)
            send(message)

    def _start(self, message: Message) -> Any:
        tracing = self.tracing
        rpc = _rpc_name(message) if message.reply_to else None
        name, kind = (
            (rpc, trace.SpanKind.SERVER)
            if rpc
            else (f"{message.topic} process", trace.SpanKind.CONSUMER)
        )
        span = tracing.tracer.start_span(
            name,
            context=tracing.propagator.extract(message.headers),
            kind=kind,
            attributes=tracing._attributes(message, "", "process"),
        )
        if message.reply_to:
            tracing._serving.put(
                message.correlation_id or message.id, trace.set_span_in_context(span)
            )
        return span

    def on_receive(self, message: Message, handle: Callable[[Message], Any]) -> Any:
        with trace.use_span(self._start(message), end_on_exit=True):
            return handle(message)

    async def on_receive_async(
        self, message: Message, handle: Callable[[Message], Awaitable[Any]]
    ) -> Any:
        with trace.use_span(self._start(message), end_on_exit=True):
            return await handle(message)


class TracingObserver:
    """Observer opening a ``task <name>`` span around each call (``@task(on_execute=[...])``).

    The span is current while the call runs, so messages it publishes are its children.
    """

    def __init__(self, tracing: Tracing) -> None:
        self.tracing = tracing
        self._key = f"eventforge_observers.otel.{id(self)}"

    def before(self, event: CallEvent) -> None:
        span = self.tracing.tracer.start_span(
            f"task {event.name}",
            kind=trace.SpanKind.INTERNAL,
            attributes={"eventforge.tasks": event.name},
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        event.context[self._key] = (span, token)

    def after(self, event: CallEvent) -> None:
        self._finish(event)

    def on_error(self, event: CallEvent) -> None:
        self._finish(event)

    def _finish(self, event: CallEvent) -> None:
        opened = event.context.pop(self._key, None)
        if opened is None:
            return
        span, token = opened
        error = event.error
        if error is not None:
            span.record_exception(error)
            span.set_status(
                trace.Status(trace.StatusCode.ERROR, f"{type(error).__name__}: {error}")
            )
        otel_context.detach(token)
        span.end()
