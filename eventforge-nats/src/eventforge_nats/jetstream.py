"""A durable work queue on JetStream: the backend behind ``WorkQueue(name, transport=nats)``.

Layout: a work-queue stream with one durable pull consumer, and a dead-letter stream
(:mod:`eventforge_nats._streams`). The parts: puts (:mod:`eventforge_nats._put`), the consumer
kept present and its pull inboxes (:mod:`eventforge_nats._consumer`), dead letters
(:mod:`eventforge_nats._dead_letters`), stale-settle detection (:mod:`eventforge_nats._ledger`);
fetching and settling are here.

Delayed items (``put(..., delay=)``) are message schedules kept in the queue's stream
(:mod:`eventforge_nats._schedules`, nats-server 2.12 or later); the server delivers each to the
queue when its clock reaches the due time.

Guarantees: ``put`` returns once JetStream acknowledged the item (file store), so an
acknowledged item is never lost; ``Nats-Msg-Id`` is the message id, so a ``put`` retried after a
lost acknowledgement is stored once; ``put_many`` pipelines a batch with the same guarantees,
item by item. Delivery is at-least-once: an item is redelivered after a nack (with the policy's
delay), or after ``ack_wait`` when its consumer vanished. An item is dead-lettered by storing it
in the dead-letter stream first and then TERMinating it, so a crash in between redelivers it
rather than losing it; an item delivered more than ``policy.max_attempts`` times without being
settled (its consumers keep crashing) is dead-lettered when fetched. Malformed envelopes are
dead-lettered as raw bytes, never retried.

Stale settles: JetStream acknowledges by stream sequence and does not check the delivery count,
and it answers an ack (even one sent with ``ack_sync``) the same whether or not the ack took
effect. So a late ``+ACK`` from a consumer whose ``ack_wait`` ran out still removes the item if
it arrives first, and a late ``-NAK`` or ``+TERM`` hits the item that someone else now holds.
The server cannot tell such a settle from a fresh one, but this process can when it fetched the
newer delivery itself: every backend on one connection keeps, per stream sequence it holds, the
highest delivery count it fetched. A settle of an older delivery of such an item is *not sent*,
is counted in ``stale_settles`` and returns ``False``, so the queue counts the item once and a
stale nack or dead letter never disturbs the current holder. A redelivery fetched by another
process (or another connection) is not visible here: that stale settle is sent and returns
``None``, as JetStream gives no way to detect it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from eventforge.errors import ProtocolError, TransportClosedError, TransportError
from eventforge.message import Message
from eventforge.transport import (
    NOT_BEFORE_HEADER,
    Counter,
    DeadLetter,
    Delivery,
    RetryPolicy,
    WorkQueueBackend,
    malformed_item,
)
from eventforge.wire import WireCodec

from ._connection import NatsConnection
from ._consumer import Consumer
from ._dead_letters import DeadLetters
from ._ledger import ledger_for
from ._put import Item, Producer
from ._schedules import schedules_known_missing, stream_schedules
from ._streams import CONSUMER, QueueLayout, queue_names, setup_error

if TYPE_CHECKING:
    from nats.aio.msg import Msg

__all__ = ["JetStreamWorkQueue", "queue_names"]

log = logging.getLogger("eventforge.transports.nats")

_FETCH_CHUNK = 2.0
_ACK = b"+ACK"
_WPI = b"+WPI"

Enqueue = Callable[[str, bytes], None]
T = TypeVar("T")


class JetStreamWorkQueue(WorkQueueBackend):
    """One named durable work queue (see the module docstring for layout and guarantees)."""

    durable = True
    lease_setting = "ack_wait"

    def __init__(
        self,
        conn: NatsConnection,
        codec: WireCodec,
        name: str,
        policy: RetryPolicy,
        enqueue: Enqueue,
        *,
        ack_wait: float = 30.0,
        duplicate_window: float = 120.0,
        max_ack_pending: int = 10_000,
        put_timeout: float = 30.0,
    ) -> None:
        self.name = name
        self.policy = policy
        self.ack_wait = ack_wait
        self.duplicate_window = duplicate_window
        self.max_ack_pending = max_ack_pending
        self.put_timeout = put_timeout
        self._conn = conn
        self._codec = codec
        self._enqueue = enqueue
        self._server_version = conn.client.connected_server_version
        self._schedules_ready = False
        layout = QueueLayout.of(
            name,
            ack_wait=ack_wait,
            duplicate_window=duplicate_window,
            max_ack_pending=max_ack_pending,
            schedules=not schedules_known_missing(self._server_version),
        )
        self.stream = layout.stream
        self.subject = layout.subject
        self.dlq_stream = layout.dlq_stream
        self.dlq_subject = layout.dlq_subject
        self._js = conn.client.jetstream()
        self._producer = Producer(conn, self._js, name, layout.subject)
        self._consumer = Consumer(conn, self._js, layout)
        self._dead = DeadLetters(self._js, codec, layout)
        self._ledger = ledger_for(conn, layout.stream)
        self._closed = False
        self._closing: asyncio.Task[None] | None = None  # close() called on the loop itself
        self._fetched = Counter()
        self._malformed = Counter()
        self._stale_settles = Counter()
        try:
            self._conn.run(self._consumer.start(), timeout=30)
        except Exception as exc:
            raise setup_error(name, exc) from None

    @property
    def delays(self) -> bool:  # type: ignore[override]
        """Whether the server keeps delayed items (message schedules: nats-server 2.12+)."""
        return not schedules_known_missing(self._server_version)

    @property
    def counters(self) -> dict[str, int]:
        """What this backend counted (also in :meth:`stats`)."""
        return {
            "put": self._producer.put.value,
            "put_retries": self._producer.retries.value,
            "put_duplicates": self._producer.duplicates.value,
            "fetched": self._fetched.value,
            "malformed": self._malformed.value,
            "recreated": self._consumer.recreated.value,
            "pulls_lost": self._consumer.pulls_lost.value,
            "stale_settles": self._stale_settles.value,
        }

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the connection's loop; nats-py errors become ``TransportError``."""
        import nats.errors

        try:
            return self._conn.run(coro, timeout)
        except (nats.errors.Error, TimeoutError) as exc:
            if isinstance(exc, nats.errors.ConnectionClosedError):
                raise TransportClosedError("the NATS connection is closed") from None
            raise TransportError(
                f"JetStream work queue {self.name!r}: {type(exc).__name__}: {exc} (connection "
                f"{self._conn.state})"
            ) from None

    # -- producing ---------------------------------------------------------------------------

    def put(self, message: Message) -> None:
        """Store ``message``; return once JetStream acknowledged it (retrying with one msg id).

        An item with a due time in the future is stored as a message schedule."""
        item = self._item(message)
        self._check_open()
        self._run(self._put_one(item), self.put_timeout + 5)

    async def put_async(self, message: Message) -> None:
        """:meth:`put` for coroutines."""
        item = self._item(message)
        self._check_open()
        await self._conn.call(self._put_one(item))

    def _item(self, message: Message) -> Item:
        due = message.headers.get(NOT_BEFORE_HEADER)
        if due is not None and float(due) <= time.time():
            due = None  # already due: a plain put (a schedule would wait for the server's timer)
        return self._codec.encode(message), message.id, None if due is None else float(due)

    async def _put_one(self, item: Item) -> None:
        if item[2] is not None:
            await self._schedules()
        await self._producer.put_one(item, self.put_timeout)

    async def _schedules(self) -> None:
        """Make sure the stream keeps schedules before the first delayed put (see
        :mod:`eventforge_nats._schedules`)."""
        if not self._schedules_ready:
            version = self._conn.client.connected_server_version
            await stream_schedules(self._js, self.stream, self.subject, version)
            self._schedules_ready = True

    def put_many(self, messages: list[Message]) -> None:
        """Store several items with their publishes in flight together; return once all are
        acknowledged (each retried on its own with its own ``Nats-Msg-Id``).

        The batch is pipelined on the connection (see :class:`~eventforge_nats._put.AckInbox`):
        every item is published with a reply subject on one inbox of this backend, and the whole
        batch waits for its acknowledgements with one deadline. Items whose acknowledgement did
        not come, or that found no stream (no responders), are published again with the same
        ``Nats-Msg-Id`` until ``put_timeout``, so an item that did land is stored once.
        """
        items = [self._item(m) for m in messages]
        self._check_open()
        self._run(self._put_many(items), self.put_timeout + 5)

    async def _put_many(self, items: list[Item]) -> None:
        if any(item[2] is not None for item in items):
            await self._schedules()
        await self._producer.put_many(items, self.put_timeout)

    # -- consuming ---------------------------------------------------------------------------

    def fetch(self, max_items: int = 1, timeout: float | None = None) -> list[Delivery]:
        self._check_open()
        return self._run(self._fetch(max_items, timeout))

    async def fetch_async(self, max_items: int = 1, timeout: float | None = None) -> list[Delivery]:
        """:meth:`fetch` for coroutines."""
        self._check_open()
        return await self._conn.call(self._fetch(max_items, timeout))

    async def _fetch(self, max_items: int, timeout: float | None) -> list[Delivery]:
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        deadline = None if timeout is None else time.monotonic() + timeout
        consumer = self._consumer
        puller = await consumer.acquire()
        try:
            while True:
                chunk = _FETCH_CHUNK if deadline is None else deadline - time.monotonic()
                msgs = await puller.pull(max_items, chunk)
                left = _FETCH_CHUNK if deadline is None else deadline - time.monotonic()
                await consumer.after_pull(puller, left)
                deliveries = []
                for msg in msgs:
                    delivery = await self._accept(msg)
                    if delivery is not None:
                        deliveries.append(delivery)
                if deliveries or self._closed:
                    return deliveries
                if deadline is not None and time.monotonic() >= deadline:
                    return []
                if not puller.usable:
                    puller = await consumer.replace(puller)
        finally:
            await consumer.release(puller, closed=self._closed)

    async def _accept(self, msg: Msg) -> Delivery | None:
        attempt = msg.metadata.num_delivered
        seq = msg.metadata.sequence.stream
        try:
            message = self._codec.decode(msg.data)
        except ProtocolError as exc:
            self._malformed.bump()
            log.warning("work queue %r: malformed item dead-lettered: %s", self.name, exc)
            self._ledger.fetched(seq, attempt, held=False)
            raw, reason = malformed_item(self.name, msg.data, exc)
            await self._dead.store(raw, msg.data, reason, attempt, self.put_timeout)
            await msg.term()
            return None
        self._fetched.bump()
        self._ledger.fetched(seq, attempt, held=True)
        return Delivery(message, attempt, self.name, token=msg, backend=self)

    # -- settling ----------------------------------------------------------------------------

    def ack(self, delivery: Delivery) -> bool | None:
        """Send ``+ACK`` (not waited for); ``False`` when this delivery is known to be stale."""
        if self._stale(delivery):
            return False
        self._enqueue(_token(delivery).reply, _ACK)
        return None

    def nack(self, delivery: Delivery, *, delay: float = 0.0) -> bool | None:
        """Send ``-NAK`` with the delay; ``False`` when this delivery is known to be stale."""
        if self._stale(delivery):
            return False
        payload = b"-NAK"
        if delay > 0:
            payload += b' {"delay": %d}' % int(delay * 1e9)
        self._enqueue(_token(delivery).reply, payload)
        return None

    def touch(self, delivery: Delivery) -> None:
        msg = _token(delivery)
        if not self._ledger.superseded(msg.metadata.sequence.stream, msg.metadata.num_delivered):
            self._enqueue(msg.reply, _WPI)

    def dead_letter(self, delivery: Delivery, reason: str) -> bool | None:
        """Store in the dead-letter stream, then ``+TERM``; ``False`` when known to be stale."""
        if self._stale(delivery):
            return False
        self._run(self._dead_letter(_token(delivery), delivery, reason), timeout=60)
        return None

    async def _dead_letter(self, msg: Msg, delivery: Delivery, reason: str) -> None:
        message = delivery.message
        data = self._codec.encode(message)
        await self._dead.store(message, data, reason, delivery.attempt, self.put_timeout)
        await msg.term()

    def _stale(self, delivery: Delivery) -> bool:
        """Forget the delivery; tell (and count) whether a newer one of its item was fetched."""
        msg = _token(delivery)
        if not self._ledger.settle(msg.metadata.sequence.stream, msg.metadata.num_delivered):
            return False
        self._stale_settles.bump()
        log.info(
            "work queue %r: settle of delivery %d of stream sequence %d not sent: the item was "
            "delivered again since (its ack_wait ran out)",
            self.name,
            msg.metadata.num_delivered,
            msg.metadata.sequence.stream,
        )
        return True

    # -- dead letters ------------------------------------------------------------------------

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        self._check_open()
        return self._run(self._dead.letters(limit), timeout=60)

    def replay(self, tokens: list[Any] | None = None) -> int:
        self._check_open()
        return self._run(self._dead.replay(tokens), timeout=120)

    # -- introspection -----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        if self._closed:
            return {"pending": 0, "in_flight": 0, "dead_letters": 0, **self.counters}
        return self._run(self._stats(), timeout=30)

    async def _stats(self) -> dict[str, Any]:
        consumer = await self._js.consumer_info(self.stream, CONSUMER)
        stream = await self._js.stream_info(self.stream)
        dlq = await self._js.stream_info(self.dlq_stream)
        ready = consumer.num_pending or 0
        in_flight = consumer.num_ack_pending or 0
        # The stream holds the ready items, those handed out, and the schedules of delayed ones.
        delayed = max(0, stream.state.messages - ready - in_flight)
        return {
            "pending": ready + delayed,
            "in_flight": in_flight,
            "delayed": delayed,
            "redelivered": consumer.num_redelivered or 0,
            "dead_letters": dlq.state.messages,
            **self.counters,
        }

    def _check_open(self) -> None:
        if self._closed:
            raise TransportClosedError(f"work queue backend {self.name!r} is closed")

    def close(self) -> None:
        """Stop fetching; the stream, consumer and dead letters stay on the server."""
        if self._closed:
            return
        self._closed = True
        acks = self._producer.detach_inbox()

        async def release() -> None:
            await self._consumer.close()
            if acks is not None:
                await acks.stop()

        if self._conn.bg.in_loop_thread():
            self._closing = self._conn.loop.create_task(release())
            return
        try:
            self._conn.run(release(), timeout=5)
        except Exception as exc:
            log.debug("closing the inboxes of %r: %r", self.name, exc)

    def __repr__(self) -> str:
        return f"JetStreamWorkQueue({self.name!r}, stream={self.stream!r})"


def _token(delivery: Delivery) -> Msg:
    msg: Msg = delivery.token
    return msg
