"""A durable work-queue backend on a database table (the ``sql`` transport's work queues).

Items are rows of the queue table (:mod:`eventforge_sql.schema`). ``put`` returns once the
insert committed; a delayed put (``WorkQueue.put(..., delay=)``) stores its due time in
``available_at``, which the claim already honours. A fetch claims due rows under a lease
(``FOR UPDATE SKIP LOCKED`` where the database has it); ack deletes the row, nack makes it due
again later, dead-lettering keeps it with its reason. An item whose lease expires ``max_attempts`` times is dead-lettered with the
reason "delivered N times without being settled".

Acks are group-committed: the ack of a delivery fetched less than half a lease ago is buffered
and deleted with the next fetch's claim (on PostgreSQL in the claim's own statement, elsewhere in
its transaction), or by a flusher within
``ack_delay`` seconds, so a consumer pays no round trip per item. Such an ack cannot be stale
(the lease has not run out), so it reports ``None``; if the process dies before the flush, the
item is delivered again after its lease (at-least-once, as for a consumer that died before
acking). Older deliveries are acked synchronously and report ``False`` when stale. A ``put`` of a message id already stored in
the queue is skipped, so a producer that resends (an outbox relay after a crash) adds nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from eventforge.errors import TransportClosedError
from eventforge.message import Message
from eventforge.transport import (
    NOT_BEFORE_HEADER,
    DeadLetter,
    Delivery,
    RetryPolicy,
    WorkQueueBackend,
)
from eventforge.wire import decode_envelope, encode_envelope
from sqlalchemy import delete, select
from sqlalchemy.engine import Connection, Engine

from ._claims import Claimed, Claims, by_owner, row_values
from .schema import DEFAULT_SCHEMA, Schema

__all__ = ["SqlWorkQueueBackend"]

log = logging.getLogger("eventforge_sql.workqueue")


class SqlWorkQueueBackend(WorkQueueBackend):
    """The work queue ``name`` stored in ``schema.queue`` through ``engine``.

    ``lease`` is the visibility timeout: an item fetched and not settled (nor extended with
    ``Delivery.in_progress``) within it is delivered again. ``poll_interval`` caps how long an
    idle ``fetch`` sleeps between looks at the table.
    """

    durable = True
    delays = True

    def __init__(
        self,
        engine: Engine,
        name: str,
        retry: RetryPolicy | None = None,
        *,
        schema: Schema | None = None,
        lease: float = 30.0,
        poll_interval: float = 0.05,
        ack_delay: float = 0.05,
    ) -> None:
        self.name = name
        self.engine = engine
        self.retry = retry or RetryPolicy()
        self.schema = schema or DEFAULT_SCHEMA
        self.table = self.schema.queue
        self.claims = Claims(self.table, name, engine.dialect, lease)
        self.poll_interval = poll_interval
        self._closed = threading.Event()
        self._last_sweep = 0.0
        self.ack_delay = ack_delay
        self._acks: list[tuple[int, str]] = []
        self._acks_lock = threading.Lock()
        self._flusher: threading.Thread | None = None
        self._buffer_for = lease / 2  # an ack this soon after its fetch cannot be stale

    # -- producing --------------------------------------------------------------------------

    def put(self, message: Message) -> None:
        self.put_many([message])

    def put_many(self, messages: list[Message]) -> None:
        self._check_open()
        now = time.time()
        rows = [
            row_values(self.name, m.id, encode_envelope(m).decode("utf-8"), now, due=_due(m))
            for m in messages
        ]
        self.claims.commit_rows(self.engine, rows)

    # -- consuming --------------------------------------------------------------------------

    def fetch(self, max_items: int = 1, timeout: float | None = None) -> list[Delivery]:
        self._check_open()
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.002
        while True:
            rows = self._claim(max_items)
            if rows:
                return [self._delivery(row) for row in rows]
            remaining = self.poll_interval if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return []
            if self._closed.wait(min(pause, remaining)):
                raise TransportClosedError(f"work queue {self.name!r} is closed")
            pause = min(pause * 2, self.poll_interval)

    def _claim(self, max_items: int) -> list[Claimed]:
        max_attempts = self.retry.max_attempts
        acks = self._take_acks()
        try:
            with self.claims.connect(self.engine) as conn:
                rows = self.claims.claim(conn, max_items, max_attempts, acks)
        except Exception:
            self._return_acks(acks)  # not committed: they go with the next attempt
            raise
        now = time.monotonic()
        if len(rows) < max_items and now - self._last_sweep > min(1.0, self.claims.lease / 4):
            self._last_sweep = now
            self.claims.sweep(self.engine, max_attempts)
        return rows

    def _delivery(self, row: Claimed) -> Delivery:
        # As bytes, the envelope takes the codec's fast path (a str is validated by the schema).
        message = decode_envelope(row.envelope.encode("utf-8"))
        token = (row.id, row.owner, time.monotonic())
        return Delivery(message, row.attempt, self.name, token=token, backend=self)

    def ack(self, delivery: Delivery) -> bool | None:
        row_id, owner, fetched = delivery.token
        if self.ack_delay > 0 and time.monotonic() - fetched < self._buffer_for:
            with self._acks_lock:
                self._acks.append((row_id, owner))
                if self._flusher is None:
                    self._flusher = threading.Thread(
                        target=self._flush_soon,
                        name=f"eventforge-sql-acks-{self.name}",
                        daemon=True,
                    )
                    self._flusher.start()
            return None
        with self.engine.begin() as conn:
            return self.claims.delete(conn, row_id, owner)

    def _flush_soon(self) -> None:
        """Flush every ``ack_delay`` while acks keep coming; end once none is buffered (under
        the lock, so an ack buffered after that starts a new flusher)."""
        while True:
            self._closed.wait(self.ack_delay)
            flushed = self._flush()
            with self._acks_lock:
                if not self._acks or not flushed or self._closed.is_set():
                    self._flusher = None
                    return

    def _take_acks(self) -> list[tuple[int, str]]:
        with self._acks_lock:
            acks, self._acks = self._acks, []
        return acks

    def _return_acks(self, acks: list[tuple[int, str]]) -> None:
        if acks:
            with self._acks_lock:
                self._acks[:0] = acks

    def _delete_acked(self, conn: Connection, acks: list[tuple[int, str]]) -> None:
        t = self.table
        for owner, ids in by_owner(acks).items():
            conn.execute(delete(t).where(self.claims.id_in(ids), t.c.lease_owner == owner))

    def flush(self) -> None:
        """Commit the buffered acks now (``stats`` and ``close`` do it too)."""
        self._flush()

    def _flush(self) -> bool:
        """Commit the buffered acks; False if that failed (they stay buffered)."""
        acks = self._take_acks()
        if not acks:
            return True
        try:
            with self.engine.begin() as conn:
                self._delete_acked(conn, acks)
        except Exception:
            self._return_acks(acks)
            log.warning(
                "work queue %r: committing %d buffered acks failed; retried with the next "
                "fetch (if this process ends first, those items are delivered again after "
                "their lease)",
                self.name,
                len(acks),
                exc_info=True,
            )
            return False
        return True

    def nack(self, delivery: Delivery, *, delay: float = 0.0) -> bool:
        row_id, owner, _ = delivery.token
        with self.engine.begin() as conn:
            return self.claims.retry_later(conn, row_id, owner, delay)

    def dead_letter(self, delivery: Delivery, reason: str) -> bool:
        row_id, owner, _ = delivery.token
        with self.engine.begin() as conn:
            return self.claims.dead_letter(conn, row_id, owner, reason)

    def touch(self, delivery: Delivery) -> None:
        row_id, owner, _ = delivery.token
        with self.engine.begin() as conn:
            self.claims.extend(conn, row_id, owner)

    # -- dead letters and stats ---------------------------------------------------------------

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        t = self.table
        stmt = (
            select(t.c.id, t.c.envelope, t.c.error, t.c.attempt, t.c.last_error_at)
            .where(t.c.queue == self.name, t.c.status == "dead_letter")
            .order_by(t.c.last_error_at, t.c.id)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [
            DeadLetter(
                decode_envelope(envelope), error or "", attempt, failed_at or 0.0, token=row_id
            )
            for row_id, envelope, error, attempt, failed_at in rows
        ]

    def replay(self, tokens: list[Any] | None = None) -> int:
        with self.engine.begin() as conn:
            return int(conn.execute(self.claims.replay_stmt(tokens)).rowcount)

    def stats(self) -> dict[str, Any]:
        self.flush()
        with self.engine.connect() as conn:
            counts, delayed = self.claims.tally(conn)
        return {
            "pending": counts["pending"] + counts["failed"],
            "in_flight": counts["processing"],
            "delayed": delayed,
            "dead_letters": counts["dead_letter"],
        }

    def close(self) -> None:
        if not self._closed.is_set():
            self._closed.set()
            self.flush()

    def _check_open(self) -> None:
        if self._closed.is_set():
            raise TransportClosedError(f"work queue {self.name!r} is closed")

    def __repr__(self) -> str:
        return f"SqlWorkQueueBackend({self.name!r}, {self.engine.url.render_as_string()!r})"


def _due(message: Message) -> float | None:
    """The Unix time ``message`` may be claimed from (its :data:`NOT_BEFORE_HEADER`), or None."""
    due = message.headers.get(NOT_BEFORE_HEADER)
    if isinstance(due, (int, float)) and not isinstance(due, bool):
        return float(due)
    return None
