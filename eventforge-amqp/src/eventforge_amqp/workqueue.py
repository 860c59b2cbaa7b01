"""A durable work queue on RabbitMQ quorum queues: the backend behind
``WorkQueue(name, transport=AmqpTransport(...))``.

Layout per queue ``name``: quorum queues ``eventforge.wq.<name>`` (items) and ``.dlq`` (see
:mod:`eventforge_amqp._wq_topology`); delayed items and retries wait in the delay levels shared
by every work queue of the vhost (:mod:`eventforge_amqp._wq_delays`).

Guarantees: ``put`` publishes a persistent message with ``mandatory`` on a confirm channel and
returns once the broker confirmed it (an unconfirmed put is retried with the same message id
until ``publish_timeout``); ``put_many`` publishes the whole batch and then awaits the confirms
together. A put with a due time (``WorkQueue.put(..., delay=)``) goes to the delay levels the
same way. Consumers take items with manual acks and a bounded prefetch. A nack republishes the
item (attempt + 1) through the delay levels for its backoff — confirmed — and then acks it, so
a crash in between redelivers rather than loses it (at-least-once). Dead-lettering stores
first, then acks. Redeliveries are deduplicated by message id against the ids this backend
acked recently.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Coroutine
from typing import Any, TypeVar, cast

import aiormq.abc
import pamqp.commands
from eventforge.errors import ProtocolError, TransportClosedError
from eventforge.message import Message
from eventforge.transport import (
    DEAD_LETTER_REASON_HEADER,
    MALFORMED_HEADER,
    Counter,
    DeadLetter,
    Delivery,
    RetryPolicy,
    WorkQueueBackend,
    for_replay,
    malformed_item,
)
from eventforge.wire import WireCodec

from . import _codec
from ._channel import direct_consumer
from ._connection import Link
from ._wq_acks import AckSender, Token
from ._wq_delays import MAX_DELAY, DelayedItems, DelayLevels, due_of
from ._wq_publish import ConfirmedPublisher, Outgoing
from ._wq_topology import (
    ATTEMPT,
    ATTEMPTS,
    FAILED_AT,
    REASON,
    WorkQueueTopology,
    letter_from,
)

__all__ = ["AmqpWorkQueue"]

log = logging.getLogger("eventforge.transports.amqp")

T = TypeVar("T")
_RECENT_IDS = 10_000


class AmqpWorkQueue(WorkQueueBackend):
    """One work queue on a quorum queue; thread-safe (consumer threads fetch and settle)."""

    durable = True
    delays = True

    def __init__(
        self,
        link: Link,
        codec: WireCodec,
        name: str,
        policy: RetryPolicy,
        options: dict[str, Any],
        levels: DelayLevels | None = None,
    ) -> None:
        self.name = name
        self.policy = policy
        self._link = link
        self._codec = codec
        self.publish_timeout: float = options["publish_timeout"]
        self.prefetch: int = options["prefetch"]
        limit = options["delivery_limit"] or policy.max_attempts
        self.topology = WorkQueueTopology(name, limit)
        self._publisher = link.slot(f"wq-publish:{name}", confirms=True)
        self._publisher.hooks.append(self.topology.declare)
        self._consumer = link.slot(f"wq-consume:{name}", confirms=False, eager=True)
        self._consumer.hooks.append(self._start_consuming)
        self._consuming = False
        self._buffer: collections.deque[aiormq.abc.DeliveredMessage] = collections.deque()
        self._arrived: asyncio.Event | None = None
        self._recent: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._settled = Counter()
        self._closed = False
        self._delayed = DelayedItems()
        self.counters = {
            name: Counter()
            for name in (
                "put",
                "fetched",
                "acks_sent",
                "nacks_sent",
                "dead_letters_stored",
                "over_delivered",
                "malformed",
                "duplicates_dropped",
                "stale_settles",
                "put_retries",
            )
        }
        self.acks = AckSender(link, name, self.prefetch, self.counters)
        self.publisher = ConfirmedPublisher(
            self._publisher,
            levels if levels is not None else DelayLevels(),
            name,
            self.publish_timeout,
            self.counters["put_retries"],
        )
        self._run(self._publisher.get(self.publish_timeout))

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if self._link.bg.in_loop_thread():
            coro.close()
            raise RuntimeError(
                "a blocking work-queue call was made on the AMQP transport's event loop; use "
                "the *_async variants there"
            )
        return self._link.run(coro, timeout)

    def _check_open(self) -> None:
        if self._closed:
            raise TransportClosedError(f"work queue backend {self.name!r} is closed")

    # -- putting -----------------------------------------------------------------------------

    def put(self, message: Message) -> None:
        self._check_open()
        self._run(self._put_batch([message]))

    async def put_async(self, message: Message) -> None:
        self._check_open()
        await self._link.call(self._put_batch([message]))

    def put_many(self, messages: list[Message]) -> None:
        """Publish every item, then await their confirms together (one pipeline, not N waits)."""
        self._check_open()
        if messages:
            self._run(self._put_batch(list(messages)))

    async def _put_batch(self, messages: list[Message]) -> None:
        items = [self._encode(m, due_of(m)) for m in messages]
        await self.publisher.publish(items)
        for message, item in zip(messages, items, strict=True):
            self.counters["put"].bump()
            if item.due is not None:
                self._delayed.add(message.id, item.due)

    def _encode(
        self,
        message: Message,
        due: float | None = None,
        extra: dict[str, Any] | None = None,
        *,
        queue: str | None = None,
    ) -> Outgoing:
        """``message`` for the work queue (or ``queue``), due at ``due``, with ``extra`` headers."""
        body, properties = _codec.encode(self._codec, message, persistent=True)
        if extra:
            properties.headers = {**(properties.headers or {}), **extra}
        return Outgoing(queue or self.topology.queue, body, properties, due)

    # -- fetching ----------------------------------------------------------------------------

    async def _start_consuming(self, channel: aiormq.abc.AbstractChannel) -> None:
        self._buffer.clear()  # deliveries of a closed channel are requeued by the broker
        if not self._consuming:
            return
        await self.topology.declare(channel)
        await channel.basic_qos(prefetch_count=self.prefetch)
        self.acks.consuming(channel)
        consumer = direct_consumer(self._on_delivery)
        await channel.basic_consume(self.topology.queue, consumer, no_ack=False)
        channel.on_consumer_cancel_callbacks.add(self._on_cancel)

    def _on_delivery(self, delivered: aiormq.abc.DeliveredMessage) -> None:
        self.acks.delivered(delivered)
        self._buffer.append(delivered)
        arrived = self._arrived
        if arrived is not None and not arrived.is_set():
            arrived.set()

    async def _on_cancel(self, frame: Any) -> None:
        log.warning("work queue %r: the broker cancelled its consumer; consuming again", self.name)
        self._link.spawn(self._reconsume())

    async def _reconsume(self) -> None:
        try:
            channel = await self._consumer.get(self.publish_timeout)
            await self._start_consuming(channel)
        except Exception as exc:
            log.error("work queue %r: consuming again failed: %r", self.name, exc)

    def fetch(self, max_items: int = 1, timeout: float | None = None) -> list[Delivery]:
        self._check_open()
        return self._run(self._fetch(max_items, timeout))

    async def fetch_async(self, max_items: int = 1, timeout: float | None = None) -> list[Delivery]:
        self._check_open()
        return await self._link.call(self._fetch(max_items, timeout))

    async def _fetch(self, max_items: int, timeout: float | None) -> list[Delivery]:
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        if self._arrived is None:
            self._arrived = asyncio.Event()
        if not self._consuming:
            self._consuming = True
            channel = self._consumer.channel
            if channel is None or channel.is_closed:
                await self._consumer.get(self.publish_timeout)  # its hook starts consuming
            else:
                await self._start_consuming(channel)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            deliveries: list[Delivery] = []
            while self._buffer and len(deliveries) < max_items:
                delivery = await self._accept(self._buffer.popleft())
                if delivery is not None:
                    deliveries.append(delivery)
            if deliveries or self._closed:
                return deliveries
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return []
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                return []

    async def _accept(self, delivered: aiormq.abc.DeliveredMessage) -> Delivery | None:
        channel = delivered.channel
        if channel.is_closed or delivered.delivery_tag is None:
            return None  # its channel closed: the broker requeued it
        token = Token(channel, delivered.delivery_tag)
        props = delivered.header.properties
        headers = cast(dict[str, Any], props.headers or {})
        try:
            message = _codec.decode(self._codec, delivered.body, props, self.name)
        except ProtocolError as exc:
            self.counters["malformed"].bump()
            log.warning("work queue %r: unreadable item dead-lettered: %s", self.name, exc)
            raw, reason = malformed_item(self.name, delivered.body, exc)
            await self._store_dead(raw, reason, 1)
            await self.acks.written(token)
            return None
        attempt = int(headers.get(ATTEMPT, 1) or 1) + int(headers.get("x-delivery-count", 0) or 0)
        message.headers.pop(ATTEMPT, None)
        self._delayed.arrived(message.id)
        if message.id in self._recent:
            self.counters["duplicates_dropped"].bump()
            await self.acks.written(token)
            return None
        if attempt > self.policy.max_attempts:
            self.counters["over_delivered"].bump()
            reason = (
                f"delivered {attempt} times without being settled (max_attempts="
                f"{self.policy.max_attempts}): its consumers crashed or lost their connection"
            )
            message.headers[DEAD_LETTER_REASON_HEADER] = reason
            await self._store_dead(message, reason, attempt)
            await self.acks.written(token)
            return None
        self.counters["fetched"].bump()
        return Delivery(message, attempt, self.name, token=token, backend=self)

    # -- settling ----------------------------------------------------------------------------

    def _stale(self, token: Token) -> bool:
        if token.channel.is_closed:
            self.counters["stale_settles"].bump()
            log.info(
                "work queue %r: a settle was not sent: the channel it came on closed, so the "
                "broker delivers the item again",
                self.name,
            )
            return True
        return False

    def _remember(self, message_id: str) -> None:
        recent = self._recent
        recent[message_id] = None
        if len(recent) > _RECENT_IDS:
            recent.popitem(last=False)

    def ack(self, delivery: Delivery) -> bool | None:
        token: Token = delivery.token
        if self._stale(token):
            return False
        self._settled.bump()
        self._remember(delivery.message.id)
        # Recorded here, sent by the loop with every ack recorded meanwhile (one wake-up, and
        # one basic.ack(multiple) frame for items acked in order): see _wq_acks.
        self.acks.record(token)
        return None

    def _loop_call(self, coro: Coroutine[Any, Any, None]) -> None:
        if self._link.bg.in_loop_thread():
            self._link.spawn(coro)
        else:
            self._link.loop.call_soon_threadsafe(self._link.spawn, coro)

    def nack(self, delivery: Delivery, *, delay: float = 0.0) -> bool | None:
        """Republish with attempt + 1 (to the delay queue of ``delay``), confirmed; then ack."""
        token: Token = delivery.token
        if self._stale(token):
            return False
        self._settled.bump()
        self._run(self._retry(delivery, token, delay), self.publish_timeout + 5)
        return None

    async def _retry(self, delivery: Delivery, token: Token, delay: float) -> None:
        due = time.time() + min(delay, MAX_DELAY) if delay > 0 else None
        item = self._encode(delivery.message, due, {ATTEMPT: delivery.attempt + 1})
        await self.publisher.publish([item])
        self.counters["nacks_sent"].bump()
        if due is not None:
            self._delayed.add(delivery.message.id, due)
        await self.acks.written(token)

    def dead_letter(self, delivery: Delivery, reason: str) -> bool | None:
        token: Token = delivery.token
        if self._stale(token):
            return False
        self._settled.bump()
        self._remember(delivery.message.id)
        self._run(self._dead_letter(delivery, token, reason), self.publish_timeout + 5)
        return None

    async def _dead_letter(self, delivery: Delivery, token: Token, reason: str) -> None:
        await self._store_dead(delivery.message, reason, delivery.attempt)
        await self.acks.written(token)

    async def _store_dead(self, message: Message, reason: str, attempt: int) -> None:
        extra = {
            REASON: reason.replace("\r", " ").replace("\n", " "),
            ATTEMPTS: attempt,
            FAILED_AT: time.time(),
        }
        await self.publisher.publish([self._encode(message, extra=extra, queue=self.topology.dlq)])
        self.counters["dead_letters_stored"].bump()

    # -- dead letters ------------------------------------------------------------------------

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        self._check_open()
        return self._run(self._read_dead(limit, None), timeout=60)[0]

    def replay(self, tokens: list[Any] | None = None) -> int:
        self._check_open()
        return self._run(self._read_dead(None, tokens), timeout=120)[1]

    async def _read_dead(
        self, limit: int | None, replay: list[Any] | None
    ) -> tuple[list[DeadLetter], int]:
        """Read the DLQ on a channel of its own; what is not replayed is requeued on close."""
        conn = await self._link.connection(self.publish_timeout)
        channel = await conn.channel(publisher_confirms=False)
        letters: list[DeadLetter] = []
        replayed = 0
        wanted = None if replay is None else {str(t) for t in replay}
        try:
            await self.topology.declare(channel)
            while limit is None or len(letters) < limit:
                got = await channel.basic_get(self.topology.dlq, no_ack=False)
                if not isinstance(got.delivery, pamqp.commands.Basic.GetOk):
                    break
                letter = letter_from(self._codec, got, self.name)
                letters.append(letter)
                if limit is not None or (wanted is not None and letter.token not in wanted):
                    continue
                if letter.message.headers.get(MALFORMED_HEADER):
                    log.warning("work queue %r: dead letter %s is unreadable; not replayed",
                                self.name, letter.token)  # fmt: skip
                    continue
                for_replay(letter.message)
                await self.publisher.publish([self._encode(letter.message)])
                await channel.basic_ack(int(got.delivery.delivery_tag or 0))
                self._recent.pop(letter.message.id, None)
                replayed += 1
        finally:
            try:
                await channel.close()
            except Exception as exc:
                log.debug("closing the dead-letter channel: %r", exc)
        return letters, replayed

    # -- introspection -----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        counters = {name: c.value for name, c in self.counters.items()}
        if self._closed:
            return {"pending": 0, "in_flight": 0, "dead_letters": 0, **counters}
        return {**self._run(self._stats(), timeout=30), **counters}

    async def _stats(self) -> dict[str, Any]:
        await self.acks.write()
        channel = await self._publisher.get(self.publish_timeout)
        ready, dead = await self.topology.counts(channel)
        buffered = sum(1 for d in self._buffer if not d.channel.is_closed)
        delayed = self._delayed.count()
        return {
            "pending": ready + buffered + delayed,
            "in_flight": max(0, self.counters["fetched"].value - self._settled.value),
            "delayed": delayed,
            "dead_letters": dead,
            "prefetch": self.prefetch,
        }

    def close(self) -> None:
        """Stop consuming (unsettled items go back to the queue); the queues stay."""
        if self._closed:
            return
        self._closed = True
        if self._arrived is not None:
            self._link.loop.call_soon_threadsafe(self._arrived.set)
        channel = self._consumer.channel
        self._consumer.retired = self._publisher.retired = True
        self._link.slots.remove(self._consumer)
        self._link.slots.remove(self._publisher)
        publisher = self._publisher.channel
        for ch in (channel, publisher):
            if ch is not None and not ch.is_closed and not self._link.closing:
                self._loop_call(self._close_channel(ch))

    async def _close_channel(self, channel: aiormq.abc.AbstractChannel) -> None:
        try:
            if channel is self._consumer.channel:
                await self.acks.write()  # the acks recorded before close() count
            await channel.close()
        except Exception as exc:
            log.debug("closing a work-queue channel: %r", exc)

    def __repr__(self) -> str:
        return f"AmqpWorkQueue({self.name!r}, queue={self.topology.queue!r})"
