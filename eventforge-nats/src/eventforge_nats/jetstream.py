"""A durable work queue on JetStream: the backend behind ``WorkQueue(name, transport=nats)``.

Layout, per queue ``name`` (``<token>`` is ``name`` made safe for stream names):

* stream ``EF_WQ_<token>`` on subject ``eventforge.wq.<token>``: file storage, work-queue
  retention (an acked item is deleted), a ``duplicate_window`` for publisher retries;
* durable pull consumer ``eventforge``: explicit ack, ``ack_wait`` (an item whose consumer died
  is redelivered after it), no ``max_deliver`` (the retry policy decides, see below);
* stream ``EF_DLQ_<token>`` on subject ``eventforge.dlq.<token>``: the dead letters we own.

Guarantees: ``put`` returns once JetStream acknowledged the item (file store), so an
acknowledged item is never lost; ``Nats-Msg-Id`` is the message id, so a ``put`` retried after a
lost acknowledgement is stored once; ``put_many`` pipelines a batch on one reply inbox (see
:class:`_AckInbox`) with the same guarantees, item by item. Delivery is at-least-once: an item is redelivered after a
nack (with the policy's delay), or after ``ack_wait`` when its consumer vanished. An item is
dead-lettered by storing it in the dead-letter stream first and then TERMinating it, so a crash
in between redelivers it rather than losing it; an item delivered more than
``policy.max_attempts`` times without being settled (its consumers keep crashing) is
dead-lettered when fetched. Malformed envelopes are dead-lettered as raw bytes, never retried.

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
import hashlib
import json
import logging
import re
import threading
import time
import weakref
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from eventforge.errors import (
    FrameTooLarge,
    ProtocolError,
    TransportClosedError,
    TransportError,
    UnsupportedCapabilityError,
)
from eventforge.message import Message
from eventforge.transport import (
    DEAD_LETTER_REASON_HEADER,
    DeadLetter,
    Delivery,
    RetryPolicy,
    WorkQueueBackend,
)
from eventforge.wire import WireCodec

from ._connection import NatsConnection
from ._pull import Puller, close_all

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription
    from nats.js.client import JetStreamContext

__all__ = ["JetStreamWorkQueue", "queue_names"]

log = logging.getLogger("eventforge.transports.nats")

CONSUMER = "eventforge"
REASON_HEADER = "Eventforge-Reason"
ATTEMPTS_HEADER = "Eventforge-Attempts"
FAILED_AT_HEADER = "Eventforge-Failed-At"
MALFORMED_HEADER = "x-eventforge-malformed"
_FETCH_CHUNK = 2.0
_ACK = b"+ACK"
_WPI = b"+WPI"
_LEDGER_LIMIT = 100_000

Enqueue = Callable[[str, bytes], None]
T = TypeVar("T")


class _Ledger:
    """The deliveries of one stream held in this process: per stream sequence, the highest
    delivery count fetched and how many fetched deliveries are not settled yet.

    Shared by every backend of one stream on one connection, so that a settle of a delivery
    whose item was fetched again since (its ``ack_wait`` ran out) is recognised as stale.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[int, list[int]] = {}  # stream seq -> [newest delivery count, open]

    def fetched(self, seq: int, count: int, *, held: bool) -> None:
        """Record a fetched delivery; ``held=False`` for one settled at once (dead-lettered)."""
        with self._lock:
            entry = self._held.get(seq)
            if entry is None:
                if held:
                    self._held[seq] = [count, 1]
                    if len(self._held) > _LEDGER_LIMIT:
                        # Deliveries never settled (their consumer died here) would pile up:
                        # forget the oldest; only its stale detection is lost.
                        del self._held[next(iter(self._held))]
                return
            entry[0] = max(entry[0], count)
            entry[1] += held

    def settle(self, seq: int, count: int) -> bool:
        """Forget one delivery; return whether a newer delivery of the item was fetched."""
        with self._lock:
            entry = self._held.get(seq)
            if entry is None:
                return False
            entry[1] -= 1
            if entry[1] <= 0:
                del self._held[seq]
            return entry[0] > count

    def superseded(self, seq: int, count: int) -> bool:
        """Tell whether a newer delivery of the item was fetched (without forgetting it)."""
        with self._lock:
            entry = self._held.get(seq)
            return entry is not None and entry[0] > count


_ledgers: weakref.WeakKeyDictionary[NatsConnection, dict[str, _Ledger]] = (
    weakref.WeakKeyDictionary()
)
_ledgers_lock = threading.Lock()


def _ledger(conn: NatsConnection, stream: str) -> _Ledger:
    with _ledgers_lock:
        return _ledgers.setdefault(conn, {}).setdefault(stream, _Ledger())


def queue_names(name: str) -> dict[str, str]:
    """Stream, subject and dead-letter names for the queue ``name``."""
    token = re.sub(r"[^A-Za-z0-9_-]", "_", name)
    if token != name:
        token = f"{token}_{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return {
        "stream": f"EF_WQ_{token}",
        "subject": f"eventforge.wq.{token}",
        "dlq_stream": f"EF_DLQ_{token}",
        "dlq_subject": f"eventforge.dlq.{token}",
    }


_STORED = 1
"""Outcome of an item JetStream stored (``_AckBatch.outcomes``)."""
_DUPLICATE = 2
"""Outcome of an item JetStream already had (a retry of a publish that did land)."""

Outcome = int | str | BaseException | None
"""Per item of a batch: ``None`` unknown yet, ``_STORED`` / ``_DUPLICATE``, the description of a
JetStream error reply (``str``: refused, not stored), or the exception its publish raised."""


class _AckBatch:
    """The items of one ``put_many``: their outcomes, and the ones awaited in this round."""

    __slots__ = ("done", "open", "outcomes", "tokens")

    def __init__(self, size: int) -> None:
        self.outcomes: list[Outcome] = [None] * size
        self.open: set[int] = set()
        self.tokens: list[str] = []
        self.done: asyncio.Future[None] | None = None

    def answered(self, index: int, outcome: Outcome) -> None:
        """Record the outcome of item ``index`` (from a reply or a failed publish)."""
        if self.outcomes[index] is not None:
            return  # a late reply to an earlier publish of an item already settled
        self.outcomes[index] = outcome
        self.unanswered(index)

    def unanswered(self, index: int) -> None:
        """Take item ``index`` off this round's wait; unless :meth:`answered`, it is a reply
        that settles nothing (no responders), and the item is published again."""
        self.open.discard(index)
        if not self.open and self.done is not None and not self.done.done():
            self.done.set_result(None)

    async def wait(self, timeout: float) -> None:
        """Wait until every item of this round is answered, or ``timeout``."""
        done = self.done
        if self.open and done is not None:
            await asyncio.wait((done,), timeout=timeout)


class _AckInbox:
    """One wildcard reply subscription (``<inbox>.*``) for the acknowledgements of a backend.

    ``put_many`` publishes each item with its own reply subject ``<inbox>.<n>`` and resolves
    it from the reply here: a PubAck (``{"stream": ..., "seq": ..., "duplicate": ...}``), a
    JetStream error (``{"error": {...}}``), or a ``503`` status (no stream listens on the
    subject: nothing was stored). This replaces one ``js.publish`` request per item (a future,
    a timer and a task each) with plain publishes and one wait per batch; the guarantees are
    those of ``js.publish``, the same ``Nats-Msg-Id`` being sent again for every retry.
    nats-py re-subscribes the inbox after a reconnect.
    """

    def __init__(self, client: Client, prefix: str) -> None:
        self.client = client
        self._prefix = prefix + "."
        self._cut = len(self._prefix)
        self._next = 0
        self._waiting: dict[str, tuple[_AckBatch, int]] = {}
        self._sub: Subscription | None = None

    async def start(self) -> None:
        self._sub = await self.client.subscribe(self._prefix + "*", cb=self._on_reply)

    async def stop(self) -> None:
        """Unsubscribe the inbox (the backend is closing)."""
        sub, self._sub = self._sub, None
        if sub is not None:
            try:
                await sub.unsubscribe()
            except Exception as exc:  # the connection closed meanwhile: nothing to undo
                log.debug("unsubscribing an acknowledgement inbox: %r", exc)

    async def publish_round(
        self,
        client: Client,
        subject: str,
        encoded: list[tuple[bytes, str]],
        batch: _AckBatch,
        todo: Sequence[int],
    ) -> None:
        """Publish the items ``todo`` of ``batch``, each with a fresh reply subject."""
        import nats.errors

        batch.open = set(todo)
        batch.done = asyncio.get_running_loop().create_future()
        waiting, prefix, tokens = self._waiting, self._prefix, batch.tokens
        publish = client.publish
        for index in todo:
            data, msg_id = encoded[index]
            self._next += 1
            token = str(self._next)
            waiting[token] = (batch, index)
            tokens.append(token)
            try:
                await publish(subject, data, prefix + token, {"Nats-Msg-Id": msg_id})
            except nats.errors.ConnectionClosedError:
                batch.answered(index, TransportClosedError("the NATS connection is closed"))
            except nats.errors.Error as exc:  # e.g. the reconnect buffer is full
                batch.answered(index, TransportError(f"{type(exc).__name__}: {exc}"))

    def forget(self, batch: _AckBatch) -> None:
        """Drop the reply subjects of a finished batch (later replies are ignored)."""
        waiting = self._waiting
        for token in batch.tokens:
            waiting.pop(token, None)

    async def _on_reply(self, msg: Msg) -> None:
        entry = self._waiting.get(msg.subject[self._cut :])
        if entry is None:
            return  # its batch is finished
        batch, index = entry
        headers = msg.headers
        if headers and headers.get("Status"):
            # 503: no stream listens (yet), nothing was stored. Any other status is no answer
            # either. Either way the item is published again (until put_timeout).
            batch.unanswered(index)
            return
        outcome = _pub_ack_outcome(msg.data)
        if outcome is None:
            batch.unanswered(index)
        else:
            batch.answered(index, outcome)


def _pub_ack_outcome(data: bytes) -> Outcome:
    """The outcome of a reply to a JetStream publish: stored, duplicate or refused (``None``
    for a reply that is none of these: the item's fate is unknown, it is published again)."""
    if (
        data.startswith(b'{"stream":"')
        and b'"seq":' in data
        and b'"error"' not in data
        and b'"duplicate"' not in data
    ):
        # The common PubAck, ``{"stream":"EF_WQ_..","seq":N}``, without json.loads: our
        # stream names hold no quotes, so these markers are unambiguous. Anything else (a
        # duplicate, an error) is parsed.
        return _STORED
    try:
        reply = json.loads(data)
    except ValueError:
        reply = None
    if not isinstance(reply, dict):
        reply = {}
    error = reply.get("error")
    if error is not None:
        if isinstance(error, dict):
            return (
                f"code={error.get('code')} err_code={error.get('err_code')}: "
                f"{error.get('description')}"
            )
        return f"error {error!r}"
    if "seq" not in reply:
        log.warning("unexpected reply to a JetStream publish (retried): %r", data[:200])
        return None
    return _DUPLICATE if reply.get("duplicate") else _STORED


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
        names = queue_names(name)
        self.stream = names["stream"]
        self.subject = names["subject"]
        self.dlq_stream = names["dlq_stream"]
        self.dlq_subject = names["dlq_subject"]
        self._js: JetStreamContext = conn.client.jetstream()
        self._idle: list[Puller] = []
        self._pullers: weakref.WeakSet[Puller] = weakref.WeakSet()
        self._closed = False
        self._lock = threading.Lock()
        self._acks: _AckInbox | None = None
        self._closing: asyncio.Task[None] | None = None  # close() called on the loop itself
        self.counters = {
            "put": 0,
            "put_retries": 0,
            "put_duplicates": 0,
            "fetched": 0,
            "malformed": 0,
            "recreated": 0,
            "pulls_lost": 0,
            "stale_settles": 0,
        }
        self._ledger = _ledger(conn, self.stream)
        self._setup()
        conn.on_reconnect(self._after_reconnect)

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

    # -- setup -------------------------------------------------------------------------------

    def _setup(self) -> None:
        import nats.errors
        import nats.js.errors

        try:
            self._conn.run(self._ensure(), timeout=30)
        except (nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError):
            raise UnsupportedCapabilityError(
                f"work queue {self.name!r} needs JetStream, which this NATS server does not "
                "offer; start nats-server with JetStream enabled (-js) or use another transport",
                transport="nats",
                capability="durable",
            ) from None
        except (nats.errors.Error, TimeoutError) as exc:
            raise TransportError(
                f"could not set up the JetStream work queue {self.name!r}: "
                f"{type(exc).__name__}: {exc}"
            ) from None

    async def _ensure(self) -> bool:
        """Create the streams and the consumer when missing; return whether any was missing."""
        import nats.js.errors
        from nats.js.api import (
            AckPolicy,
            ConsumerConfig,
            RetentionPolicy,
            StorageType,
            StreamConfig,
        )

        created = False
        for stream, subject, retention in (
            (self.stream, self.subject, RetentionPolicy.WORK_QUEUE),
            (self.dlq_stream, self.dlq_subject, RetentionPolicy.LIMITS),
        ):
            try:
                await self._js.stream_info(stream)
            except nats.js.errors.NotFoundError:
                await self._js.add_stream(
                    StreamConfig(
                        name=stream,
                        subjects=[subject],
                        retention=retention,
                        storage=StorageType.FILE,
                        duplicate_window=self.duplicate_window,
                    )
                )
                created = True
        try:
            await self._js.consumer_info(self.stream, CONSUMER)
        except nats.js.errors.NotFoundError:
            await self._js.add_consumer(
                self.stream,
                ConsumerConfig(
                    durable_name=CONSUMER,
                    ack_policy=AckPolicy.EXPLICIT,
                    ack_wait=self.ack_wait,
                    max_deliver=-1,
                    max_ack_pending=self.max_ack_pending,
                    filter_subject=self.subject,
                ),
            )
            created = True
        return created

    async def _after_reconnect(self) -> None:
        # Pull requests in flight may have died with the old connection (nats-py#504): drop
        # them all, so waiting fetches re-issue theirs at once; then check that the stream and
        # the consumer still exist.
        if self._closed:
            return
        for puller in list(self._pullers):
            puller.abandon()
        try:
            if await self._ensure():
                self.counters["recreated"] += 1
                log.error(
                    "JetStream work queue %r: stream or consumer was missing after reconnect and "
                    "was recreated; items stored before may be lost (is the store persistent?)",
                    self.name,
                )
        except Exception as exc:
            log.warning("JetStream work queue %r: check after reconnect failed: %r", self.name, exc)

    # -- producing ---------------------------------------------------------------------------

    def put(self, message: Message) -> None:
        """Store ``message``; return once JetStream acknowledged it (retrying with one msg id)."""
        data = self._codec.encode(message)
        self._check_open()
        self._run(self._put(data, message.id), timeout=self.put_timeout + 5)

    async def put_async(self, message: Message) -> None:
        """:meth:`put` for coroutines."""
        data = self._codec.encode(message)
        self._check_open()
        await self._conn.call(self._put(data, message.id))

    def put_many(self, messages: list[Message]) -> None:
        """Store several items with their publishes in flight together; return once all are
        acknowledged (each retried on its own with its own ``Nats-Msg-Id``).

        The batch is pipelined on the connection (see :class:`_AckInbox`): every item is
        published with a reply subject on one inbox of this backend, and the whole batch waits
        for its acknowledgements with one deadline. Items whose acknowledgement did not come,
        or that found no stream (no responders), are published again with the same
        ``Nats-Msg-Id`` until ``put_timeout``, so an item that did land is stored once.
        """
        encoded = [(self._codec.encode(m), m.id) for m in messages]
        self._check_open()
        self._run(self._put_many(encoded), timeout=self.put_timeout + 5)

    async def _put_many(self, encoded: list[tuple[bytes, str]]) -> None:
        if not encoded:
            return
        client = self._conn.client
        limit = client.max_payload
        for data, _ in encoded:
            if len(data) > limit:
                # Refused before anything is sent: no part of the batch is stored.
                raise FrameTooLarge(len(data), limit)
        inbox = await self._ack_inbox()
        batch = _AckBatch(len(encoded))
        deadline = time.monotonic() + self.put_timeout
        delay = 0.05
        todo: Sequence[int] = range(len(encoded))
        try:
            while True:
                await inbox.publish_round(client, self.subject, encoded, batch, todo)
                remaining = deadline - time.monotonic()
                await batch.wait(max(0.1, min(2.0, remaining)))
                todo = [i for i in todo if batch.outcomes[i] is None]
                if not todo:
                    break
                if time.monotonic() + delay >= deadline:
                    break
                # Acknowledgement unknown (lost, late, or no stream listening yet): publish
                # again with the same Nats-Msg-Id, so one that did land is deduplicated.
                self.counters["put_retries"] += len(todo)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
        finally:
            inbox.forget(batch)
        self._settle_batch(batch, len(encoded))

    def _settle_batch(self, batch: _AckBatch, total: int) -> None:
        """Count the acknowledged items of a finished batch; raise for the others."""
        outcomes = batch.outcomes
        duplicates = outcomes.count(_DUPLICATE)
        self.counters["put"] += outcomes.count(_STORED) + duplicates
        self.counters["put_duplicates"] += duplicates
        refused = [o for o in outcomes if isinstance(o, str)]
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        unknown = outcomes.count(None) + len(failed)
        if refused:
            also = f"; {unknown} more were not acknowledged" if unknown else ""
            raise TransportError(
                f"JetStream refused {len(refused)} of {total} items for work queue "
                f"{self.name!r} ({refused[0]}): they are not stored{also}; fix the cause "
                "(stream limits or configuration) before putting them again"
            )
        if unknown:
            first = failed[0] if failed else f"no acknowledgement within {self.put_timeout}s"
            raise TransportError(
                f"{unknown} of {total} items for work queue {self.name!r} were not "
                f"acknowledged (first: {first}); they may or may not be stored: put them again "
                "(same ids) to be sure"
            )

    async def _ack_inbox(self) -> _AckInbox:
        """This backend's acknowledgement inbox, subscribed on first use.

        nats-py re-subscribes it after every reconnect; replies lost while the link was down
        leave their items unacknowledged, and those are published again.
        """
        inbox = self._acks
        if inbox is None or inbox.client is not self._conn.client:
            inbox = _AckInbox(self._conn.client, self._conn.client.new_inbox())
            # Set before the first await: a concurrent batch uses this inbox, whose SUB is
            # queued on the connection ahead of that batch's publishes.
            self._acks = inbox
            try:
                await inbox.start()
            except BaseException:
                self._acks = None
                raise
        return inbox

    async def _put(self, data: bytes, msg_id: str) -> None:
        import nats.errors
        import nats.js.errors

        deadline = time.monotonic() + self.put_timeout
        headers = {"Nats-Msg-Id": msg_id}
        delay = 0.05
        while True:
            remaining = deadline - time.monotonic()
            try:
                ack = await self._js.publish(
                    self.subject, data, timeout=max(0.1, min(2.0, remaining)), headers=headers
                )
            except (nats.errors.TimeoutError, nats.js.errors.NoStreamResponseError) as exc:
                # The acknowledgement is unknown: retry with the same Nats-Msg-Id, so a publish
                # that did land is deduplicated by the server.
                if time.monotonic() + delay >= deadline:
                    raise TransportError(
                        f"JetStream did not acknowledge the item for work queue {self.name!r} "
                        f"within {self.put_timeout}s ({type(exc).__name__}); it may or may not "
                        "be stored: retry put() with the same message to be sure"
                    ) from None
                self.counters["put_retries"] += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            except nats.errors.ConnectionClosedError:
                raise TransportClosedError("the NATS connection is closed") from None
            except nats.errors.MaxPayloadError:
                limit = self._conn.client.max_payload
                raise FrameTooLarge(len(data), limit) from None
            self.counters["put"] += 1
            if ack.duplicate:
                self.counters["put_duplicates"] += 1
            return

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
        puller = await self._acquire()
        try:
            while True:
                chunk = _FETCH_CHUNK if deadline is None else deadline - time.monotonic()
                msgs = await puller.pull(max_items, chunk)
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
                    self.counters["pulls_lost"] += 1
                    await puller.close()
                    puller = await self._acquire()
        finally:
            if puller.usable:
                self._idle.append(puller)
            else:
                self.counters["pulls_lost"] += 1
                await puller.close()
            if puller.consumer_gone:
                await self._after_reconnect()

    async def _acquire(self) -> Puller:
        while self._idle:
            puller = self._idle.pop()
            if puller.usable:
                return puller
            await puller.close()
        puller = Puller(self._conn, f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{CONSUMER}")
        await puller.start()
        self._pullers.add(puller)
        return puller

    async def _accept(self, msg: Msg) -> Delivery | None:
        attempt = msg.metadata.num_delivered
        seq = msg.metadata.sequence.stream
        try:
            message = self._codec.decode(msg.data)
        except ProtocolError as exc:
            self.counters["malformed"] += 1
            log.warning("work queue %r: malformed item dead-lettered: %s", self.name, exc)
            raw = Message(
                self.name,
                msg.data.decode("utf-8", "replace"),
                {MALFORMED_HEADER: True},
            )
            self._ledger.fetched(seq, attempt, held=False)
            await self._store_dead(raw, msg.data, f"malformed envelope: {exc}", attempt)
            await msg.term()
            return None
        self.counters["fetched"] += 1
        self._ledger.fetched(seq, attempt, held=True)
        return Delivery(message, attempt, self.name, token=msg, backend=self)

    # -- settling ----------------------------------------------------------------------------

    def ack(self, delivery: Delivery) -> bool | None:
        """Send ``+ACK`` (not waited for); ``False`` when this delivery is known to be stale."""
        if self._stale(delivery):
            return False
        self._enqueue(self._reply(delivery), _ACK)
        return None

    def nack(self, delivery: Delivery, *, delay: float = 0.0) -> bool | None:
        """Send ``-NAK`` with the delay; ``False`` when this delivery is known to be stale."""
        if self._stale(delivery):
            return False
        payload = b"-NAK"
        if delay > 0:
            payload += b' {"delay": %d}' % int(delay * 1e9)
        self._enqueue(self._reply(delivery), payload)
        return None

    def touch(self, delivery: Delivery) -> None:
        msg: Msg = delivery.token
        if not self._ledger.superseded(msg.metadata.sequence.stream, msg.metadata.num_delivered):
            self._enqueue(msg.reply, _WPI)

    def dead_letter(self, delivery: Delivery, reason: str) -> bool | None:
        """Store in the dead-letter stream, then ``+TERM``; ``False`` when known to be stale."""
        if self._stale(delivery):
            return False
        msg: Msg = delivery.token
        message = delivery.message
        self._run(self._dead_letter(msg, message, reason, delivery.attempt), timeout=60)
        return None

    def _stale(self, delivery: Delivery) -> bool:
        """Forget the delivery; tell (and count) whether a newer one of its item was fetched."""
        msg: Msg = delivery.token
        if not self._ledger.settle(msg.metadata.sequence.stream, msg.metadata.num_delivered):
            return False
        with self._lock:
            self.counters["stale_settles"] += 1
        log.info(
            "work queue %r: settle of delivery %d of stream sequence %d not sent: the item was "
            "delivered again since (its ack_wait ran out)",
            self.name,
            msg.metadata.num_delivered,
            msg.metadata.sequence.stream,
        )
        return True

    async def _dead_letter(self, msg: Msg, message: Message, reason: str, attempt: int) -> None:
        await self._store_dead(message, self._codec.encode(message), reason, attempt)
        await msg.term()

    async def _store_dead(self, message: Message, data: bytes, reason: str, attempt: int) -> None:
        headers = {
            "Nats-Msg-Id": f"dead-{message.id}-{attempt}",
            REASON_HEADER: reason.replace("\r", " ").replace("\n", " "),
            ATTEMPTS_HEADER: str(attempt),
            FAILED_AT_HEADER: repr(time.time()),
        }
        deadline = time.monotonic() + self.put_timeout
        while True:
            try:
                await self._js.publish(self.dlq_subject, data, timeout=2.0, headers=headers)
                return
            except Exception as exc:
                if time.monotonic() >= deadline:
                    raise TransportError(
                        f"could not store a dead letter of work queue {self.name!r}: {exc!r}; "
                        "the item stays in the queue and will be redelivered"
                    ) from None
                await asyncio.sleep(0.2)

    @staticmethod
    def _reply(delivery: Delivery) -> str:
        msg: Msg = delivery.token
        return msg.reply

    # -- dead letters ------------------------------------------------------------------------

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        self._check_open()
        return self._run(self._dead_letters(limit), timeout=60)

    async def _dead_letters(self, limit: int) -> list[DeadLetter]:
        import nats.js.errors

        info = await self._js.stream_info(self.dlq_stream)
        letters: list[DeadLetter] = []
        seq = info.state.first_seq
        while seq <= info.state.last_seq and len(letters) < limit and info.state.messages:
            try:
                raw = await self._js.get_msg(self.dlq_stream, seq)
            except nats.js.errors.NotFoundError:
                seq += 1
                continue
            letters.append(self._letter(seq, raw.data or b"", raw.headers or {}))
            seq += 1
        return letters

    def _letter(self, seq: int, data: bytes, headers: dict[str, str]) -> DeadLetter:
        try:
            message = self._codec.decode(data)
        except ProtocolError:
            message = Message(self.name, data.decode("utf-8", "replace"), {MALFORMED_HEADER: True})
        return DeadLetter(
            message=message,
            reason=headers.get(REASON_HEADER, ""),
            attempts=int(headers.get(ATTEMPTS_HEADER, "0") or 0),
            failed_at=float(headers.get(FAILED_AT_HEADER, "0") or 0),
            token=seq,
        )

    def replay(self, tokens: list[Any] | None = None) -> int:
        self._check_open()
        return self._run(self._replay(tokens), timeout=120)

    async def _replay(self, tokens: list[Any] | None) -> int:
        import nats.js.errors

        if tokens is None:
            tokens = [letter.token for letter in await self._dead_letters(1_000_000)]
        count = 0
        for seq in tokens:
            try:
                raw = await self._js.get_msg(self.dlq_stream, int(seq))
            except nats.js.errors.NotFoundError:
                continue
            letter = self._letter(int(seq), raw.data or b"", raw.headers or {})
            if letter.message.headers.get(MALFORMED_HEADER):
                log.warning(
                    "work queue %r: dead letter %s is malformed; not replayed", self.name, seq
                )
                continue
            letter.message.headers.pop(DEAD_LETTER_REASON_HEADER, None)
            await self._js.publish(
                self.subject,
                self._codec.encode(letter.message),
                timeout=5.0,
                headers={"Nats-Msg-Id": f"replay-{self.dlq_stream}-{seq}"},
            )
            await self._js.delete_msg(self.dlq_stream, int(seq))
            count += 1
        return count

    # -- introspection -----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        if self._closed:
            return {"pending": 0, "in_flight": 0, "dead_letters": 0, **self.counters}
        return self._run(self._stats(), timeout=30)

    async def _stats(self) -> dict[str, Any]:
        consumer = await self._js.consumer_info(self.stream, CONSUMER)
        dlq = await self._js.stream_info(self.dlq_stream)
        return {
            "pending": consumer.num_pending or 0,
            "in_flight": consumer.num_ack_pending or 0,
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
        idle, self._idle = self._idle, []
        acks, self._acks = self._acks, None
        if (not idle and acks is None) or self._conn.state == "closed":
            return

        async def release() -> None:
            await close_all(idle)
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
