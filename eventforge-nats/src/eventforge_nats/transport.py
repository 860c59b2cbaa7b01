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
import logging
from collections.abc import Sequence
from typing import Any, ClassVar

from eventforge.errors import (
    ConfigurationError,
    NoRespondersError,
    ProtocolError,
    TransportClosedError,
)
from eventforge.message import Message
from eventforge.topics import validate_pattern, validate_topic
from eventforge.transport import (
    BoundLoop,
    Callback,
    Counter,
    ResultStore,
    RetryPolicy,
    Transport,
    WorkQueueBackend,
)
from eventforge.wire import WireCodec

from ._claims import JetStreamClaims
from ._connection import NatsConnection
from ._errors import NatsAuthError, NatsConnectError
from ._outbox import Outbox
from ._requests import SyncRequests
from ._results import NatsResultStore
from ._settings import parse_settings
from ._subscriptions import Subscription, Subscriptions
from .jetstream import JetStreamWorkQueue
from .plugin import CAPABILITIES

__all__ = ["NatsAuthError", "NatsConnectError", "NatsTransport"]

log = logging.getLogger("eventforge.transports.nats")


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
        self._conn = NatsConnection(settings, _bound_to)
        self._loop = self._conn.loop
        self._outbox = Outbox(self._conn)
        self._sync_requests = SyncRequests(self._conn, self._outbox)
        self._subs = Subscriptions(
            self._conn, self._codec, delivery=settings.delivery, max_pending=settings.max_pending
        )
        self._closed = False
        self._answered = Counter()  # requests answered; publishes are counted by the connection
        self._backends: list[JetStreamWorkQueue] = []
        self._claims = JetStreamClaims()
        self._results: NatsResultStore | None = None
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

    @property
    def url(self) -> str:
        """The server URLs, comma-separated, with any password or token masked."""
        return ",".join(self.settings.safe_servers())

    # -- publishing ------------------------------------------------------------------------

    def send(self, message: Message) -> None:
        """Publish ``message`` (fire and forget, in order; buffered while reconnecting).

        Raises at once when the transport is closed, the envelope is larger than the server's
        ``max_payload``, or the link is down and ``pending_size`` bytes are already buffered.
        """
        data = self._encode(message)
        outbox = self._outbox
        outbox.put(message.topic, data)
        if outbox.overfull and not self._conn.bg.in_loop_thread():
            self._conn.run(outbox.drained())

    async def send_async(self, message: Message) -> None:
        """:meth:`send` for coroutines: never blocks the running loop.

        On the connection's own loop (a transport from :meth:`connect_async`), with nothing
        queued before it and the link up, the message goes straight to nats-py.
        """
        data = self._encode(message)
        outbox = self._outbox
        if outbox.idle_on_loop():
            await outbox.publish_now(message.topic, data)
            return
        outbox.put(message.topic, data)
        if outbox.overfull:
            await self._conn.call(outbox.drained())

    def flush(self, timeout: float = 5.0) -> None:
        """Block until everything sent so far reached the server."""
        self._check_open()
        self._conn.run(self._outbox.flush(timeout))

    async def flush_async(self, timeout: float = 5.0) -> None:
        """:meth:`flush` for coroutines."""
        self._check_open()
        await self._conn.call(self._outbox.flush(timeout))

    def _encode(self, message: Message) -> bytes:
        if self._closed:
            raise TransportClosedError("NatsTransport is closed; create a new one")
        validate_topic(message.topic)
        return self._codec.encode(message)

    # -- subscribing -----------------------------------------------------------------------

    def subscribe(self, topic: str, callback: Callback, *, group: str | None = None) -> str:
        """Call ``callback`` for each message matching ``topic``; one member per ``group``.

        Callbacks run on the transport's delivery thread, in arrival order (``nonblocking``
        ones, and all with ``delivery="loop"``, on the connection's loop); coroutine
        functions run on the loop that was running at subscribe time (else the shared loop).
        """
        self._check_open()
        return self._subs.subscribe(topic, callback, group)

    async def subscribe_async(
        self, topic: str, callback: Callback, *, group: str | None = None
    ) -> str:
        """:meth:`subscribe` for coroutines."""
        self._check_open()
        return await self._subs.subscribe_async(topic, callback, group)

    def unsubscribe(self, subscription_id: str) -> bool:
        return self._subs.unsubscribe(subscription_id)

    # -- receive ---------------------------------------------------------------------------

    # The base class's receive would subscribe, wait and unsubscribe in three crossings to the
    # connection's loop, and its receive_async would unsubscribe by blocking the awaiting
    # loop; here the whole temporary subscription is one coroutine on the connection's loop
    # (the same Waiter), and a blocking receive on that loop raises instead of stalling it.

    def receive(self, topic: str, timeout: float | None = None) -> Message | None:
        """Wait for the next message matching ``topic`` (one published after the call)."""
        self._check_open()
        validate_pattern(topic)
        return self._conn.run(self._subs.receive(topic, timeout))

    async def receive_async(self, topic: str, timeout: float | None = None) -> Message | None:
        """:meth:`receive` for coroutines: never blocks the running loop."""
        self._check_open()
        validate_pattern(topic)
        return await self._conn.call(self._subs.receive(topic, timeout))

    # -- request / reply -------------------------------------------------------------------

    def request(self, message: Message, timeout: float) -> Message | None:
        """Send ``message`` to one responder and wait for its reply (``None`` on timeout).

        Raises :class:`~eventforge.errors.NoRespondersError` at once when nothing is
        subscribed to the topic.
        """
        data = self._encode(message)
        if self._conn.bg.in_loop_thread():  # raises, pointing to request_async
            return self._conn.run(self._request(message.topic, data, timeout))
        # From any other thread: one hop to the loop and one back (see _requests.py).
        reply = self._sync_requests.request(message.topic, data, timeout)
        return None if reply is None else self._reply_message(message.topic, reply.data)

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
        return self._reply_message(subject, reply.data)

    def _reply_message(self, subject: str, data: bytes) -> Message:
        self._answered.bump()
        try:
            message = self._codec.decode(data)
        except ProtocolError as exc:
            self._subs.decode_errors.bump()
            raise ProtocolError(f"the reply to a request on {subject!r} is malformed: {exc}")
        self._subs.delivered.bump()
        return message

    # -- durable work queues and claims ----------------------------------------------------

    def claim(self, key: str, ttl: float) -> bool:
        """Claim ``key`` across processes through JetStream's ``Nats-Msg-Id`` dedupe (24 h)."""
        self._check_open()
        return self._conn.run(self._claims.claim(self._conn.client, key, ttl), timeout=30)

    def result_store(self) -> ResultStore:
        """Task results in the JetStream KV bucket ``EF_RESULTS`` (made on first use)."""
        self._check_open()
        if self._results is None:
            self._results = NatsResultStore(self._conn)
        return self._results

    def work_queue_backend(self, name: str, policy: RetryPolicy) -> WorkQueueBackend:
        """A durable JetStream work queue named ``name`` (a stream and a durable consumer)."""
        self._check_open()
        backend = JetStreamWorkQueue(
            self._conn,
            self._codec,
            name,
            policy,
            self._outbox.put,
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
        subs = self._begin_close()
        if not self._conn.bg.in_loop_thread():
            try:
                self._conn.run(self._close(subs), timeout=15)
            except Exception as exc:
                log.warning("closing the NATS transport raised %r", exc)
        else:
            self._loop.create_task(self._close(subs))
        self._subs.stop_delivery()

    async def close_async(self) -> None:
        """:meth:`close` for coroutines."""
        if self._closed:
            return
        subs = self._begin_close()
        await self._conn.call(self._close(subs))
        await asyncio.to_thread(self._subs.stop_delivery)

    def _begin_close(self) -> list[Subscription]:
        self._closed = True
        self._sync_requests.close()
        for backend in self._backends:
            backend.close()
        return self._subs.close()

    async def _close(self, subs: list[Subscription]) -> None:
        if self._conn.state == "connected":
            try:
                await asyncio.wait_for(self._outbox.drained(), 5)
            except Exception as exc:
                log.warning("NATS: unsent messages at close: %r", exc)
        for sub in subs:
            await self._subs.release(sub)
        await self._conn.close_async()

    def _check_open(self) -> None:
        if self._closed:
            raise TransportClosedError("NatsTransport is closed; create a new one")

    def stats(self) -> dict[str, Any]:
        """Counters: sent, delivered, dropped (slow consumer), decode/callback/publish errors,
        reconnects and the connection state."""
        data = self._conn.stats()
        deliveries = self._subs.stats()
        data.update(deliveries)
        data.update(
            {
                "sent": self._conn.confirmations.published + self._answered.value,
                "dropped": deliveries["dropped"] + data["slow_consumer_errors"],
                "publish_errors": self._outbox.errors.value,
                "outbox": len(self._outbox),
            }
        )
        return data

    def __repr__(self) -> str:
        state = "closed" if self._closed else self._conn.state
        return f"NatsTransport({self.url!r}, {state}, {len(self._subs)} subscriptions)"
