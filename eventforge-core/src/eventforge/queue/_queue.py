"""MessageQueue: topic-keyed pub/sub and request/reply over any Transport.

The same API runs in-process (the default :class:`~eventforge.transports.memory.MemoryTransport`)
or across processes and machines by handing in another transport. Handlers are plain functions
or coroutines; they are isolated from the publisher and from each other.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, overload

from eventforge.config import connect, default_transport
from eventforge.dispatch import (
    Dispatcher,
    GroupBinding,
    Invoker,
    Worker,
    get_dispatcher,
    is_coroutine_handler,
    make_invoker,
)
from eventforge.dispatch.middleware import compose_send, resolve_middleware, wrap_handler
from eventforge.errors import TransportClosedError
from eventforge.events import EventValidationError, event_message, typed_subscription
from eventforge.message import Message, check_headers, new_message
from eventforge.queue._features import QueueFeatures
from eventforge.queue._inbox import Inbox
from eventforge.queue._requests import RequestReply
from eventforge.queue._routing import check_match, header_gate, unroutable_sender
from eventforge.topics import has_wildcards, validate_pattern, validate_topic
from eventforge.transport import (
    Capability,
    Counter,
    Transport,
    is_native,
    is_nonblocking,
    nonblocking,
    require_capability,
)

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["ErrorHook", "MessageQueue"]

log = logging.getLogger("eventforge.queue")

Handler = Callable[[Message], Any]
ErrorHook = Callable[[BaseException, Message, Callable[..., Any]], None]
# A handler takes one argument: the Message, or a typed event when its parameter is annotated
# with an @event class (``def on_order(order: OrderCreated) -> None``).
H = TypeVar("H", bound=Callable[[Any], Any])

DEFAULT_MAX_PENDING = 10_000
_queue_numbers = itertools.count(1)


class _Entry:
    """What :meth:`MessageQueue.unsubscribe` needs to undo one subscription."""

    __slots__ = ("binding", "handler", "subscription_id", "topic", "worker")

    def __init__(
        self,
        topic: str,
        handler: Handler,
        subscription_id: str | None,
        binding: GroupBinding | None,
        worker: Worker | None,
    ) -> None:
        self.topic = topic
        self.handler = handler
        self.subscription_id = subscription_id
        self.binding = binding
        self.worker = worker


def _dispatcher_name(dispatcher: str | Dispatcher | type[Dispatcher]) -> str:
    if isinstance(dispatcher, (Dispatcher, type)):
        return dispatcher.name
    resolved = get_dispatcher(dispatcher)
    resolved.close()
    return resolved.name


class MessageQueue(RequestReply, QueueFeatures):
    """Topic-keyed publish/subscribe plus request/reply over one :class:`Transport`.

    ``transport`` defaults to the configured one (:func:`eventforge.configure`,
    ``EVENTFORGE_TRANSPORT``, ``EVENTFORGE_CONFIG``), else a new in-process ``MemoryTransport``;
    a string is a transport name or URL resolved by :func:`eventforge.connect`. ``error_hook(exc, message,
    handler)`` is called whenever a handler raises (after the error is logged and counted).
    Closing the queue closes the transport too unless ``close_transport=False`` (use that when
    several queues share one transport).

    Delivery threads: plain-function handlers run in the thread the transport delivers on (for
    the memory transport, the publisher's own thread); coroutine handlers run on the event loop
    that was running when they subscribed, else on eventforge's shared background loop;
    ``threaded=True`` gives a handler its own thread with a bounded backlog.

    ``middleware`` is a list of interceptors (instances, registered names or ``"module:attr"``)
    run around every send and every handler (see :mod:`eventforge.middleware`); ``unroutable``
    is the policy for a publish nobody receives (see :mod:`eventforge.queue._routing`).
    """

    def __init__(
        self,
        transport: Transport | str | None = None,
        *,
        error_hook: ErrorHook | None = None,
        name: str | None = None,
        close_transport: bool = True,
        middleware: Sequence[object] | None = None,
        unroutable: str | Callable[[Message], Any] | None = None,
    ) -> None:
        if transport is None:
            transport = default_transport()
        elif isinstance(transport, str):
            transport = connect(transport)
        elif not isinstance(transport, Transport):
            raise TypeError(
                f"transport must be an eventforge Transport, got {type(transport).__name__}; "
                "build one with eventforge.connect(url) or a transport class"
            )
        self.transport = transport
        self.name = name or f"queue-{next(_queue_numbers)}"
        self.error_hook = error_hook
        self._close_transport = close_transport
        self._send: Callable[[Message], None] = transport.send
        self._native_request = transport.has(Capability.REQUEST_REPLY)
        self._transport_groups = transport.has(Capability.GROUPS)
        self._inline_async = transport.has(Capability.ZERO_COPY)
        self._replies_inline = transport.has(Capability.NONBLOCKING_INLINE)
        self._lock = threading.RLock()
        self._entries: dict[str, _Entry] = {}
        self._groups: dict[tuple[str, str], GroupBinding] = {}
        self._caches = weakref.WeakSet()
        self._handler_ids = itertools.count(1)
        self._inbox: Inbox | None = None
        self._closed = False
        self._published = Counter()
        self._delivered = Counter()
        self._handler_errors = Counter()
        self._dropped = Counter()
        self._init_requests()
        self._filtered = Counter()
        self._rejected = Counter()
        self._unroutable = Counter()
        self._bump_published = self._published.bump
        self._warned_delivery_request = False
        self._middleware: list[object] = resolve_middleware(middleware)
        self._unroutable_policy = unroutable
        self._rebuild_send()

    # -- pub/sub ---------------------------------------------------------------------------

    def publish(self, topic: str | object, payload: Any = None, **headers: Any) -> str:
        """Publish ``payload`` to ``topic``; return the message id. Headers are keywords.

        ``queue.publish(event)`` publishes an ``@event`` instance on its event's topic.
        """
        if self._closed:
            raise self._closed_error()
        if topic.__class__ is not str:
            topic, payload = event_message(topic, payload, headers)
        if headers:
            check_headers(headers)
        message = new_message(validate_topic(topic), payload, headers)
        self._publish_send(message)
        self._bump_published()
        return message.id

    async def publish_async(self, topic: str | object, payload: Any = None, **headers: Any) -> str:
        """Like :meth:`publish`, without blocking the running event loop."""
        if self._closed:
            raise self._closed_error()
        if topic.__class__ is not str:
            topic, payload = event_message(topic, payload, headers)
        if headers:
            check_headers(headers)
        message = new_message(validate_topic(topic), payload, headers)
        if self._publish_send is self._send:
            await self._send_async(message)
        elif self._inline_async:
            self._publish_send(message)
        else:
            await asyncio.to_thread(self._publish_send, message)
        self._bump_published()
        return message.id

    def subscribe(
        self,
        topic: str | type,
        handler: Callable[..., Any],
        *,
        group: str | None = None,
        durable: str | None = None,
        dispatcher: str | Dispatcher | None = None,
        threaded: bool = False,
        max_pending: int | None = None,
        match: dict[str, Any] | None = None,
        match_mode: str = "all",
        on_discard: Callable[[Message], Any] | None = None,
    ) -> str:
        """Call ``handler(message)`` for each message matching ``topic``; return a handler id.

        ``topic`` may use ``*`` (one segment) and ``**`` (any number of segments). With
        ``group``, each message goes to one member of the group instead of to every handler
        (competing consumers); ``dispatcher`` names how the member is chosen (default
        ``"round_robin"``). When the transport declares groups, the group also spans queues
        and processes on that transport; otherwise it is local to this queue. ``threaded=True``
        (or a ``max_pending`` bound) runs the handler on its own thread so it never delays
        the publisher; messages beyond ``max_pending`` waiting are dropped and counted, as are
        those still waiting when the subscription ends, and each is passed to ``on_discard``
        (so a server can tell the sender its request never ran). ``on_discard`` runs on the
        thread that hands the message over, which may be the transport's I/O thread or event
        loop: keep it short and never let it wait (a send is fine).

        Typed events: ``topic`` may be an ``@event`` class (its topic is the event name), and
        a handler whose first parameter is annotated with an ``@event`` class receives that
        event, validated (see :mod:`eventforge.events`). ``match`` keeps only messages whose
        headers equal all (``match_mode="all"``) or any (``"any"``) of the given values; the
        rest are counted in ``stats["filtered"]`` (see :mod:`eventforge.queue._routing`).

        ``durable="name"`` makes a named subscription on a transport that declares
        :attr:`~eventforge.transport.Capability.DURABLE_SUBSCRIPTIONS` (``local://``): it keeps
        its backlog while no process listens and across restarts, and every handler attached
        to the name (in any process) competes for its messages.
        """
        self._check_open()
        if durable is not None:
            require_capability(
                self.transport, Capability.DURABLE_SUBSCRIPTIONS, feature="subscribe(durable=...)"
            )
            if not isinstance(durable, str) or not durable:
                raise ValueError(f"durable must be a non-empty str, got {durable!r}")
        if not callable(handler):
            raise TypeError(
                f"handler must be callable (a function or coroutine function taking the message), "
                f"got {type(handler).__name__}"
            )
        topic, wrapped = self._prepare(topic, handler)
        validate_pattern(topic)
        if match is not None:
            check_match(match, match_mode)
        if has_wildcards(topic):
            require_capability(self.transport, Capability.WILDCARDS, feature=f"pattern {topic!r}")
        if dispatcher is not None and group is None:
            raise ValueError(
                "dispatcher= chooses a member of a group; pass group='name' too (without a "
                "group every handler receives every message)"
            )
        handler_id = f"{self.name}.h{next(self._handler_ids)}"
        use_worker = threaded or max_pending is not None
        report: Callable[[BaseException, Message, Callable[..., Any]], None] = self._report_error
        if wrapped is not handler:

            def report_original(
                exc: BaseException, message: Message, _: Callable[..., Any]
            ) -> None:
                self._report_error(exc, message, handler)

            report = report_original

        invoke = make_invoker(
            wrapped,
            report_error=report,
            delivered=self._delivered,
            dropped=self._dropped,
            expired=self._expired,
            # Network transports call handlers on their own reader thread: mark it, so that
            # a blocking request made there is reported instead of silently timing out.
            delivery_mark=None if use_worker or self._inline_async else self.transport,
        )
        worker: Worker | None = None
        entry_point: Invoker = invoke
        if use_worker:
            worker = Worker(
                invoke,
                max_pending if max_pending is not None else DEFAULT_MAX_PENDING,
                f"eventforge-{handler_id}",
                self._dropped,
                on_discard,
            )
            entry_point = worker.submit
        if match is not None:
            gate = header_gate(match, match_mode, entry_point, self._filtered.bump)
            entry_point = nonblocking(gate) if is_nonblocking(entry_point) else gate
        try:
            if group is None:
                if durable is None:
                    subscription_id = self.transport.subscribe(topic, entry_point)
                else:
                    subscription_id = self.transport.subscribe(  # type: ignore[call-arg]
                        topic, entry_point, durable=durable
                    )
                entry = _Entry(topic, handler, subscription_id, None, worker)
            else:
                binding, worker = self._join_group(
                    topic, group, dispatcher, handler_id, entry_point, worker, on_discard, durable
                )
                entry = _Entry(topic, handler, None, binding, worker)
        except BaseException:
            if worker is not None:
                worker.stop()
            raise
        with self._lock:
            closed = self._closed
            if not closed:
                self._entries[handler_id] = entry
        if closed:
            # close() ran while this subscription was being made: it never saw the entry.
            if entry.binding is not None:
                entry.binding.remove(handler_id)  # close() released the binding itself
            self._release(entry, entry.subscription_id)
            raise self._closed_error("while subscribing")
        return handler_id

    @overload
    def on(self, topic: str | type, handler: None = None, **options: Any) -> Callable[[H], H]: ...

    @overload
    def on(self, topic: str | type, handler: H, **options: Any) -> H: ...

    def on(
        self, topic: str | type, handler: H | None = None, **options: Any
    ) -> H | Callable[[H], H]:
        """Subscribe as a decorator (``@queue.on("a.b")``) or directly (``queue.on("a.b", fn)``).

        Returns the handler unchanged; its handler id is stored on it as ``handler_id`` when
        the function allows attributes. ``options`` are those of :meth:`subscribe`.
        """

        def decorate(fn: H) -> H:
            handler_id = self.subscribe(topic, fn, **options)
            try:
                fn.handler_id = handler_id  # type: ignore[attr-defined]
            except (AttributeError, TypeError):
                pass
            return fn

        if handler is not None:
            return decorate(handler)
        return decorate

    def unsubscribe(self, handler_id: str) -> bool:
        """Stop a subscription made by :meth:`subscribe`; return whether it existed."""
        with self._lock:
            entry = self._entries.pop(handler_id, None)
            if entry is None:
                return False
            binding = entry.binding
            transport_sub: str | None = entry.subscription_id
            if binding is not None:
                binding.remove(handler_id)
                transport_sub = None
                if (
                    not binding.members
                    and self._groups.get((binding.pattern, binding.group)) is binding
                ):
                    del self._groups[(binding.pattern, binding.group)]
                    transport_sub = binding.subscription_id
                else:
                    binding = None
        self._release(entry, transport_sub)
        if binding is not None:
            binding.close()
        return True

    def receive(self, topic: str, timeout: float | None = None) -> Message | None:
        """Block for the next message on ``topic`` (a pattern); ``None`` after ``timeout``."""
        self._check_open()
        validate_pattern(topic)
        return self.transport.receive(topic, timeout)

    async def receive_async(self, topic: str, timeout: float | None = None) -> Message | None:
        """Await the next message on ``topic`` without blocking the running event loop."""
        self._check_open()
        validate_pattern(topic)
        return await self.transport.receive_async(topic, timeout)

    # -- lifecycle and introspection ---------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    @property
    def stats(self) -> dict[str, Any]:
        """A snapshot of the queue's counters.

        ``published`` (messages sent, requests and replies included), ``delivered`` (handler
        calls), ``handler_errors``, ``dropped`` (messages a handler never saw: full backlog of a
        threaded handler, a group with no members left, a closed event loop), ``requests``,
        ``requests_timed_out``, ``late_replies``, ``no_responders`` (requests that found nobody
        subscribed), ``expired_requests`` (requests that reached a handler of this queue after
        their deadline: not run), ``pending_requests``, ``filtered`` (messages a header match
        kept from a handler), ``rejected`` (messages that failed event validation),
        ``unroutable`` (publishes nobody received), ``subscriptions`` and ``transport`` (the
        transport's own counters).
        """
        return {
            "published": self._published.value,
            "delivered": self._delivered.value,
            "handler_errors": self._handler_errors.value,
            "dropped": self._dropped.value,
            **self._request_stats(),
            "filtered": self._filtered.value,
            "rejected": self._rejected.value,
            "unroutable": self._unroutable.value,
            "subscriptions": len(self._entries),
            "transport": self.transport.stats(),
        }

    def close(self) -> None:
        """Stop every subscription, wake pending requests and cache waiters, close the transport.

        Idempotent.
        """
        if self._shut_down() and self._close_transport:
            self.transport.close()

    async def close_async(self) -> None:
        """:meth:`close` for coroutines: the transport is closed with its own ``close_async``
        when it has one (a transport living on the running loop must be closed that way),
        else in a worker thread. ``async with`` closes the queue this way."""
        if self._shut_down() and self._close_transport:
            await self.transport.close_async()

    def _shut_down(self) -> bool:
        """Release everything but the transport; ``False`` when already closed."""
        with self._lock:
            if self._closed:
                return False
            self._closed = True
            entries = list(self._entries.values())
            self._entries.clear()
            groups = list(self._groups.values())
            self._groups.clear()
            inbox = self._inbox
            caches = list(self._caches)
        for entry in entries:
            self._release(entry, entry.subscription_id)
        for binding in groups:
            if binding.subscription_id is not None:
                self._unsubscribe_transport(binding.subscription_id)
            binding.close()
        if inbox is not None:
            if inbox.subscription_id is not None:
                self._unsubscribe_transport(inbox.subscription_id)
            inbox.cancel_all()
        for cache in caches:
            cache.close()  # wakes its waiting callers
        return True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> MessageQueue:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close_async()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._entries)} subscriptions"
        return f"MessageQueue(name={self.name!r}, transport={self.transport.name!r}, {state})"

    # -- internals ----------------------------------------------------------------------------

    def _closed_error(self, when: str = "") -> TransportClosedError:
        suffix = f" {when}" if when else ""
        return TransportClosedError(
            f"MessageQueue {self.name!r} was closed{suffix}; create a new queue"
        )

    def _check_open(self) -> None:
        if self._closed:
            raise self._closed_error()

    async def _send_async(self, message: Message) -> None:
        if self._inline_async:
            self._send(message)
            return
        native = self.transport.send_async if is_native(self.transport, "send_async") else None
        if native is None:
            await asyncio.to_thread(self._send, message)
        elif self._middleware:
            outgoing: list[Message] = []
            compose_send(self._middleware, outgoing.append)(message)
            for item in outgoing:
                await native(item)
        else:
            await native(message)

    def _rebuild_send(self) -> None:
        send = self.transport.send
        self._send = compose_send(self._middleware, send) if self._middleware else send
        self._publish_send = self._send
        if self._unroutable_policy is not None:
            routed = unroutable_sender(
                self.transport, self._unroutable_policy, self._unroutable.bump
            )
            if routed is not None:
                self._publish_send = compose_send(self._middleware, routed)

    def _prepare(
        self, topic: str | type, handler: Callable[..., Any]
    ) -> tuple[str, Callable[..., Any]]:
        """Resolve an event-class topic and wrap the handler (events, middleware) once."""
        topic, wrapped = typed_subscription(topic, handler)
        if self._middleware:
            wrapped = wrap_handler(self._middleware, wrapped, is_coroutine_handler(wrapped))
        return topic, wrapped

    def _join_group(
        self,
        topic: str,
        group: str,
        dispatcher: str | Dispatcher | None,
        handler_id: str,
        invoke: Invoker,
        worker: Worker | None = None,
        on_discard: Callable[[Message], Any] | None = None,
        durable: str | None = None,
    ) -> tuple[GroupBinding, Worker | None]:
        """Add a member to the group's binding (made and subscribed on first use).

        Returns the binding and the member's worker: a plain member joining a group whose
        binding the transport runs on its I/O thread gets a thread of its own here, so that
        it never runs there (members may join in any order).
        """
        if not isinstance(group, str) or not group:
            raise ValueError(f"group must be a non-empty str, got {group!r}")
        key = (topic, group)
        with self._lock:
            self._check_open()
            binding = self._groups.get(key)
            if binding is not None:
                if dispatcher is not None and _dispatcher_name(dispatcher) != (
                    binding.dispatcher.name
                ):
                    raise ValueError(
                        f"group {group!r} on {topic!r} already uses the "
                        f"{binding.dispatcher.name!r} dispatcher; every member of a group "
                        "must use the same one"
                    )
                if binding.nonblocking and not is_nonblocking(invoke):
                    worker = Worker(
                        invoke, DEFAULT_MAX_PENDING, f"eventforge-{handler_id}", self._dropped,
                        on_discard,
                    )  # fmt: skip
                    invoke = worker.submit
                binding.add(handler_id, invoke, worker)
                return binding, worker
            binding = GroupBinding(
                topic,
                group,
                get_dispatcher(dispatcher),
                self._dropped,
                # Only where the transport runs hand-offs on its I/O thread does it matter.
                nonblocking=self._replies_inline and is_nonblocking(invoke),
            )
            binding.owns_dispatcher = not isinstance(dispatcher, Dispatcher)
            binding.add(handler_id, invoke, worker)
            self._groups[key] = binding
            # Subscribing under the lock keeps a concurrent member from racing a half-made
            # binding; transports must not call back into this queue from ``subscribe``.
            try:
                if durable is not None:
                    binding.subscription_id = self.transport.subscribe_durable(
                        topic, binding.entry_point, group=group, durable=durable
                    )
                elif self._transport_groups:
                    binding.subscription_id = self.transport.subscribe(
                        topic, binding.entry_point, group=group
                    )
                else:
                    binding.subscription_id = self.transport.subscribe(topic, binding.entry_point)
            except BaseException:
                del self._groups[key]
                binding.close()
                raise
            return binding, worker

    def _release(self, entry: _Entry, transport_sub: str | None) -> None:
        if transport_sub is not None:
            self._unsubscribe_transport(transport_sub)
        if entry.worker is not None:
            entry.worker.stop()

    def _unsubscribe_transport(self, subscription_id: str) -> None:
        try:
            self.transport.unsubscribe(subscription_id)
        except TransportClosedError:
            pass
        except Exception:
            log.exception("transport failed to unsubscribe %r", subscription_id)

    def _report_error(
        self, exc: BaseException, message: Message, handler: Callable[..., Any]
    ) -> None:
        if isinstance(exc, EventValidationError):
            self._rejected.bump()
            log.warning("%s; the handler was not called", exc)
            self._call_error_hook(exc, message, handler)
            return
        self._handler_errors.bump()
        log.error(
            "handler %s raised on topic %r (message %s)",
            getattr(handler, "__qualname__", repr(handler)),
            message.topic,
            message.id,
            exc_info=exc,
        )
        self._call_error_hook(exc, message, handler)

    def _call_error_hook(
        self, exc: BaseException, message: Message, handler: Callable[..., Any]
    ) -> None:
        hook = self.error_hook
        if hook is not None:
            try:
                hook(exc, message, handler)
            except Exception:
                log.exception("error_hook raised while handling an error; ignored")
