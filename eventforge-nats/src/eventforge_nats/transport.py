"""NatsTransport: eventforge's MessageQueue, RPC and durable WorkQueue over NATS.

* Core pub/sub carries the JSON envelope of :mod:`eventforge.wire` as the NATS payload (message
  headers travel inside the envelope), so any NATS client can read it. Delivery is
  at-most-once: a message published while nothing matching is subscribed, or while the link is
  down beyond ``pending_size``, is gone (and counted).
* ``subscribe(topic, cb, group=name)`` is a NATS queue group: each message goes to one member.
* ``request`` is native NATS request-reply; with nobody subscribed it raises
  :class:`~eventforge.errors.NoRespondersError` at once.
* ``work_queue_backend`` returns a durable JetStream work queue (at-least-once).

nats-py is imported when a transport is created, never at ``import eventforge``.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import itertools
import logging
import math
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, cast

from eventforge.errors import (
    ConfigurationError,
    FrameTooLarge,
    NoRespondersError,
    ProtocolError,
    TransportClosedError,
    TransportError,
)
from eventforge.message import Message
from eventforge.topics import topic_matches, validate_pattern, validate_topic
from eventforge.transport import (
    BoundLoop,
    Callback,
    Counter,
    DeliveryThread,
    Transport,
    is_nonblocking,
)
from eventforge.wire import WireCodec

from ._claims import JetStreamClaims
from ._connection import NatsConnection
from ._errors import NatsAuthError, NatsConnectError
from ._settings import parse_settings
from ._subjects import SubjectPlan, plan_subjects
from .plugin import CAPABILITIES

if TYPE_CHECKING:
    from eventforge.workqueue import RetryPolicy, WorkQueueBackend
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription

__all__ = ["NatsAuthError", "NatsConnectError", "NatsTransport"]

log = logging.getLogger("eventforge.transports.nats")

_MAX_OUTBOX = 10_000
_NO_QUEUE = ""


@dataclass(eq=False)
class _Subscription:
    id: str
    plan: SubjectPlan
    callback: Callback
    group: str | None
    loop: asyncio.AbstractEventLoop | None
    nats_subs: list[Subscription] = field(default_factory=list)
    active: bool = True


class NatsTransport(Transport):
    """Pub/sub, queue groups, request-reply and JetStream work queues over NATS.

    ``servers`` is one URL, a comma-separated list, or a sequence of URLs (``nats://`` or
    ``tls://``; credentials may be in the URL, options in its query string). The options
    (``user``, ``password``, ``token``, ``credentials``, ``tls``, ``tls_ca``, ``tls_cert``,
    ``tls_key``, ``ping_interval``, ``pending_size``, ``delivery``, ``ack_wait``, ...) are those
    of :data:`eventforge_nats._settings.OPTIONS`, as keywords or in the URL's query. The
    connection opens in the constructor; a wrong address or wrong credentials raise
    :class:`NatsConnectError` / :class:`NatsAuthError` there, and never retry silently.

    ``delivery="thread"`` (the default) runs callbacks on a delivery thread of the transport,
    so they may block. ``delivery="loop"`` runs them on the connection's event loop itself: one
    thread hop less per message (lower latency), but a callback must then never block, and may
    not make synchronous requests (use the ``*_async`` twins). Callbacks marked
    :func:`~eventforge.transport.nonblocking` (hand-offs to handler threads, such as an
    ``RPCServer``'s or a ``threaded=True`` subscription's) run on the loop in both modes.
    """

    name: ClassVar[str] = "nats"
    capabilities: ClassVar[frozenset[str]] = CAPABILITIES

    def __init__(
        self,
        servers: str | Sequence[str] | None = None,
        *,
        host: str | None = None,
        port: int | None = None,
        _bound_to: BoundLoop | None = None,
        **options: Any,
    ) -> None:
        if host is not None or port is not None:
            if servers is not None:
                raise ConfigurationError("give servers or host/port, not both", key="servers")
            servers = f"nats://{host or 'localhost'}:{port or 4222}"
        self.settings = settings = parse_settings(servers, options)
        self._codec = WireCodec(
            settings.serializer, trusted=settings.trusted, max_size=settings.max_size
        )
        self.ack_wait = settings.ack_wait
        self.duplicate_window = settings.duplicate_window
        self.delivery = settings.delivery
        self._conn = NatsConnection(self.settings, _bound_to)
        self._loop = self._conn.loop
        self._loop_ident = self._conn.bg.ident
        self._subs: dict[str, _Subscription] = {}
        self._ids = itertools.count(1)
        self._outbox: collections.deque[tuple[str, bytes]] = collections.deque()
        self._scheduled = False
        self._drain_task: asyncio.Task[None] | None = None
        self._dispatcher: DeliveryThread | None = None
        self._closed = False
        self._sent = 0  # answered requests; publishes are counted by the connection
        # Bumped from the loop and the delivery thread: Counter steps are atomic.
        self._delivered = Counter()
        self._publish_errors = 0
        self._decode_errors = 0
        self._callback_errors = 0
        self._filtered = Counter()
        self._errors_lock = threading.Lock()
        self._backends: list[WorkQueueBackend] = []
        self._claims = JetStreamClaims()
        self._tasks: set[asyncio.Task[None]] = set()
        if _bound_to is None:
            self._conn.connect()

    @classmethod
    async def connect_async(
        cls, servers: str | Sequence[str] | None = None, **options: Any
    ) -> NatsTransport:
        """Connect a transport that lives on the running event loop (options as for the class).

        The async API (``send_async``, ``request_async``, ``subscribe_async``, and the queue's
        and RPC client's ``*_async`` methods on top) then awaits nats-py directly, with no
        thread hand-off: use it from asyncio applications. Synchronous methods still work
        from other threads; on the loop itself ``send`` and ``subscribe`` work (a
        subscription made there becomes active a moment later; ``await subscribe_async`` to
        wait for it) while ``request``, ``receive``, ``flush`` and work-queue calls raise a
        ``RuntimeError`` that points to the ``*_async`` variants. Close it with ``await close_async()``
        before the loop ends.
        """
        transport = cls(servers, _bound_to=BoundLoop.running(), **options)
        try:
            await transport._conn.connect_async()
        except BaseException:
            transport._closed = True
            raise
        return transport

    @classmethod
    def from_url(cls, url: str, **options: Any) -> NatsTransport:
        """Create a transport from ``nats://[user:pass@]host:port[,host2:port2][?opt=value]``."""
        return cls(url, **options)

    # -- publishing ------------------------------------------------------------------------

    def send(self, message: Message) -> None:
        """Publish ``message`` (fire and forget, in order; buffered while reconnecting).

        Raises at once when the transport is closed, the envelope is larger than the server's
        ``max_payload``, or the link is down and ``pending_size`` bytes are already buffered.
        """
        data = self._encode(message)
        self._enqueue(message.topic, data)
        if len(self._outbox) > _MAX_OUTBOX and not self._conn.bg.in_loop_thread():
            self._conn.run(self._wait_drained())

    async def send_async(self, message: Message) -> None:
        """:meth:`send` for coroutines: never blocks the running loop.

        On the connection's own loop (a transport from :meth:`connect_async`), with nothing
        queued before it and the link up, the message goes straight to nats-py.
        """
        data = self._encode(message)
        if (
            not self._outbox
            and not self._scheduled
            and threading.get_ident() == self._loop_ident
            and self._conn.state == "connected"
        ):
            nc = self._conn.client
            if len(data) > nc.max_payload:
                raise FrameTooLarge(len(data), nc.max_payload)
            try:
                await nc.publish(message.topic, data)
            except Exception as exc:
                self._count_error("_publish_errors")
                raise TransportError(
                    f"NATS publish to {message.topic!r} failed ({type(exc).__name__}: {exc}); "
                    "the message was not sent"
                ) from exc
            self._conn.confirmations.published += 1
            return
        self._enqueue(message.topic, data)
        if len(self._outbox) > _MAX_OUTBOX:
            await self._conn.call(self._wait_drained())

    def flush(self, timeout: float = 5.0) -> None:
        """Block until everything sent so far reached the server."""
        self._check_open()
        self._conn.run(self._flush(timeout))

    async def flush_async(self, timeout: float = 5.0) -> None:
        """:meth:`flush` for coroutines."""
        self._check_open()
        await self._conn.call(self._flush(timeout))

    def _encode(self, message: Message) -> bytes:
        if self._closed:
            raise TransportClosedError("NatsTransport is closed; create a new one")
        validate_topic(message.topic)
        return self._codec.encode(message)

    def _enqueue(self, subject: str, data: bytes) -> None:
        conn = self._conn
        nc = conn.client
        if len(data) > nc.max_payload:
            raise FrameTooLarge(len(data), nc.max_payload)
        if conn.state != "connected" and (
            nc.pending_data_size + self._outbox_bytes() + len(data) > self.settings.pending_size
        ):
            self._count_error("_publish_errors")
            raise TransportError(
                f"NATS is {conn.state} and the outbound buffer is full "
                f"(pending_size={self.settings.pending_size} bytes); the message on "
                f"{subject!r} was not sent"
            )
        self._outbox.append((subject, data))
        if not self._scheduled:
            self._scheduled = True
            if threading.get_ident() == self._loop_ident:
                self._loop.call_soon(self._kick)
            else:
                self._loop.call_soon_threadsafe(self._kick)

    def _outbox_bytes(self) -> int:
        # Only while the link is down (rare, and bounded by pending_size), so a scan is fine.
        return sum(len(data) for _, data in list(self._outbox))

    def _kick(self) -> None:
        task = self._drain_task
        if task is None or task.done():
            self._drain_task = self._loop.create_task(self._drain())

    async def _drain(self) -> None:
        outbox = self._outbox
        nc = self._conn.client
        publish = nc.publish
        while True:
            while outbox:
                subject, data = outbox.popleft()
                try:
                    await publish(subject, data)
                    self._conn.confirmations.published += 1
                except Exception as exc:
                    self._count_error("_publish_errors")
                    if self._publish_errors in (1, 10, 100) or self._publish_errors % 1000 == 0:
                        log.warning(
                            "NATS publish to %r failed: %r (message dropped; %d so far)",
                            subject,
                            exc,
                            self._publish_errors,
                        )
            self._scheduled = False
            if not outbox:
                return
            self._scheduled = True

    async def _wait_drained(self) -> None:
        while self._outbox or (self._drain_task is not None and not self._drain_task.done()):
            task = self._drain_task
            if task is None or task.done():
                self._kick()
                task = self._drain_task
            assert task is not None
            await asyncio.shield(task)

    async def _flush(self, timeout: float) -> None:
        import nats.errors

        await self._wait_drained()
        try:
            await self._conn.confirmations.flush(self._conn.client, timeout)
        except (nats.errors.Error, asyncio.TimeoutError) as exc:
            raise TransportError(
                f"NATS flush failed ({type(exc).__name__}: {exc}); the connection is "
                f"{self._conn.state}: messages sent meanwhile may be lost"
            ) from None

    # -- subscribing -----------------------------------------------------------------------

    def subscribe(self, topic: str, callback: Callback, *, group: str | None = None) -> str:
        """Call ``callback`` for each message matching ``topic``; one member per ``group``.

        Callbacks run on the transport's delivery thread, in arrival order (``nonblocking``
        ones, and all with ``delivery="loop"``, on the connection's loop); coroutine
        functions run on the loop that was running at subscribe time (else the shared loop).
        """
        sub = self._new_subscription(topic, callback, group)
        if self._conn.bg.in_loop_thread():
            # On the connection's own loop nothing may block: subscribe in a task.
            self._subs[sub.id] = sub
            task = self._loop.create_task(self._subscribe_later(sub))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return sub.id
        self._conn.run(self._subscribe(sub))
        return sub.id

    async def _subscribe_later(self, sub: _Subscription) -> None:
        try:
            await self._subscribe(sub)
        except Exception as exc:
            self._subs.pop(sub.id, None)
            sub.active = False
            log.error("NATS subscription to %r failed: %r", sub.plan.pattern, exc)

    async def subscribe_async(
        self, topic: str, callback: Callback, *, group: str | None = None
    ) -> str:
        """:meth:`subscribe` for coroutines."""
        sub = self._new_subscription(topic, callback, group)
        await self._conn.call(self._subscribe(sub))
        return sub.id

    def unsubscribe(self, subscription_id: str) -> bool:
        sub = self._subs.pop(subscription_id, None)
        if sub is None:
            return False
        sub.active = False
        if not self._closed and not self._conn.bg.in_loop_thread():
            self._conn.run(self._unsubscribe(sub))
        else:
            self._loop.call_soon_threadsafe(lambda: self._loop.create_task(self._unsubscribe(sub)))
        return True

    def _new_subscription(self, topic: str, callback: Callback, group: str | None) -> _Subscription:
        self._check_open()
        validate_pattern(topic)
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {type(callback).__name__}")
        if group is not None and (
            not isinstance(group, str) or not group or any(c.isspace() for c in group)
        ):
            raise ConfigurationError(
                f"group must be a non-empty name without whitespace, got {group!r}", key="group"
            )
        loop: asyncio.AbstractEventLoop | None = None
        if inspect.iscoroutinefunction(callback):
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = self._loop
        if self._dispatcher is None:
            self._dispatcher = DeliveryThread(
                "eventforge-nats-delivery", self._deliver, self.settings.max_pending
            )
        return _Subscription(f"nats-{next(self._ids)}", plan_subjects(topic), callback, group, loop)

    async def _subscribe(self, sub: _Subscription) -> None:
        nc = self._conn.client
        dispatcher = self._dispatcher
        assert dispatcher is not None
        put = dispatcher.put
        deliver = self._deliver

        if self.delivery == "loop" or (sub.loop is None and is_nonblocking(sub.callback)):
            # A non-blocking callback (a hand-off to a handler thread, a reply waiter) runs on
            # the loop in every mode: one thread hop less per message.

            async def on_message(msg: Msg) -> None:
                deliver(sub, msg.subject, msg.data, msg.reply)

        else:

            async def on_message(msg: Msg) -> None:
                put((sub, msg.subject, msg.data, msg.reply))

        try:
            for subject in sub.plan.subjects:
                sub.nats_subs.append(
                    await nc.subscribe(subject, queue=sub.group or _NO_QUEUE, cb=on_message)
                )
            if nc.is_connected:
                await nc.flush(timeout=math.ceil(self.settings.connect_timeout))
        except Exception:
            await self._unsubscribe(sub)
            raise
        if not sub.active:  # unsubscribed while it was being set up
            await self._unsubscribe(sub)
            return
        self._subs[sub.id] = sub

    async def _unsubscribe(self, sub: _Subscription) -> None:
        for nats_sub in sub.nats_subs:
            try:
                await nats_sub.unsubscribe()
            except Exception as exc:  # closed connection or already gone: nothing left to undo
                log.debug("NATS unsubscribe of %r: %r", sub.plan.pattern, exc)
        sub.nats_subs.clear()

    def _deliver(self, sub: _Subscription, subject: str, data: bytes, reply: str) -> None:
        """Runs on the delivery thread: filter, decode, call back."""
        if not sub.active:
            return
        if sub.plan.needs_filter and not topic_matches(sub.plan.pattern, subject):
            self._filtered.bump()
            return
        message = self._decode(data, subject)
        if message is None:
            return
        if reply:
            message.reply_to = reply
        self._delivered.bump()
        if sub.loop is not None:
            future = asyncio.run_coroutine_threadsafe(
                self._run_coroutine(sub.callback, message), sub.loop
            )
            future.add_done_callback(lambda f: None if f.cancelled() else f.exception())
            return
        try:
            sub.callback(message)
        except Exception:
            self._count_error("_callback_errors")
            log.exception("subscription callback raised for topic %r", message.topic)

    async def _run_coroutine(self, callback: Callback, message: Message) -> None:
        try:
            await cast(Callable[[Message], Awaitable[None]], callback)(message)
        except Exception:
            self._count_error("_callback_errors")
            log.exception("subscription coroutine raised for topic %r", message.topic)

    def _decode(self, data: bytes, subject: str) -> Message | None:
        try:
            return self._codec.decode(data)
        except ProtocolError as exc:
            self._count_error("_decode_errors")
            if self._decode_errors in (1, 10, 100) or self._decode_errors % 1000 == 0:
                log.warning(
                    "dropped a malformed envelope on NATS subject %r (%d so far): %s",
                    subject,
                    self._decode_errors,
                    exc,
                )
            return None

    # -- receive ---------------------------------------------------------------------------

    def receive(self, topic: str, timeout: float | None = None) -> Message | None:
        """Wait for the next message matching ``topic`` (one published after the call)."""
        self._check_open()
        validate_pattern(topic)
        return self._conn.run(self._receive(topic, timeout))

    async def receive_async(self, topic: str, timeout: float | None = None) -> Message | None:
        self._check_open()
        validate_pattern(topic)
        return await self._conn.call(self._receive(topic, timeout))

    async def _receive(self, topic: str, timeout: float | None) -> Message | None:
        nc = self._conn.client
        plan = plan_subjects(topic)
        future: asyncio.Future[Message] = self._loop.create_future()

        async def on_message(msg: Msg) -> None:
            if future.done():
                return
            if plan.needs_filter and not topic_matches(plan.pattern, msg.subject):
                return
            message = self._decode(msg.data, msg.subject)
            if message is not None and not future.done():
                if msg.reply:
                    message.reply_to = msg.reply
                self._delivered.bump()
                future.set_result(message)

        subs = [await nc.subscribe(subject, cb=on_message) for subject in plan.subjects]
        try:
            if nc.is_connected:
                await nc.flush(timeout=math.ceil(self.settings.connect_timeout))
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            return None
        finally:
            for sub in subs:
                try:
                    await sub.unsubscribe()
                except Exception as exc:
                    log.debug("NATS unsubscribe after receive: %r", exc)

    # -- request / reply -------------------------------------------------------------------

    def request(self, message: Message, timeout: float) -> Message | None:
        """Send ``message`` to one responder and wait for its reply (``None`` on timeout).

        Raises :class:`~eventforge.errors.NoRespondersError` at once when nothing is
        subscribed to the topic.
        """
        data = self._encode(message)
        return self._conn.run(self._request(message.topic, data, timeout))

    async def request_async(self, message: Message, timeout: float) -> Message | None:
        """:meth:`request` for coroutines."""
        data = self._encode(message)
        return await self._conn.call(self._request(message.topic, data, timeout))

    async def _request(self, subject: str, data: bytes, timeout: float) -> Message | None:
        import nats.errors

        try:
            reply = await self._conn.client.request(subject, data, timeout=timeout)
        except nats.errors.NoRespondersError:
            raise NoRespondersError(subject) from None
        except nats.errors.TimeoutError:
            return None
        self._sent += 1
        try:
            message = self._codec.decode(reply.data)
        except ProtocolError as exc:
            self._count_error("_decode_errors")
            raise ProtocolError(f"the reply to a request on {subject!r} is malformed: {exc}")
        self._delivered.bump()
        return message

    # -- durable work queues and claims ----------------------------------------------------

    def claim(self, key: str, ttl: float) -> bool:
        """Claim ``key`` across processes through JetStream's ``Nats-Msg-Id`` dedupe (24 h)."""
        self._check_open()
        return self._conn.run(self._claims.claim(self._conn.client, key, ttl), timeout=30)

    def work_queue_backend(self, name: str, policy: RetryPolicy) -> WorkQueueBackend:
        """A durable JetStream work queue named ``name`` (a stream and a durable consumer)."""
        self._check_open()
        from .jetstream import JetStreamWorkQueue

        backend = JetStreamWorkQueue(
            self._conn,
            self._codec,
            name,
            policy,
            self._enqueue,
            ack_wait=self.ack_wait,
            duplicate_window=self.duplicate_window,
        )
        self._backends.append(backend)
        return backend

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Flush, unsubscribe, close the connection and stop the delivery thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for backend in self._backends:
            backend.close()
        subs = list(self._subs.values())
        self._subs.clear()
        for sub in subs:
            sub.active = False
        self._cancel_pending_subscribes()
        if not self._conn.bg.in_loop_thread():
            try:
                self._conn.run(self._close(subs), timeout=15)
            except Exception as exc:
                log.warning("closing the NATS transport raised %r", exc)
        else:
            self._loop.create_task(self._close(subs))
        if self._dispatcher is not None:
            self._dispatcher.stop()

    async def close_async(self) -> None:
        """:meth:`close` for coroutines."""
        if self._closed:
            return
        self._closed = True
        for backend in self._backends:
            backend.close()
        subs = list(self._subs.values())
        self._subs.clear()
        for sub in subs:
            sub.active = False
        self._cancel_pending_subscribes()
        await self._conn.call(self._close(subs))
        if self._dispatcher is not None:
            await asyncio.to_thread(self._dispatcher.stop)

    def _cancel_pending_subscribes(self) -> None:
        """Drop subscriptions made on the loop that are not active yet (closing)."""
        for task in list(self._tasks):
            self._loop.call_soon_threadsafe(task.cancel)

    async def _close(self, subs: list[_Subscription]) -> None:
        if self._conn.state == "connected":
            try:
                await asyncio.wait_for(self._wait_drained(), 5)
            except Exception as exc:
                log.warning("NATS: unsent messages at close: %r", exc)
        for sub in subs:
            await self._unsubscribe(sub)
        await self._conn.close_async()

    def _check_open(self) -> None:
        if self._closed:
            raise TransportClosedError("NatsTransport is closed; create a new one")

    def _count_error(self, counter: str) -> None:
        # Errors are counted from several threads (callers, the loop, the delivery thread).
        with self._errors_lock:
            setattr(self, counter, getattr(self, counter) + 1)

    def stats(self) -> dict[str, Any]:
        """Counters: sent, delivered, dropped (slow consumer), decode/callback/publish errors,
        reconnects and the connection state."""
        dispatcher = self._dispatcher
        dropped = dispatcher.dropped if dispatcher is not None else 0
        data = self._conn.stats()
        data.update(
            {
                "sent": self._conn.confirmations.published + self._sent,
                "delivered": self._delivered.value,
                "dropped": dropped + data["slow_consumer_errors"],
                "decode_errors": self._decode_errors,
                "callback_errors": self._callback_errors,
                "publish_errors": self._publish_errors,
                "filtered": self._filtered.value,
                "delivery_queue": dispatcher.depth() if dispatcher is not None else 0,
                "outbox": len(self._outbox),
                "subscriptions": len(self._subs),
            }
        )
        return data

    def __repr__(self) -> str:
        servers = ",".join(self.settings.safe_servers())
        state = "closed" if self._closed else self._conn.state
        return f"NatsTransport({servers!r}, {state}, {len(self._subs)} subscriptions)"
