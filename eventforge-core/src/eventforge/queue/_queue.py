"""MessageQueue: topic-keyed pub/sub and request/reply over any Transport.

The same API runs in-process (the default :class:`~eventforge.transports.memory.MemoryTransport`)
or across processes and machines by handing in another transport. Handlers are plain functions
or coroutines; they are isolated from the publisher and from each other.

A queue is composed of parts that share one :class:`~eventforge.queue._core.QueueCore`: its
subscriptions (:class:`~eventforge.queue._subscriptions.Subscriptions`) and its requests
(:class:`~eventforge.queue._requests.Requests`); the queue itself publishes and gives them one API.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import weakref
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar, overload

from eventforge.config import connect, default_transport
from eventforge.deadlines import due_time
from eventforge.dispatch import Dispatcher
from eventforge.dispatch.middleware import compose_send, resolve_middleware
from eventforge.errors import UnsupportedCapabilityError
from eventforge.events import event_message, listener_info, typed_handler
from eventforge.message import Message, check_headers, new_message
from eventforge.queue._core import ErrorHook, QueueCore
from eventforge.queue._requests import Requests
from eventforge.queue._subscriptions import HandlerStatus, Subscriptions
from eventforge.queue.cache import SubscriptionCache
from eventforge.queue.rendezvous import rendezvous_for
from eventforge.topics import known_topics, validate_pattern, validate_topic
from eventforge.transport import Capability, Transport

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["ErrorHook", "HandlerStatus", "MessageQueue"]

# A handler takes one argument: the Message, or a typed event when its parameter is annotated
# with an @event class (``def on_order(order: OrderCreated) -> None``).
H = TypeVar("H", bound=Callable[[Any], Any])

_queue_numbers = itertools.count(1)


class MessageQueue:
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
        self._close_transport = close_transport
        self._core = core = QueueCore(transport, self.name, error_hook, middleware, unroutable)
        self._subscriptions = Subscriptions(core)
        self._requests = Requests(core)
        self._caches: weakref.WeakSet[SubscriptionCache] = weakref.WeakSet()
        self._bump_published = core.bump_published

    @property
    def error_hook(self) -> ErrorHook | None:
        """Called as ``error_hook(exc, message, handler)`` whenever a handler raises."""
        return self._core.error_hook

    @error_hook.setter
    def error_hook(self, hook: ErrorHook | None) -> None:
        self._core.error_hook = hook

    # -- pub/sub ---------------------------------------------------------------------------

    def publish(
        self,
        topic: str | object,
        payload: Any = None,
        *,
        delay: float | None = None,
        not_before: datetime | float | None = None,
        **headers: Any,
    ) -> str:
        """Publish ``payload`` to ``topic``; return the message id. Headers are keywords.

        ``queue.publish(event)`` publishes an ``@event`` instance on its event's topic.
        ``delay`` (seconds) or ``not_before`` (an aware ``datetime`` or a Unix time) hold the
        message until then, on a transport that declares
        :attr:`~eventforge.transport.Capability.DELAYED_SEND` (memory); elsewhere they raise
        :class:`~eventforge.errors.UnsupportedCapabilityError` at once. They are keywords of
        their own and never become headers.
        """
        core = self._core
        if core.closed:
            raise core.closed_error()
        if topic.__class__ is not str:
            topic, payload = event_message(topic, payload, headers)
        if headers:
            check_headers(headers)
        if topic not in known_topics:  # a known topic is valid: no call on the publish path
            validate_topic(topic)
        message = new_message(topic, payload, headers)
        if delay is None and not_before is None:
            core.publish_send(message)
        else:
            self._publish_later(message, delay, not_before)
        self._bump_published()
        return message.id

    async def publish_async(
        self,
        topic: str | object,
        payload: Any = None,
        *,
        delay: float | None = None,
        not_before: datetime | float | None = None,
        **headers: Any,
    ) -> str:
        """Like :meth:`publish`, without blocking the running event loop."""
        core = self._core
        if core.closed:
            raise core.closed_error()
        if topic.__class__ is not str:
            topic, payload = event_message(topic, payload, headers)
        if headers:
            check_headers(headers)
        message = new_message(validate_topic(topic), payload, headers)
        if delay is not None or not_before is not None:
            self._publish_later(message, delay, not_before)
        elif core.publish_send is core.send:
            await core.send_async(message)
        elif core.inline_async:
            core.publish_send(message)
        else:
            await asyncio.to_thread(core.publish_send, message)
        self._bump_published()
        return message.id

    def _publish_later(
        self, message: Message, delay: float | None, not_before: datetime | float | None
    ) -> None:
        """Hand a delayed publish to the transport, through the send middleware now."""
        due = due_time(delay, not_before)
        core = self._core
        if due is None or due <= time.time():  # no delay, or a time already past
            core.publish_send(message)
            return
        transport = self.transport
        if not transport.has(Capability.DELAYED_SEND):
            raise UnsupportedCapabilityError(
                f"publish(delay=...) needs a transport that holds messages for later (the "
                f"{Capability.DELAYED_SEND!r} capability: memory); {transport.name!r} does not. "
                "For durable delayed work use WorkQueue.put(delay=) (memory, local://, Redis, "
                "AMQP, SQL)",
                transport=transport.name,
                capability=Capability.DELAYED_SEND,
            )

        def later(outgoing: Message) -> None:
            transport.send_later(outgoing, due)

        (compose_send(core.middleware, later) if core.middleware else later)(message)

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
        return self._subscriptions.add(
            topic,
            handler,
            group=group,
            durable=durable,
            dispatcher=dispatcher,
            threaded=threaded,
            max_pending=max_pending,
            match=match,
            match_mode=match_mode,
            on_discard=on_discard,
        )

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

    def unsubscribe(
        self, handler_id: str, *, drain: float | None = None, discard_waiting: bool = False
    ) -> bool:
        """Stop a subscription made by :meth:`subscribe`; return whether it existed.

        A handler with a thread of its own (``threaded=True``) discards the messages waiting
        for it (counted as dropped, passed to ``on_discard``). With ``drain`` (seconds) it
        handles them first, for at most that long, and what is left then is discarded; with
        ``discard_waiting`` too, only the message being handled is waited for.
        """
        return self._subscriptions.remove(handler_id, drain, discard_waiting)

    def subscription_status(
        self, handler_id: str, *, transport: bool = True
    ) -> HandlerStatus | None:
        """What this queue, the handler's own thread and the transport know now about the
        subscription ``handler_id`` (the transport may ask its broker: not for the hot path;
        ``transport=False`` leaves it out); ``None`` when the queue no longer has it."""
        return self._subscriptions.status(handler_id, transport)

    def receive(self, topic: str, timeout: float | None = None) -> Message | None:
        """Block for the next message on ``topic`` (a pattern); ``None`` after ``timeout``."""
        self._core.check_open()
        validate_pattern(topic)
        return self.transport.receive(topic, timeout)

    async def receive_async(self, topic: str, timeout: float | None = None) -> Message | None:
        """Await the next message on ``topic`` without blocking the running event loop."""
        self._core.check_open()
        validate_pattern(topic)
        return await self.transport.receive_async(topic, timeout)

    # -- request/reply ------------------------------------------------------------------------

    def request(
        self, topic: str, payload: Any = None, timeout: float | None = 30.0, **headers: Any
    ) -> Message | None:
        """Publish a request and wait for one reply; ``None`` when ``timeout`` passes first.

        ``timeout=None`` waits without limit (on native request/reply transports: 30 s).
        A responder answers with :meth:`reply`. A timed-out request leaves no waiter behind;
        a reply that arrives after it is dropped and counted in ``stats["late_replies"]``.
        The request carries its deadline (see :mod:`eventforge.deadlines`): a handler never
        receives it after the deadline has passed.

        A request that nobody is subscribed to raises
        :class:`~eventforge.errors.NoRespondersError` at once on a transport that knows it:
        one with native request/reply (NATS) or one that counts receivers (``send_counted``:
        memory, TCP, Redis). It was not delivered anywhere, so it is safe to retry.
        """
        return self._requests.request(topic, payload, timeout, **headers)

    async def request_async(
        self, topic: str, payload: Any = None, timeout: float | None = 30.0, **headers: Any
    ) -> Message | None:
        """Like :meth:`request`, awaiting the reply without blocking the running event loop."""
        return await self._requests.request_async(topic, payload, timeout, **headers)

    def ask(
        self, topic: str, payload: Any = None, timeout: float | None = 30.0, **headers: Any
    ) -> Message:
        """Like :meth:`request`, but return the reply or raise :class:`RequestTimeout`.

        For code that cannot go on without an answer: the result is a :class:`Message`, never
        ``None``, so it type-checks without a ``None`` test.
        """
        return self._requests.ask(topic, payload, timeout, **headers)

    async def ask_async(
        self, topic: str, payload: Any = None, timeout: float | None = 30.0, **headers: Any
    ) -> Message:
        """Like :meth:`request_async`, but return the reply or raise :class:`RequestTimeout`."""
        return await self._requests.ask_async(topic, payload, timeout, **headers)

    def reply(self, original: Message, payload: Any = None, **headers: Any) -> str:
        """Answer the request ``original`` with ``payload``; return the reply's message id."""
        return self._requests.reply(original, payload, **headers)

    async def reply_async(self, original: Message, payload: Any = None, **headers: Any) -> str:
        """Like :meth:`reply`, without blocking the running event loop."""
        return await self._requests.reply_async(original, payload, **headers)

    @property
    def pending_requests(self) -> int:
        """Requests currently waiting for a reply (0 when nothing is in flight: no leaks)."""
        return self._requests.pending

    # -- typed listeners, middleware, caches, rendezvous ------------------------------------

    def listen(self, listener: object) -> str:
        """Register an ``@event_listener`` instance; its ``on(event)`` receives each event.

        Listeners of one name share the work (a group, across processes on transports with
        groups); ``per_process=True`` listeners each receive every event. Returns the handler
        id, for :meth:`unsubscribe`.
        """
        info = listener_info(listener)
        on: Callable[[Any], Any] = listener.on  # type: ignore[attr-defined]
        return self.subscribe(info.event, typed_handler(info.event, on), group=info.group)

    def use(self, *middleware: object) -> None:
        """Append middleware (instances, names or ``"module:attr"``).

        The send side changes at once; the receive side applies to handlers subscribed from
        now on (handlers already subscribed keep the chain they were built with).
        """
        self._core.use(resolve_middleware(middleware))

    @property
    def middleware(self) -> tuple[object, ...]:
        """The installed middleware, in order."""
        return tuple(self._core.middleware)

    def cache(
        self,
        topic: str | type,
        *,
        max_size: int = 1000,
        match: dict[str, Any] | None = None,
        match_mode: str = "all",
    ) -> SubscriptionCache:
        """Buffer the messages matching ``topic`` for synchronous consumers.

        Returns a :class:`~eventforge.queue.cache.SubscriptionCache` (``get``, ``pop``, ``peek``,
        ``wait_for_one``, ``wait_for_many``, ``drain``); close it to unsubscribe.
        """
        cache = SubscriptionCache(
            self, topic, max_size=max_size, match=match, match_mode=match_mode
        )
        with self._core.lock:
            self._caches.add(cache)  # closing the queue closes it, waking its waiters
        return cache

    def announce_ready(self, roles: Sequence[str], *, space: str = "default") -> None:
        """Tell :meth:`wait_until_ready` callers (any process) this queue is ready in ``roles``."""
        rendezvous_for(self, space).announce_ready(roles)

    def wait_until_ready(
        self, requirements: dict[str, int], timeout: float = 30.0, *, space: str = "default"
    ) -> bool:
        """Wait until participants announced ``requirements`` (``{"worker": 3}``); ``False`` on timeout."""
        return rendezvous_for(self, space).wait_until_ready(requirements, timeout)

    # -- lifecycle and introspection ---------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._core.closed

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
        core = self._core
        return {
            "published": core.published.value,
            "delivered": core.delivered.value,
            "handler_errors": core.handler_errors.value,
            "dropped": core.dropped.value,
            **self._requests.stats(),
            "filtered": core.filtered.value,
            "rejected": core.rejected.value,
            "unroutable": core.unroutable.value,
            "subscriptions": len(self._subscriptions.entries),
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
        core = self._core
        with core.lock:
            if core.closed:
                return False
            core.closed = True
            caches = list(self._caches)
        self._subscriptions.close()
        self._requests.close()
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
        state = "closed" if self.closed else f"{len(self._subscriptions.entries)} subscriptions"
        return f"MessageQueue(name={self.name!r}, transport={self.transport.name!r}, {state})"
