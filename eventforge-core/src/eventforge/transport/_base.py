"""The Transport contract: the wire under a MessageQueue, and the kit transports are built with.

The kit (public here for third-party transports): :class:`Backoff`, :class:`Counter`,
:class:`Option` / :class:`OptionTable` and their converters, :class:`Supervisor` (connect, serve,
reconnect with backoff, restore) and :class:`ThreadSupervisor` (the same loop on a thread, for
clients with blocking sockets), :class:`DeliveryThread` (the bounded hand-over from I/O to
callbacks) and its batching mode :class:`BatchDeliveryThread` (one hand-over per read),
:class:`Waiter` (the first message of a temporary subscription) and the shared
background event loop that asyncio clients live on (:func:`background_loop`,
:class:`BackgroundLoop`, :class:`BoundLoop`).

A third-party transport writes five methods of :class:`Transport` (``send``, ``subscribe``,
``unsubscribe``, ``close``, and ``receive`` when it buffers messages itself; the default
``receive`` waits on a temporary subscription). Every other method is declared here with a
default that is correct for any transport; a transport overrides one when it can do better.
Everything richer is an optional *capability* that the transport declares in ``capabilities``; the layers above use a
capability only when it is declared, fall back where they honestly can, and otherwise refuse at
configuration time (:func:`require_capability`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from eventforge.errors import TransportClosedError, UnsupportedCapabilityError
from eventforge.message import Message
from eventforge.transport._delivery import DeliveryThread
from eventforge.transport._delivery_batches import BatchDeliveryThread
from eventforge.transport._kit import (
    Backoff,
    Counter,
    Option,
    OptionTable,
    to_bool,
    to_float,
    to_int,
    to_seconds,
)
from eventforge.transport._loop import BackgroundLoop, BoundLoop, background_loop
from eventforge.transport._results import ResultStore
from eventforge.transport._status import SubscriptionStatus
from eventforge.transport._supervisor import Supervisor, SupervisorFailed
from eventforge.transport._thread_supervisor import ThreadSupervisor
from eventforge.transport._waiter import Waiter
from eventforge.transport._workqueue import RetryPolicy, WorkQueueBackend

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "BackgroundLoop",
    "Backoff",
    "BatchDeliveryThread",
    "BoundLoop",
    "Callback",
    "Capability",
    "Counter",
    "DeliveryThread",
    "Option",
    "OptionTable",
    "Supervisor",
    "SupervisorFailed",
    "ThreadSupervisor",
    "Transport",
    "Waiter",
    "background_loop",
    "is_native",
    "is_nonblocking",
    "nonblocking",
    "require_capability",
    "to_bool",
    "to_float",
    "to_int",
    "to_seconds",
]

log = logging.getLogger("eventforge.transport")

Callback = Callable[[Message], None]
"""A subscription callback. It is called on a thread the transport owns (or the publisher's)."""

F = TypeVar("F", bound=Callable[..., Any])

_NONBLOCKING = "__eventforge_nonblocking__"


def nonblocking(func: F) -> F:
    """Mark a subscription callback as one that returns at once and never waits.

    Such a callback only hands the message on (to a waiter, a bounded queue of a thread of its
    own, a future): it takes no lock that another callback may hold for long, does no I/O of
    its own beyond a non-blocking send, and never waits for another message. A transport that
    declares :attr:`Capability.NONBLOCKING_INLINE` runs marked callbacks directly on its I/O
    thread or event loop instead of handing them to its delivery thread, which saves one
    thread hand-off per message (most of a request's round trip on loopback). Other
    transports ignore the mark.

    Mark functions and classes (for a method, mark it in the class body; the mark is then seen
    through every bound method). Returns ``func`` itself.
    """
    try:
        setattr(func, _NONBLOCKING, True)
    except AttributeError:
        raise TypeError(
            f"cannot mark {func!r} as nonblocking: mark the function itself (for a method, "
            "decorate it in the class body)"
        ) from None
    return func


def is_nonblocking(callback: Callable[..., Any]) -> bool:
    """Tell whether ``callback`` was marked with :func:`nonblocking` (checked at subscribe time)."""
    return getattr(callback, _NONBLOCKING, False) is True


class Capability:
    """Names of the optional features a transport may declare."""

    WILDCARDS = "wildcards"
    """``subscribe`` accepts ``*`` / ``**`` patterns."""
    GROUPS = "groups"
    """``subscribe(topic, cb, group=name)``: each message goes to one member of the group."""
    HEADERS = "headers"
    """Message headers reach the subscriber unchanged."""
    ORDERED = "ordered"
    """Messages from one publisher to one subscriber arrive in publish order."""
    CROSS_PROCESS = "cross_process"
    """Other processes (or machines) can publish and subscribe through it."""
    REQUEST_REPLY = "request_reply"
    """Native request/reply: ``request(message, timeout)`` on the transport."""
    DURABLE = "durable"
    """Durable work queues: ``work_queue_backend(name, policy)`` returns a backend."""
    BUFFERED_RECEIVE = "buffered_receive"
    """``receive`` also returns messages sent before it was called, that nobody consumed."""
    ZERO_COPY = "zero_copy"
    """Payloads are passed by reference, never serialized (in-process transports)."""
    CLAIMS = "claims"
    """``claim(key, ttl)``: claim a key once across every process on the transport (the first
    claim of a key wins until ``ttl`` passes); periodic schedules fire once per tick with it."""
    NONBLOCKING_INLINE = "nonblocking_inline"
    """Callbacks marked :func:`nonblocking` run on the transport's I/O thread (or event loop),
    not on its delivery thread. Reply waiters are such callbacks, so a handler running on the
    delivery thread may make a blocking request: its reply does not queue up behind it."""
    DELAYED_SEND = "delayed_send"
    """``send_later(message, due)``: the transport holds a message until a Unix time, then
    sends it; ``publish(..., delay=)`` needs it."""
    HEADER_MATCH = "header_match"
    """``subscribe_matching(topic, cb, match=..., match_mode=...)``: the broker itself keeps
    messages whose headers do not match from the subscriber (AMQP headers exchanges)."""
    DURABLE_SUBSCRIPTIONS = "durable_subscriptions"
    """``subscribe(topic, cb, durable=name)``: a named subscription keeps its backlog while no
    process listens and across restarts; everyone attached to the name competes for it."""
    RESULTS = "results"
    """``result_store()``: task results kept by task id with a time to live, readable by every
    process on the transport (``@task(results=True)``)."""

    ALL: ClassVar[frozenset[str]] = frozenset(
        {
            WILDCARDS,
            GROUPS,
            HEADERS,
            ORDERED,
            CROSS_PROCESS,
            REQUEST_REPLY,
            DURABLE,
            BUFFERED_RECEIVE,
            ZERO_COPY,
            NONBLOCKING_INLINE,
            CLAIMS,
            DURABLE_SUBSCRIPTIONS,
            HEADER_MATCH,
            DELAYED_SEND,
            RESULTS,
        }
    )


class Transport(ABC):
    """The six-method contract every transport implements.

    Delivery is at-most-once unless the transport declares :attr:`Capability.DURABLE` (and then
    only for work queues). ``subscribe`` callbacks must not raise into the transport: the layers
    above wrap user handlers, but a transport should still survive a callback that raises.
    """

    name: ClassVar[str] = "transport"
    capabilities: ClassVar[frozenset[str]] = frozenset()

    @abstractmethod
    def send(self, message: Message) -> None:
        """Deliver ``message`` to every subscription matching its topic (one per group)."""

    def receive(self, topic: str, timeout: float | None = None) -> Message | None:
        """Block for the next message on ``topic``; ``None`` when ``timeout`` passes first.

        The default subscribes a :class:`Waiter`, waits for its first message and unsubscribes
        (only messages published while it waits are seen). A transport that keeps messages for
        later (:attr:`Capability.BUFFERED_RECEIVE`) overrides it.
        """
        waiter = Waiter()
        sub_id = self.subscribe(topic, waiter)
        try:
            return waiter.wait(timeout)
        finally:
            self._unsubscribe_quietly(sub_id)

    async def receive_async(self, topic: str, timeout: float | None = None) -> Message | None:
        """Await the next message on ``topic`` without blocking the running event loop.

        The default is :meth:`receive`'s temporary subscription, awaited on the running loop.
        A transport whose :meth:`receive` is overridden (it has a buffer of its own) gets a
        default that polls it in a worker thread in short slices, so cancelling the awaiting
        task never leaves a thread blocked; a message that the last slice takes after the task
        was cancelled is logged with its id, never dropped silently.
        """
        if type(self).receive is Transport.receive:
            waiter = Waiter(asyncio.get_running_loop())
            sub_id = await asyncio.to_thread(self.subscribe, topic, waiter)
            try:
                return await waiter.wait_async(timeout)
            finally:
                self._unsubscribe_quietly(sub_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            slice_ = 0.05
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                slice_ = min(slice_, remaining)
            poll = asyncio.ensure_future(asyncio.to_thread(self.receive, topic, slice_))
            try:
                message = await asyncio.shield(poll)
            except asyncio.CancelledError:
                poll.add_done_callback(self._report_abandoned)
                raise
            if message is not None:
                return message

    def _unsubscribe_quietly(self, sub_id: str) -> None:
        try:
            self.unsubscribe(sub_id)
        except TransportClosedError:
            pass  # closed while waiting: the subscription went with the transport

    def _report_abandoned(self, poll: asyncio.Future[Message | None]) -> None:
        if poll.cancelled() or poll.exception() is not None:
            return
        message = poll.result()
        if message is not None:
            log.warning(
                "receive_async on %r was cancelled while %s received message %s; it is dropped",
                message.topic,
                type(self).__name__,
                message.id,
            )

    @abstractmethod
    def subscribe(self, topic: str, callback: Callback, *, group: str | None = None) -> str:
        """Call ``callback`` for every message matching ``topic``; return a subscription id.

        ``group``: members of one group share the messages (each goes to one of them). Only
        transports that declare :attr:`Capability.GROUPS` accept it; others raise
        :class:`~eventforge.errors.UnsupportedCapabilityError` for a group (see
        :meth:`refuse_group`).
        """

    @abstractmethod
    def unsubscribe(self, subscription_id: str) -> bool:
        """Stop a subscription; return whether it existed."""

    @abstractmethod
    def close(self) -> None:
        """Release every resource; later calls raise ``TransportClosedError``. Idempotent."""

    # -- optional: declared with defaults that are correct for any transport -------------------

    @property
    def url(self) -> str | None:
        """The address this transport is connected to, secrets masked (``None`` if it has none)."""
        return None

    def connect(self) -> object:
        """Connect now (transports that connect lazily); the default does nothing."""
        return self

    async def send_async(self, message: Message) -> None:
        """:meth:`send` for coroutines; the default runs it in a worker thread."""
        await asyncio.to_thread(self.send, message)

    def send_counted(self, message: Message) -> int | None:
        """Send and return how many subscribers took ``message``; ``None`` when it cannot know.

        The default sends and returns ``None``. Transports that count receivers override it
        (:meth:`counts_receivers` tells whether one does); unroutable policies need it.
        """
        self.send(message)
        return None

    def counts_receivers(self) -> bool:
        """Tell whether :meth:`send_counted` returns real counts (the transport overrides it)."""
        return type(self).send_counted is not Transport.send_counted

    async def request_async(self, message: Message, timeout: float) -> Message | None:
        """:meth:`request` for coroutines; the default runs it in a worker thread."""
        return await asyncio.to_thread(self.request, message, timeout)

    async def close_async(self) -> None:
        """:meth:`close` for coroutines; the default runs it in a worker thread. A transport
        living on the caller's event loop overrides it."""
        await asyncio.to_thread(self.close)

    def refuse_group(self, group: str | None) -> None:
        """Raise for a ``group`` on a transport without :attr:`Capability.GROUPS`."""
        if group is not None:
            require_capability(self, Capability.GROUPS, feature=f"subscribe(group={group!r})")

    # -- optional, capability-gated ------------------------------------------------------------

    def request(self, message: Message, timeout: float) -> Message | None:
        """Send ``message`` and wait for one reply (only with :attr:`Capability.REQUEST_REPLY`)."""
        raise UnsupportedCapabilityError(
            f"transport {self.name!r} has no native request/reply",
            transport=self.name,
            capability=Capability.REQUEST_REPLY,
        )

    def work_queue_backend(self, name: str, policy: RetryPolicy) -> WorkQueueBackend:
        """Return the durable work-queue backend for ``name`` (only with :attr:`Capability.DURABLE`)."""
        raise UnsupportedCapabilityError(
            f"transport {self.name!r} offers no durable work queues; use a transport that declares "
            f"the {Capability.DURABLE!r} capability (redis, nats) or the in-process memory transport",
            transport=self.name,
            capability=Capability.DURABLE,
        )

    def subscribe_durable(
        self, topic: str, callback: Callback, *, durable: str, group: str | None = None
    ) -> str:
        """Attach to the named subscription ``durable`` (only with
        :attr:`Capability.DURABLE_SUBSCRIPTIONS`): it keeps its backlog while nobody listens."""
        raise UnsupportedCapabilityError(
            f"transport {self.name!r} has no named (durable) subscriptions; use a transport that "
            f"declares the {Capability.DURABLE_SUBSCRIPTIONS!r} capability (local://)",
            transport=self.name,
            capability=Capability.DURABLE_SUBSCRIPTIONS,
        )

    def send_later(self, message: Message, due: float) -> None:
        """Send ``message`` at the Unix time ``due`` (only with :attr:`Capability.DELAYED_SEND`)."""
        raise UnsupportedCapabilityError(
            f"transport {self.name!r} cannot hold a published message for later; "
            "publish(delay=) works on the memory transport, and WorkQueue.put(delay=) keeps "
            "delayed items on memory, local://, Redis, AMQP and SQL work queues",
            transport=self.name,
            capability=Capability.DELAYED_SEND,
        )

    def subscribe_matching(
        self,
        topic: str,
        callback: Callback,
        *,
        match: dict[str, Any],
        match_mode: str = "all",
        group: str | None = None,
    ) -> str:
        """Subscribe with a header match the broker applies (only with
        :attr:`Capability.HEADER_MATCH`). ``match_mode`` is ``"all"`` or ``"any"``. A transport
        may deliver a message that does not match (the queue filters again); it must never
        withhold one that does."""
        raise UnsupportedCapabilityError(
            f"transport {self.name!r} cannot match headers on the broker; the queue filters "
            "them itself",
            transport=self.name,
            capability=Capability.HEADER_MATCH,
        )

    def claim(self, key: str, ttl: float) -> bool:
        """Claim ``key`` for ``ttl`` seconds; True for the first claim, False while it is held.

        Only with :attr:`Capability.CLAIMS`. The claim is atomic across every process that
        uses the same broker; it is never released early (a tick that was claimed stays fired).
        """
        raise UnsupportedCapabilityError(
            f"transport {self.name!r} cannot claim a key across processes; periodic schedules "
            f"need a transport that declares the {Capability.CLAIMS!r} capability (redis, nats, "
            "sql, local, or memory for one process)",
            transport=self.name,
            capability=Capability.CLAIMS,
        )

    def result_store(self) -> ResultStore:
        """The store of task results on this transport (only with :attr:`Capability.RESULTS`).

        The store lives as long as the transport (closing the transport closes it).
        """
        raise UnsupportedCapabilityError(
            f"transport {self.name!r} cannot store task results; use a transport that declares "
            f"the {Capability.RESULTS!r} capability (redis, nats, sql, local, or memory for one "
            "process), or pass @task(results='redis://...') to keep them on another one",
            transport=self.name,
            capability=Capability.RESULTS,
        )

    def stats(self) -> dict[str, Any]:
        """Return counters (sent, delivered, dropped, ...) as a plain dict."""
        return {}

    def subscription_status(self, subscription_id: str) -> SubscriptionStatus | None:
        """What this transport knows about subscription ``subscription_id`` now; ``None`` when
        it cannot tell. A service's health checks call it every probe interval, never on the
        delivery path, so it may ask the broker; an id it does not know is not ``present``."""
        return None

    def has(self, capability: str) -> bool:
        """Tell whether this transport declares ``capability``."""
        return capability in self.capabilities

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def is_native(transport: Transport, method: str) -> bool:
    """Tell whether ``transport`` overrides the default of the optional ``method``."""
    return getattr(type(transport), method) is not getattr(Transport, method)


def require_capability(transport: Transport, capability: str, *, feature: str) -> None:
    """Raise :class:`UnsupportedCapabilityError` unless ``transport`` declares ``capability``."""
    if capability not in transport.capabilities:
        raise UnsupportedCapabilityError(
            f"{feature} needs a transport with the {capability!r} capability, but "
            f"{type(transport).__name__} ({transport.name!r}) declares only "
            f"{sorted(transport.capabilities) or 'none'}; choose another transport",
            transport=transport.name,
            capability=capability,
        )
