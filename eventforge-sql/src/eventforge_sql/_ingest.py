"""Feeding an inbox: from a WorkQueue, a subscription, or EventFlow's Redis Streams.

Each source is acknowledged only after the insert committed, so an event the process takes and
loses before its commit is redelivered by the source and stored then; a redelivery after the
commit is skipped by the event id.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from eventforge.message import Message
from eventforge.transport import Backoff
from eventforge.workqueue import Delivery, WorkQueue

from .streams import InvalidStreamEntry, event_from_stream_entry

__all__ = ["Ingestion", "start_ingestion"]

log = logging.getLogger("eventforge_sql.inbox")


class _Target(Protocol):
    name: str

    def add(self, messages: Message | Iterable[Message], conn: Any = None) -> None: ...

    def add_dead(self, message: Message, reason: str) -> None: ...


class Ingestion:
    """A running feed into an inbox; :meth:`stop` ends it. ``stored`` counts the events
    handed to the inbox (duplicates included), ``failures`` the inserts that failed and were
    left to the source to redeliver, ``invalid`` the entries kept as dead letters."""

    def __init__(self, name: str, loop: Callable[[Ingestion], None] | None = None) -> None:
        self.stored = 0
        self.failures = 0
        self.invalid = 0
        self._stopping = threading.Event()
        self._unsubscribe: Callable[[], Any] | None = None
        self._thread: threading.Thread | None = None
        if loop is not None:
            self._thread = threading.Thread(
                target=loop, args=(self,), name=f"eventforge-ingest-{name}", daemon=True
            )
            self._thread.start()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def wait(self, seconds: float) -> bool:
        return self._stopping.wait(seconds)

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop taking events (a batch being stored finishes first)."""
        self._stopping.set()
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def __enter__(self) -> Ingestion:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_ingestion(
    inbox: _Target,
    source: Any,
    topic: str | None = None,
    *,
    batch_size: int = 100,
    group: str | None = None,
    consumer: str = "eventforge",
    block: float = 1.0,
    claim_idle: float = 60.0,
) -> Ingestion:
    """Start feeding ``inbox`` from ``source`` (see :meth:`eventforge_sql.Inbox.ingest_from`).

    A Redis client (anything with ``xreadgroup``) reads the stream ``topic`` as consumer
    ``consumer`` of ``group`` (created if missing), the way EventFlow's consumer does; entries
    idle ``claim_idle`` seconds in a dead consumer's hands are taken over.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(source, WorkQueue):
        return Ingestion(inbox.name, lambda run: _from_queue(inbox, source, run, batch_size))
    if hasattr(source, "xreadgroup"):
        if topic is None or group is None:
            raise TypeError("reading a Redis stream needs topic= (the stream) and group=")
        stream_reader = _StreamReader(inbox, source, topic, group, consumer, batch_size, block)
        stream_reader.claim_idle = claim_idle
        return Ingestion(inbox.name, stream_reader.run)
    if hasattr(source, "subscribe"):
        if topic is None:
            raise TypeError("ingesting from a subscription needs the topic to subscribe to")
        return _from_subscription(inbox, source, topic)
    raise TypeError(
        f"cannot ingest from {source!r}: pass a WorkQueue, a transport or anything with "
        "subscribe(topic, callback), or a Redis client (with topic= the stream and group=)"
    )


def _from_queue(inbox: _Target, queue: WorkQueue, run: Ingestion, batch_size: int) -> None:
    backoff = Backoff(initial=0.1, cap=5.0)
    failures = 0
    while not run.stopping:
        try:
            first = queue.get(timeout=0.2)
        except Exception:
            log.warning("inbox %r: reading the source queue failed", inbox.name, exc_info=True)
            run.wait(1.0)
            continue
        if first is None:
            continue
        batch: list[Delivery] = [first]
        while len(batch) < batch_size:
            more = queue.get(timeout=0)
            if more is None:
                break
            batch.append(more)
        try:
            inbox.add([d.message for d in batch])
        except Exception:
            failures += 1
            run.failures += 1
            delay = backoff.delay(failures)
            log.warning(
                "inbox %r: storing %d events failed; the source redelivers them in %.1fs",
                inbox.name,
                len(batch),
                delay,
                exc_info=True,
            )
            for delivery in batch:  # back to the source without spending a retry attempt
                delivery.settled = True
                queue.backend.nack(delivery, delay=delay)
            run.wait(delay)
            continue
        failures = 0
        run.stored += len(batch)
        for delivery in batch:
            delivery.ack()


def _from_subscription(inbox: _Target, source: Any, topic: str) -> Ingestion:
    run = Ingestion(inbox.name)

    def store(message: Message) -> None:
        try:
            inbox.add(message)
            run.stored += 1
        except Exception:
            run.failures += 1
            log.error(
                "inbox %r: could not store message %s from subscription %r; a subscription "
                "cannot redeliver it (use a WorkQueue source for at-least-once ingestion)",
                inbox.name,
                message.id,
                topic,
                exc_info=True,
            )

    subscription = source.subscribe(topic, store)
    run._unsubscribe = lambda: source.unsubscribe(subscription)
    return run


class _StreamReader:
    """EventFlow's consumer-group read of a Redis stream, storing into the inbox."""

    claim_idle = 60.0

    def __init__(
        self,
        inbox: _Target,
        client: Any,
        stream: str,
        group: str,
        consumer: str,
        batch_size: int,
        block: float,
    ) -> None:
        self.inbox = inbox
        self.client = client
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.batch_size = batch_size
        self.block_ms = max(1, int(block * 1000))

    def _ensure_group(self) -> None:
        try:
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except Exception as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def run(self, run: Ingestion) -> None:
        backoff = Backoff(initial=0.1, cap=5.0)
        failures = 0
        cursor = "0"  # first this consumer's own unacknowledged entries, then new ones
        last_claim = 0.0
        ready = False
        while not run.stopping:
            try:
                if not ready:
                    self._ensure_group()
                    ready = True
                if time.monotonic() - last_claim >= self.claim_idle / 2:
                    last_claim = time.monotonic()
                    self._store(run, self._claim_idle())
                response = self.client.xreadgroup(
                    self.group,
                    self.consumer,
                    {self.stream: cursor},
                    count=self.batch_size,
                    block=None if cursor == "0" else self.block_ms,
                )
                entries = response[0][1] if response else []
                if cursor == "0" and not entries:
                    cursor = ">"
                    continue
                self._store(run, entries)
                failures = 0
            except Exception:
                failures += 1
                run.failures += 1
                log.warning(
                    "inbox %r: reading stream %r failed; retrying (unacknowledged entries "
                    "stay with the group)",
                    self.inbox.name,
                    self.stream,
                    exc_info=True,
                )
                cursor = "0"
                run.wait(backoff.delay(failures))

    def _claim_idle(self) -> list[Any]:
        result = self.client.xautoclaim(
            self.stream,
            self.group,
            self.consumer,
            min_idle_time=int(self.claim_idle * 1000),
            start_id="0-0",
            count=self.batch_size,
        )
        return list(result[1]) if result else []

    def _store(self, run: Ingestion, entries: list[Any]) -> None:
        entries = [(entry_id, fields) for entry_id, fields in entries if fields]
        if not entries:
            return
        messages = []
        for entry_id, fields in entries:
            try:
                messages.append(event_from_stream_entry(fields, self.stream, entry_id))
            except InvalidStreamEntry as exc:
                # Kept, not dropped: a dead letter keyed by the entry id, with the reason.
                raw = {str(k): str(v) for k, v in fields.items()}
                entry = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
                bad = Message(self.stream, raw, {"stream_id": entry}, id=f"{self.stream}:{entry}")
                self.inbox.add_dead(bad, str(exc))
                run.invalid += 1
        if messages:
            self.inbox.add(messages)
        run.stored += len(messages)
        self.client.xack(self.stream, self.group, *[entry_id for entry_id, _ in entries])
