"""The pub/sub consumers of an AMQP transport, on a channel of their own.

Each subscription is a queue, a binding (to the topic, fanout or headers exchange, see
:mod:`eventforge_amqp._exchanges`) and a consumer on the ``consume`` channel. A new
subscription is declared on a channel of its own first (``declare``), so a declaration the
broker refuses closes only that channel, never the one the other consumers are on. What the
broker may take away is put back:

* the channel closes (a protocol error) → the slot reopens it and :meth:`Subscriptions.restore`
  declares and consumes every subscription again;
* the connection drops → the supervisor reconnects and the slot does the same;
* the broker cancels one consumer (``basic.cancel``: its queue was deleted, a node went down)
  → that subscription is declared and consumed again, counted in ``consumer_cancels`` /
  ``resubscribes``.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import aiormq.abc
import aiormq.exceptions
from eventforge.errors import ConfigurationError, ProtocolError
from eventforge.message import Message
from eventforge.topics import validate_pattern
from eventforge.transport import (
    BatchDeliveryThread,
    Callback,
    Counter,
    SubscriptionStatus,
    is_nonblocking,
)
from eventforge.wire import WireCodec
from pamqp.commands import Basic

from . import _codec
from ._channel import direct_consumer
from ._connection import Link
from ._exchanges import Binding, Exchanges
from ._topology import conflict_error, group_queue_name

__all__ = ["Subscription", "Subscriptions", "WatchedSubscriptions"]

log = logging.getLogger("eventforge.transports.amqp")


@dataclass(eq=False)
class Subscription:
    id: str
    pattern: str
    callback: Callback
    group: str | None
    queue: str
    binding: Binding
    inline: bool
    loop: asyncio.AbstractEventLoop | None
    consumer_tag: str | None = None
    active: bool = True
    cancels: int = 0
    restoring: bool = False


class Subscriptions:
    """The subscriptions of one transport and the channel they consume on."""

    def __init__(
        self, link: Link, codec: WireCodec, exchanges: Exchanges, options: dict[str, Any]
    ) -> None:
        self._link = link
        self._codec = codec
        self._exchanges = exchanges
        self._options = options
        self._slot = link.slot("consume", confirms=False, eager=True)
        self._slot.hooks.append(self._restore)
        self._declarer = link.slot("declare", confirms=False)
        exchange = exchanges.names["topic"]
        self._subs: dict[str, Subscription] = {}
        self._by_tag: dict[str, Subscription] = {}
        self._prefix = f"{exchange}.sub.{os.urandom(6).hex()}"
        self._ids = itertools.count(1)
        self._dispatcher: BatchDeliveryThread | None = None
        self._handed: list[tuple[Subscription, aiormq.abc.DeliveredMessage]] = []
        self._hand_scheduled = False
        self._lock = threading.Lock()
        self.delivered = Counter()
        self.decode_errors = Counter()
        self.callback_errors = Counter()
        self.consumer_cancels = Counter()
        self.resubscribes = Counter()

    def __len__(self) -> int:
        return len(self._subs)

    # -- setting up --------------------------------------------------------------------------

    def new(
        self,
        topic: str,
        callback: Callback,
        group: str | None,
        delivery: str,
        exchange_type: str | None = None,
        match: Mapping[str, Any] | None = None,
        match_mode: str = "all",
    ) -> Subscription:
        validate_pattern(topic)
        binding = self._exchanges.binding(topic, exchange_type, match, match_mode)
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
                loop = self._link.loop
        with self._lock:
            if self._dispatcher is None:
                self._dispatcher = BatchDeliveryThread(
                    "eventforge-amqp-delivery", self._deliver, self._options["max_pending"]
                )
        number = next(self._ids)
        queue = (
            group_queue_name(binding.exchange, group, topic, binding.arguments)
            if group is not None
            else f"{self._prefix}.{number}"
        )
        inline = loop is None and (delivery == "loop" or is_nonblocking(callback))
        return Subscription(f"amqp-{number}", topic, callback, group, queue, binding, inline, loop)

    async def start(self, sub: Subscription) -> None:
        timeout = self._options["connect_timeout"]
        self._subs[sub.id] = sub
        try:
            # Declared on a channel of its own: a refused declaration closes only that one.
            await self._declare(await self._declarer.get(timeout), sub)
            channel = await self._slot.get(timeout)
            await self._consume(channel, sub)
        except BaseException:
            self._subs.pop(sub.id, None)
            sub.active = False
            raise

    async def start_later(self, sub: Subscription) -> None:
        try:
            await self.start(sub)
        except Exception as exc:
            log.error("AMQP subscription to %r failed: %r", sub.pattern, exc)

    async def _declare(self, channel: aiormq.abc.AbstractChannel, sub: Subscription) -> None:
        """Declare the subscription's exchange and queue, and bind them (all idempotent)."""
        binding = sub.binding
        await self._exchanges.declare(channel, binding.kind)
        group = sub.group is not None
        arguments: dict[str, Any] = {}
        try:
            await channel.queue_declare(
                sub.queue,
                durable=group,
                exclusive=not group,
                auto_delete=not group,
                arguments=arguments,
            )
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            raise conflict_error(
                "queue", sub.queue, exc, arguments, rename="use another group name"
            ) from None
        await channel.queue_bind(
            sub.queue,
            binding.exchange,
            routing_key=binding.routing_key,
            arguments=binding.arguments,
        )

    async def _declare_and_consume(
        self, channel: aiormq.abc.AbstractChannel, sub: Subscription
    ) -> None:
        await self._declare(channel, sub)
        await self._consume(channel, sub)

    async def _consume(self, channel: aiormq.abc.AbstractChannel, sub: Subscription) -> None:
        on_message = self._inline_handler(sub) if sub.inline else self._queued_handler(sub)
        ok = await channel.basic_consume(sub.queue, on_message, no_ack=True)
        tag = str(ok.consumer_tag)
        if not sub.active:  # unsubscribed meanwhile
            await self._cancel(channel, tag)
            return
        sub.consumer_tag = tag
        self._by_tag[tag] = sub

    def _inline_handler(self, sub: Subscription) -> aiormq.abc.ConsumerCallback:
        deliver = self._deliver

        def on_message(delivered: aiormq.abc.DeliveredMessage) -> None:
            deliver(sub, delivered)

        return direct_consumer(on_message)

    def _queued_handler(self, sub: Subscription) -> aiormq.abc.ConsumerCallback:
        """Deliveries read together go to the delivery thread together: one hand-over (and
        at most one wake-up of that thread) per read, not per message."""
        loop = self._link.loop

        def on_message(delivered: aiormq.abc.DeliveredMessage) -> None:
            self._handed.append((sub, delivered))
            if not self._hand_scheduled:
                self._hand_scheduled = True
                loop.call_soon(self._hand_over)

        return direct_consumer(on_message)

    def _hand_over(self) -> None:
        self._hand_scheduled = False
        batch, self._handed = self._handed, []
        dispatcher = self._dispatcher
        if dispatcher is not None and batch:
            dispatcher.put_batch(batch)

    async def _restore(self, channel: aiormq.abc.AbstractChannel) -> None:
        """Declare and consume every subscription on a (re)opened channel."""
        channel.on_consumer_cancel_callbacks.add(self._on_cancel)
        self._by_tag.clear()
        subs = [sub for sub in self._subs.values() if sub.active]
        for sub in subs:
            sub.restoring = True
        try:
            for sub in subs:
                await self._declare_and_consume(channel, sub)
                sub.restoring = False
        finally:
            for sub in subs:
                sub.restoring = False

    async def _on_cancel(self, frame: Basic.Cancel) -> None:
        sub = self._by_tag.pop(str(frame.consumer_tag), None)
        if sub is None or not sub.active:
            return
        self.consumer_cancels.bump()
        sub.cancels += 1
        sub.restoring = True
        log.warning(
            "the broker cancelled the consumer of %r (queue %r deleted or its node went down); "
            "declaring and consuming it again",
            sub.pattern,
            sub.queue,
        )
        self._link.spawn(self._resubscribe(sub))

    async def _resubscribe(self, sub: Subscription) -> None:
        try:
            channel = await self._slot.get(self._options["connect_timeout"])
            await self._declare_and_consume(channel, sub)
        except Exception as exc:
            log.error("consuming %r again failed: %r", sub.pattern, exc)
            return
        finally:
            sub.restoring = False
        self.resubscribes.bump()

    def status(self, subscription_id: str) -> SubscriptionStatus:
        """Whether the broker still feeds the subscription's queue to its consumer, and the
        messages ready in that queue (its depth: ``backlog``).

        The broker cancels a consumer whose queue was deleted (``basic.cancel``); the
        subscription then counts one loss (``lost``) while it is declared and consumed again.
        """
        sub = self._subs.get(subscription_id)
        if sub is None or not sub.active:
            return SubscriptionStatus(
                False, f"{subscription_id} is not subscribed on this AMQP transport"
            )
        tag = sub.consumer_tag
        if sub.restoring or (tag is not None and self._by_tag.get(tag) is sub):
            return SubscriptionStatus(True, lost=sub.cancels, backlog=self._depth(sub.queue))
        return SubscriptionStatus(
            False,
            f"queue {sub.queue!r} of {sub.pattern!r} has no consumer on the broker: it was "
            "cancelled and consuming it again failed",
            lost=sub.cancels,
        )

    def _depth(self, queue: str) -> int | None:
        """The messages ready in ``queue`` (a passive declare on a channel of its own, so that
        a missing queue closes only that channel); ``None`` when the broker cannot tell now or
        when called on the link's loop, where waiting is not allowed."""
        if self._link.bg.in_loop_thread():
            return None
        try:
            return self._link.run(self._declare_passive(queue), timeout=5)
        except Exception:
            return None

    async def _declare_passive(self, queue: str) -> int:
        conn = await self._link.connection(5)
        channel = await conn.channel()
        try:
            declared = await channel.queue_declare(queue, passive=True)
            return int(declared.message_count or 0)
        finally:
            if not channel.is_closed:
                await channel.close()

    # -- tearing down ------------------------------------------------------------------------

    def pop(self, subscription_id: str) -> Subscription | None:
        sub = self._subs.pop(subscription_id, None)
        if sub is not None:
            sub.active = False
        return sub

    async def stop(self, sub: Subscription) -> None:
        tag = sub.consumer_tag
        channel = self._slot.channel
        if tag is None or channel is None or channel.is_closed:
            return
        self._by_tag.pop(tag, None)
        await self._cancel(channel, tag)

    @staticmethod
    async def _cancel(channel: aiormq.abc.AbstractChannel, tag: str) -> None:
        try:
            await channel.basic_cancel(tag)
        except Exception as exc:  # the channel or connection is gone: nothing left to cancel
            log.debug("AMQP basic.cancel of %r: %r", tag, exc)

    def deactivate_all(self) -> None:
        for sub in self._subs.values():
            sub.active = False
        self._subs.clear()

    def stop_dispatcher(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.stop()

    # -- delivering --------------------------------------------------------------------------

    def _deliver(self, sub: Subscription, delivered: aiormq.abc.DeliveredMessage) -> None:
        """Decode and call back (on the delivery thread, or inline on the loop)."""
        if not sub.active:
            return
        try:
            message = _codec.decode_delivered(self._codec, delivered)
        except ProtocolError as exc:
            self.decode_failed(exc, f"subscription {sub.pattern!r}")
            return
        self.delivered.bump()
        if sub.loop is not None:
            future = asyncio.run_coroutine_threadsafe(self._run_coroutine(sub, message), sub.loop)
            future.add_done_callback(lambda f: None if f.cancelled() else f.exception())
            return
        try:
            sub.callback(message)
        except Exception:
            self.callback_errors.bump()
            log.exception("subscription callback raised for topic %r", message.topic)

    async def _run_coroutine(self, sub: Subscription, message: Message) -> None:
        try:
            await cast(Callable[[Message], Awaitable[None]], sub.callback)(message)
        except Exception:
            self.callback_errors.bump()
            log.exception("subscription coroutine raised for topic %r", message.topic)

    def decode_failed(self, exc: BaseException, where: str) -> None:
        count = self.decode_errors.bump() + 1
        if count in (1, 10, 100) or count % 1000 == 0:
            log.warning(
                "dropped an unreadable AMQP message for %s (%d so far): %s", where, count, exc
            )

    # -- receive -----------------------------------------------------------------------------

    async def receive(self, pattern: str, timeout: float | None) -> Message | None:
        channel = await self._slot.get(self._options["connect_timeout"])
        queue = f"{self._prefix}.r{next(self._ids)}"
        future: asyncio.Future[Message] = self._link.loop.create_future()

        async def on_message(delivered: aiormq.abc.DeliveredMessage) -> None:
            if future.done():
                return
            try:
                message = _codec.decode_delivered(self._codec, delivered)
            except ProtocolError as exc:
                self.decode_failed(exc, f"receive({pattern!r})")
                return
            self.delivered.bump()
            future.set_result(message)

        binding = self._exchanges.binding(pattern)
        await channel.queue_declare(queue, exclusive=True, auto_delete=True)
        await channel.queue_bind(
            queue, binding.exchange, routing_key=binding.routing_key, arguments=binding.arguments
        )
        ok = await channel.basic_consume(queue, on_message, no_ack=True)
        try:
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            return None
        finally:
            await self._cancel(channel, str(ok.consumer_tag))

    def stats(self) -> dict[str, Any]:
        dispatcher = self._dispatcher
        return {
            "delivered": self.delivered.value,
            "dropped": dispatcher.dropped.value if dispatcher is not None else 0,
            "decode_errors": self.decode_errors.value,
            "callback_errors": self.callback_errors.value,
            "consumer_cancels": self.consumer_cancels.value,
            "resubscribes": self.resubscribes.value,
            "delivery_queue": dispatcher.depth() if dispatcher is not None else 0,
            "subscriptions": len(self._subs),
        }


class WatchedSubscriptions:
    """The part of :class:`~eventforge_amqp.AmqpTransport` that answers
    :meth:`~eventforge.transport.Transport.subscription_status` from its subscriptions."""

    _subs: Subscriptions

    def subscription_status(self, subscription_id: str) -> SubscriptionStatus:
        """Whether the broker still feeds the subscription's queue to its consumer, and how
        often it was cancelled (its queue deleted) and consumed again."""
        return self._subs.status(subscription_id)
