"""AmqpTransport: eventforge's MessageQueue, RPC and durable WorkQueue over RabbitMQ (AMQP 0-9-1).

* ``send`` publishes the JSON envelope with the topic as routing key and the headers as AMQP
  headers to the topic's exchange (a topic exchange named ``eventforge`` unless the
  ``exchange_type`` and ``routes`` options pick the fanout or headers exchange for it):
  at-most-once, in order per publisher.
* ``subscribe`` binds a queue to that exchange: with the pattern on the topic exchange
  (``*`` → ``*``, ``**`` → ``#``), as is on the fanout exchange, with ``x-match`` and the
  ``match=`` headers on the headers exchange (the broker filters). An exclusive auto-delete
  queue per plain subscription, a shared durable queue per ``group=``.
* ``request`` uses direct reply-to and ``mandatory``: a request nobody is bound for raises
  :class:`~eventforge.errors.NoRespondersError` at once; ``send_counted`` reports the same way
  whether any queue took a message, so ``MessageQueue(unroutable=...)`` works natively.
* ``work_queue_backend`` returns a durable work queue on a quorum queue (at-least-once).

aiormq runs on eventforge's shared background loop (or the application's loop with
:meth:`AmqpTransport.connect_async`); it is imported when the transport is created.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import Mapping
from typing import Any, ClassVar, cast

import aiormq.abc
from eventforge.errors import NoRespondersError, TransportClosedError, TransportError
from eventforge.message import Message
from eventforge.topics import validate_pattern, validate_topic
from eventforge.transport import (
    BoundLoop,
    Callback,
    Counter,
    RetryPolicy,
    Transport,
    WorkQueueBackend,
)
from eventforge.wire import DEFAULT_MAX_SIZE, WireCodec

from . import _codec
from ._capabilities import CAPABILITIES
from ._connection import AmqpAuthError, AmqpConnectError, Link
from ._exchanges import Exchanges
from ._outbox import Outbox
from ._requests import RETURNED, Requests
from ._settings import parse_settings
from ._subscriptions import Subscriptions, WatchedSubscriptions
from ._topology import REPLY_TO, is_reply_address
from ._wq_delays import DelayLevels
from .workqueue import AmqpWorkQueue

__all__ = ["AmqpAuthError", "AmqpConnectError", "AmqpTransport"]

log = logging.getLogger("eventforge.transports.amqp")


class AmqpTransport(WatchedSubscriptions, Transport):
    """Pub/sub, competing groups, direct reply-to RPC and quorum-queue work queues on RabbitMQ.

    ``url`` is ``amqp://[user[:password]@]host[:port][/vhost][?option=value...]`` (``amqps://``
    for TLS); every option may also be given as a keyword (see ``docs/transports/amqp.md``).
    The connection opens in the constructor: a wrong address or refused credentials raise
    :class:`AmqpConnectError` / :class:`AmqpAuthError` after one attempt. Later connection
    losses are ridden out: the transport reconnects with backoff and restores its exchange,
    queues, bindings and consumers.
    """

    name: ClassVar[str] = "amqp"
    capabilities: ClassVar[frozenset[str]] = CAPABILITIES

    def __init__(
        self,
        url: str | None = None,
        *,
        serializer: Any = None,
        trusted: bool = False,
        max_size: int = DEFAULT_MAX_SIZE,
        _bound_to: BoundLoop | None = None,
        **options: Any,
    ) -> None:
        self.settings = parse_settings(url, options)
        opts = self.settings.options
        self.exchange: str = opts["exchange"]
        self.exchanges = Exchanges(opts)
        self.publish_timeout: float = opts["publish_timeout"]
        self._codec = WireCodec(serializer, trusted=trusted, max_size=max_size)
        self._link = Link(self.settings, _bound_to)
        self._loop = self._link.loop
        self._publisher = self._link.slot("publish", confirms=False)
        self._confirmer = self._link.slot("confirm", confirms=True, eager=True)
        self._confirmer.hooks.append(self._on_confirm_channel)
        self._subs = Subscriptions(self._link, self._codec, self.exchanges, opts)
        self._closed = False
        self._sent = Counter()
        self._returned = Counter()
        self._publish_errors = Counter()
        self._outbox = Outbox(
            self._link, self._publisher, self.publish_timeout, self._sent, self._publish_errors
        )
        self._requests = Requests(
            self._link,
            self._codec,
            self._subs.decode_failed,
            self._outbox.idle,
            self._outbox.drained,
        )
        self._confirms_pending = 0
        self._backends: list[WorkQueueBackend] = []
        self._delay_levels = DelayLevels()  # declared once per connection, when first used
        self._id = os.urandom(4).hex()
        self._ids = itertools.count(1)
        if _bound_to is None:
            self._link.connect()

    @classmethod
    async def connect_async(cls, url: str | None = None, **options: Any) -> AmqpTransport:
        """Connect a transport that lives on the running event loop (options as for the class).

        Its ``*_async`` methods then await aiormq directly (no thread hand-off); synchronous
        calls still work from other threads. Close it with ``await close_async()``.
        """
        transport = cls(url, _bound_to=BoundLoop.running(), **options)
        try:
            await transport._link.connect_async()
        except BaseException:
            transport._closed = True
            raise
        return transport

    @classmethod
    def from_url(cls, url: str, **options: Any) -> AmqpTransport:
        """Create a transport from ``amqp[s]://[user:pass@]host[:port][/vhost][?opt=value]``."""
        return cls(url, **options)

    # -- channels ----------------------------------------------------------------------------

    async def _on_confirm_channel(self, channel: aiormq.abc.AbstractChannel) -> None:
        await self.exchanges.declare_for_publishing(channel)

    # -- publishing --------------------------------------------------------------------------

    def _route(self, message: Message) -> tuple[str, str]:
        topic = message.topic
        if is_reply_address(topic):
            return "", topic
        return self.exchanges.exchange_for(topic), topic

    def _encode(self, message: Message) -> tuple[str, str, bytes, Any]:
        if self._closed:
            raise TransportClosedError("AmqpTransport is closed; create a new one")
        validate_topic(message.topic)
        exchange, key = self._route(message)
        body, properties = _codec.encode(self._codec, message)
        return exchange, key, body, properties

    def _check_blocked(self) -> None:
        error = self._link.blocked_error(self.publish_timeout)
        if error is not None:
            self._publish_errors.bump()
            raise error

    def send(self, message: Message) -> None:
        """Publish ``message`` (fire and forget, in order).

        Raises at once when the transport is closed, and when the broker has blocked publishing
        (a resource alarm) for longer than ``publish_timeout``.
        """
        item = self._encode(message)
        self._check_blocked()
        if self._outbox.add(item) and not self._link.bg.in_loop_thread():
            self._link.run(self._outbox.drained(), self.publish_timeout + 1)

    async def send_async(self, message: Message) -> None:
        """:meth:`send` for coroutines: never blocks the running loop."""
        item = self._encode(message)
        self._check_blocked()
        if self._outbox.add(item):
            await self._link.call(self._outbox.drained())

    def flush(self, timeout: float | None = None) -> None:
        """Block until everything sent so far was written to the broker's socket."""
        self._check_open()
        self._link.run(self._flush(), timeout or self.publish_timeout)

    async def flush_async(self, timeout: float | None = None) -> None:
        """:meth:`flush` for coroutines."""
        self._check_open()
        await asyncio.wait_for(self._link.call(self._flush()), timeout or self.publish_timeout)

    async def _flush(self) -> None:
        await self._outbox.written()

    def send_counted(self, message: Message) -> int:
        """Publish with ``mandatory`` and a confirm: 1 when a queue took it, 0 when none did."""
        item = self._encode(message)
        self._check_blocked()
        return self._link.run(self._publish_confirmed(*item, mandatory=True))

    async def send_counted_async(self, message: Message) -> int:
        """:meth:`send_counted` for coroutines."""
        item = self._encode(message)
        self._check_blocked()
        return await self._link.call(self._publish_confirmed(*item, mandatory=True))

    async def _publish_confirmed(
        self, exchange: str, key: str, body: bytes, properties: Any, *, mandatory: bool
    ) -> int:
        await self._outbox.drained()  # keep the order of earlier sends
        self._confirms_pending += 1
        try:
            channel = await self._confirmer.get(self.publish_timeout)
            result = await channel.basic_publish(
                body,
                exchange=exchange,
                routing_key=key,
                properties=properties,
                mandatory=mandatory,
                timeout=self.publish_timeout,
            )
        except asyncio.TimeoutError:
            self._publish_errors.bump()
            raise TransportError(self._link.timeout_reason(key, self.publish_timeout)) from None
        finally:
            self._confirms_pending -= 1
        self._sent.bump()
        return self._routed(result)

    def _routed(self, result: Any) -> int:
        import pamqp.commands

        if isinstance(result, pamqp.commands.Basic.Ack):
            return 1
        if isinstance(result, pamqp.commands.Basic.Nack):
            self._publish_errors.bump()
            raise TransportError("the broker refused the message (basic.nack); it was not stored")
        self._returned.bump()
        return 0

    # -- request / reply ---------------------------------------------------------------------

    def request(self, message: Message, timeout: float) -> Message | None:
        """Send ``message`` to one responder and wait for its reply (``None`` on timeout).

        Raises :class:`~eventforge.errors.NoRespondersError` at once when no queue is bound
        for the topic.
        """
        item, correlation = self._request_item(message)
        if self._link.bg.in_loop_thread():
            return self._link.run(self.request_async(message, timeout))  # refused there
        outcome = self._requests.request(item, correlation, timeout)
        return self._answer(message, outcome, item)

    async def request_async(self, message: Message, timeout: float) -> Message | None:
        """:meth:`request` for coroutines."""
        item, correlation = self._request_item(message)
        outcome = await self._link.call(self._requests.request_async(item, correlation, timeout))
        return self._answer(message, outcome, item)

    def _request_item(self, message: Message) -> tuple[tuple[str, str, bytes, Any], str]:
        item = self._encode(message)
        self._check_blocked()
        correlation = message.correlation_id or message.id
        properties = item[3]
        properties.correlation_id = correlation
        properties.reply_to = REPLY_TO
        return item, correlation

    def _answer(
        self, message: Message, outcome: Any, item: tuple[str, str, bytes, Any]
    ) -> Message | None:
        if outcome is RETURNED:
            self._returned.bump()
            raise NoRespondersError(message.topic)
        if outcome is None and self._link.blocked is not None:
            self._publish_errors.bump()
            raise TransportError(self._link.timeout_reason(item[1], self.publish_timeout))
        self._sent.bump()
        return cast(Message | None, outcome)

    # -- subscribing -------------------------------------------------------------------------

    def subscribe(
        self,
        topic: str,
        callback: Callback,
        *,
        group: str | None = None,
        exchange_type: str | None = None,
        match: Mapping[str, Any] | None = None,
        match_mode: str = "all",
    ) -> str:
        """Call ``callback`` for each message matching ``topic``; one member per ``group``.

        ``exchange_type`` (``topic``, ``fanout``, ``headers``) binds to that exchange instead
        of the one the ``routes`` / ``exchange_type`` options pick for ``topic``. ``match``
        (on a headers exchange only) binds with ``x-match`` all / any (``match_mode``) and
        these headers: the broker delivers only messages whose headers match.
        """
        self._check_open()
        options = self.settings.options
        sub = self._subs.new(
            topic, callback, group, options["delivery"], exchange_type, match, match_mode
        )
        if self._link.bg.in_loop_thread():
            self._link.spawn(self._subs.start_later(sub))
            return sub.id
        self._link.run(self._subs.start(sub), self.publish_timeout + 5)
        return sub.id

    def subscribe_matching(
        self,
        topic: str,
        callback: Callback,
        *,
        match: dict[str, Any],
        match_mode: str = "all",
        group: str | None = None,
    ) -> str:
        """The broker applies ``match`` where ``topic`` binds to the headers exchange; elsewhere
        the subscription binds as usual and the queue's own filter matches."""
        if self.exchanges.kind_for(topic) == "headers":
            return self.subscribe(topic, callback, group=group, match=match, match_mode=match_mode)
        return self.subscribe(topic, callback, group=group)

    async def subscribe_async(
        self,
        topic: str,
        callback: Callback,
        *,
        group: str | None = None,
        exchange_type: str | None = None,
        match: Mapping[str, Any] | None = None,
        match_mode: str = "all",
    ) -> str:
        """:meth:`subscribe` for coroutines."""
        self._check_open()
        options = self.settings.options
        sub = self._subs.new(
            topic, callback, group, options["delivery"], exchange_type, match, match_mode
        )
        await self._link.call(self._subs.start(sub))
        return sub.id

    def unsubscribe(self, subscription_id: str) -> bool:
        sub = self._subs.pop(subscription_id)
        if sub is None:
            return False
        if self._closed or self._link.bg.in_loop_thread():
            self._loop.call_soon_threadsafe(lambda: self._link.spawn(self._subs.stop(sub)))
        else:
            self._link.run(self._subs.stop(sub), self.publish_timeout)
        return True

    def receive(self, topic: str, timeout: float | None = None) -> Message | None:
        """Wait for the next message matching ``topic`` (one published after the call)."""
        self._check_open()
        validate_pattern(topic)
        return self._link.run(self._subs.receive(topic, timeout))

    async def receive_async(self, topic: str, timeout: float | None = None) -> Message | None:
        self._check_open()
        validate_pattern(topic)
        return await self._link.call(self._subs.receive(topic, timeout))

    # -- durable work queues -----------------------------------------------------------------

    def work_queue_backend(self, name: str, policy: RetryPolicy) -> WorkQueueBackend:
        """A durable work queue named ``name`` on quorum queues (see ``docs/transports/amqp.md``)."""
        self._check_open()
        backend = AmqpWorkQueue(
            self._link, self._codec, name, policy, self.settings.options, self._delay_levels
        )
        self._backends.append(backend)
        return backend

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Send what is queued, cancel the consumers and close the connection. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for backend in self._backends:
            backend.close()
        if self._link.bg.in_loop_thread():
            self._link.spawn(self._close())
        else:
            try:
                self._link.run(self._close(), 15)
            except Exception as exc:
                log.warning("closing the AMQP transport raised %r", exc)
        self._subs.stop_dispatcher()

    async def close_async(self) -> None:
        """:meth:`close` for coroutines."""
        if self._closed:
            return
        self._closed = True
        for backend in self._backends:
            await asyncio.to_thread(backend.close)
        await self._link.call(self._close())
        await asyncio.to_thread(self._subs.stop_dispatcher)

    async def _close(self) -> None:
        if self._link.supervisor.state == "connected":
            try:
                await asyncio.wait_for(self._outbox.drained(), 5)
            except Exception as exc:
                log.warning("AMQP: unsent messages at close: %r", exc)
        self._subs.deactivate_all()
        self._requests.cancel_all()
        await self._link.close_async()

    def _check_open(self) -> None:
        if self._closed:
            raise TransportClosedError("AmqpTransport is closed; create a new one")

    def stats(self) -> dict[str, Any]:
        """Counters: sent, delivered, returned, confirms pending, reconnects, consumer cancels,
        blocked state and time, decode and callback errors, the connection state."""
        data = self._link.stats()
        data.update(self._subs.stats())
        data.update(
            {
                "sent": self._sent.value,
                "returned": self._returned.value,
                "publish_errors": self._publish_errors.value,
                "confirms_pending": self._confirms_pending,
                "outbox": len(self._outbox),
                "pending_requests": len(self._requests),
            }
        )
        return data

    def __repr__(self) -> str:
        state = "closed" if self._closed else self._link.supervisor.state
        return (
            f"AmqpTransport({self.settings.safe_url()!r}, {state}, {len(self._subs)} subscriptions)"
        )
