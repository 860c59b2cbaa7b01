"""Putting items into a JetStream work queue: each ``put`` returns once the item is stored.

Every publish carries ``Nats-Msg-Id`` (the message id), so one retried after a lost
acknowledgement is stored once (within the stream's ``duplicate_window``). ``put`` is one
``js.publish`` retried along :data:`PUBLISH_RETRY` until ``put_timeout``. ``put_many``
pipelines a batch on one reply inbox (:class:`AckInbox`) with the same guarantees, item by
item: a round publishes every item still unacknowledged, then waits once for the batch. An item
with a due time is published as a message schedule instead (:mod:`eventforge_nats._schedules`),
with the same acknowledgement and the same retries.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from eventforge.errors import FrameTooLarge, TransportClosedError, TransportError
from eventforge.transport import Backoff, Counter

from ._connection import NatsConnection
from ._schedules import schedule_headers

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription
    from nats.js.client import JetStreamContext

__all__ = [
    "DUPLICATE",
    "PUBLISH_RETRY",
    "STORED",
    "AckBatch",
    "AckInbox",
    "Item",
    "Outgoing",
    "Producer",
]

log = logging.getLogger("eventforge.transports.nats")

PUBLISH_RETRY = Backoff(initial=0.05, cap=1.0)
"""The pause before a JetStream publish is tried again (put, put_many, dead letters)."""

STORED = 1
"""Outcome of an item JetStream stored (``AckBatch.outcomes``)."""
DUPLICATE = 2
"""Outcome of an item JetStream already had (a retry of a publish that did land)."""

Item = tuple[bytes, str, float | None]
"""An item to put: its envelope, its message id and its due time (``None``: deliver now)."""
Outgoing = tuple[bytes, str, dict[str, str]]
"""An item as published: its envelope, subject and headers."""

Outcome = int | str | BaseException | None
"""Per item of a batch: ``None`` unknown yet, ``STORED`` / ``DUPLICATE``, the description of a
JetStream error reply (``str``: refused, not stored), or the exception its publish raised."""


class AckBatch:
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


class AckInbox:
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
        self._waiting: dict[str, tuple[AckBatch, int]] = {}
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
        self, client: Client, outgoing: list[Outgoing], batch: AckBatch, todo: Sequence[int]
    ) -> None:
        """Publish the items ``todo`` of ``batch``, each with a fresh reply subject."""
        import nats.errors

        batch.open = set(todo)
        batch.done = asyncio.get_running_loop().create_future()
        waiting, prefix, tokens = self._waiting, self._prefix, batch.tokens
        publish = client.publish
        for index in todo:
            data, subject, headers = outgoing[index]
            self._next += 1
            token = str(self._next)
            waiting[token] = (batch, index)
            tokens.append(token)
            try:
                await publish(subject, data, prefix + token, headers)
            except nats.errors.ConnectionClosedError:
                batch.answered(index, TransportClosedError("the NATS connection is closed"))
            except nats.errors.Error as exc:  # e.g. the reconnect buffer is full
                batch.answered(index, TransportError(f"{type(exc).__name__}: {exc}"))

    def forget(self, batch: AckBatch) -> None:
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
        outcome = pub_ack_outcome(msg.data)
        if outcome is None:
            batch.unanswered(index)
        else:
            batch.answered(index, outcome)


def pub_ack_outcome(data: bytes) -> Outcome:
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
        return STORED
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
    return DUPLICATE if reply.get("duplicate") else STORED


class Producer:
    """The puts of one work queue and their counters."""

    def __init__(self, conn: NatsConnection, js: JetStreamContext, name: str, subject: str) -> None:
        self._conn = conn
        self._js = js
        self._name = name
        self._subject = subject
        self._acks: AckInbox | None = None
        self.put = Counter()
        self.retries = Counter()
        self.duplicates = Counter()

    def outgoing(self, data: bytes, msg_id: str, due: float | None) -> Outgoing:
        """The subject and headers an item is published with: the queue's subject, or the
        subject of its schedule when it has a due time."""
        if due is None:
            return data, self._subject, {"Nats-Msg-Id": msg_id}
        return data, *schedule_headers(self._subject, msg_id, due)

    async def put_one(self, item: Item, timeout: float) -> None:
        """Store one item; retry with the same ``Nats-Msg-Id`` until ``timeout``."""
        import nats.errors
        import nats.js.errors

        deadline = time.monotonic() + timeout
        data, subject, headers = self.outgoing(*item)
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            try:
                ack = await self._js.publish(
                    subject, data, timeout=max(0.1, min(2.0, remaining)), headers=headers
                )
            except (nats.errors.TimeoutError, nats.js.errors.NoStreamResponseError) as exc:
                # The acknowledgement is unknown: retry with the same Nats-Msg-Id, so a publish
                # that did land is deduplicated by the server.
                attempt += 1
                delay = PUBLISH_RETRY.delay(attempt)
                if time.monotonic() + delay >= deadline:
                    raise TransportError(
                        f"JetStream did not acknowledge the item for work queue {self._name!r} "
                        f"within {timeout}s ({type(exc).__name__}); it may or may not be stored: "
                        "retry put() with the same message to be sure"
                    ) from None
                self.retries.bump()
                await asyncio.sleep(delay)
                continue
            except nats.errors.ConnectionClosedError:
                raise TransportClosedError("the NATS connection is closed") from None
            except nats.errors.MaxPayloadError:
                raise FrameTooLarge(len(data), self._conn.client.max_payload) from None
            self.put.bump()
            if ack.duplicate:
                self.duplicates.bump()
            return

    async def put_many(self, items: list[Item], timeout: float) -> None:
        """Store a batch of items pipelined on one inbox (see the module)."""
        if not items:
            return
        client = self._conn.client
        limit = client.max_payload
        for data, _, _ in items:
            if len(data) > limit:
                # Refused before anything is sent: no part of the batch is stored.
                raise FrameTooLarge(len(data), limit)
        outgoing = [self.outgoing(*item) for item in items]
        inbox = await self._ack_inbox()
        batch = AckBatch(len(items))
        deadline = time.monotonic() + timeout
        todo: Sequence[int] = range(len(items))
        attempt = 0
        try:
            while True:
                await inbox.publish_round(client, outgoing, batch, todo)
                remaining = deadline - time.monotonic()
                await batch.wait(max(0.1, min(2.0, remaining)))
                todo = [i for i in todo if batch.outcomes[i] is None]
                if not todo:
                    break
                attempt += 1
                delay = PUBLISH_RETRY.delay(attempt)
                if time.monotonic() + delay >= deadline:
                    break
                # Acknowledgement unknown (lost, late, or no stream listening yet): publish
                # again with the same Nats-Msg-Id, so one that did land is deduplicated.
                _bump(self.retries, len(todo))
                await asyncio.sleep(delay)
        finally:
            inbox.forget(batch)
        self._settle_batch(batch, len(items), timeout)

    def _settle_batch(self, batch: AckBatch, total: int, timeout: float) -> None:
        """Count the acknowledged items of a finished batch; raise for the others."""
        outcomes = batch.outcomes
        duplicates = outcomes.count(DUPLICATE)
        _bump(self.put, outcomes.count(STORED) + duplicates)
        _bump(self.duplicates, duplicates)
        refused = [o for o in outcomes if isinstance(o, str)]
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        unknown = outcomes.count(None) + len(failed)
        if refused:
            also = f"; {unknown} more were not acknowledged" if unknown else ""
            raise TransportError(
                f"JetStream refused {len(refused)} of {total} items for work queue "
                f"{self._name!r} ({refused[0]}): they are not stored{also}; fix the cause "
                "(stream limits or configuration) before putting them again"
            )
        if unknown:
            first = failed[0] if failed else f"no acknowledgement within {timeout}s"
            raise TransportError(
                f"{unknown} of {total} items for work queue {self._name!r} were not "
                f"acknowledged (first: {first}); they may or may not be stored: put them again "
                "(same ids) to be sure"
            )

    async def _ack_inbox(self) -> AckInbox:
        """The acknowledgement inbox, subscribed on first use.

        nats-py re-subscribes it after every reconnect; replies lost while the link was down
        leave their items unacknowledged, and those are published again.
        """
        inbox = self._acks
        if inbox is None or inbox.client is not self._conn.client:
            inbox = AckInbox(self._conn.client, self._conn.client.new_inbox())
            # Set before the first await: a concurrent batch uses this inbox, whose SUB is
            # queued on the connection ahead of that batch's publishes.
            self._acks = inbox
            try:
                await inbox.start()
            except BaseException:
                self._acks = None
                raise
        return inbox

    def detach_inbox(self) -> AckInbox | None:
        """Take the acknowledgement inbox away (closing: the caller stops it on the loop)."""
        inbox, self._acks = self._acks, None
        return inbox


def _bump(counter: Counter, times: int) -> None:
    for _ in range(times):
        counter.bump()
