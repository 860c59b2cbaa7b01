"""The inbox's status API: counts, look-ups, dead letters, replay and purging old rows."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from eventforge.message import Message
from eventforge.wire import decode_envelope
from sqlalchemy import Row, Table, delete, select
from sqlalchemy.engine import Engine

from ._claims import Claims
from ._engines import sync_companion

__all__ = ["InboxEvent", "InboxStatus"]


@dataclass
class InboxEvent:
    """One stored event, as the handler and the status API see it.

    ``retry_count`` and ``error_message`` are EventFlow's names for ``attempt - 1`` and
    ``error``.
    """

    event_id: str
    event_type: str | None
    payload: Any
    headers: dict[str, Any]
    attempt: int
    status: str
    message: Message = field(repr=False)
    received_at: float = 0.0
    processed_at: float | None = None
    next_retry_at: float | None = None
    error: str | None = None

    @property
    def retry_count(self) -> int:
        return max(0, self.attempt - 1)

    @property
    def error_message(self) -> str | None:
        return self.error


class InboxStatus:
    """Read and repair an inbox's rows (mixed into :class:`~eventforge_sql.Inbox`)."""

    name: str
    table: Table
    claims: Claims
    sync_engine: Engine
    is_async: bool

    _companion: Engine | None = None

    def _sync(self) -> Engine:
        """A sync engine for the blocking calls: the given one, or for an ``AsyncEngine`` a
        companion engine on the same database with the dialect's sync driver."""
        if not self.is_async:
            return self.sync_engine
        if self._companion is None:
            self._companion = sync_companion(self.sync_engine)
        return self._companion

    def _columns(self) -> tuple[Any, ...]:
        t = self.table
        return (
            t.c.message_id, t.c.event_type, t.c.envelope, t.c.attempt, t.c.status,
            t.c.created_at, t.c.processed_at, t.c.available_at, t.c.error,
        )  # fmt: skip

    def _to_event(self, row: Row[Any]) -> InboxEvent:
        message_id, event_type, envelope, attempt, status, created, processed, due, error = tuple(
            row
        )
        message = decode_envelope(envelope)
        return InboxEvent(
            event_id=message_id,
            event_type=event_type,
            payload=message.payload,
            headers=message.headers,
            attempt=attempt,
            status=status,
            message=message,
            received_at=created,
            processed_at=processed,
            next_retry_at=due if status in ("failed", "pending") else None,
            error=error,
        )

    def counts(self) -> dict[str, int]:
        """Events per status: ``pending``, ``processing``, ``failed`` (waiting for a retry),
        ``processed`` (until purged) and ``dead_letter``. A ``processing`` row whose lease ran
        out counts as ``pending``."""
        with self._sync().connect() as conn:
            return self.claims.counts(conn)

    def get(self, event_id: str) -> InboxEvent | None:
        """The stored event ``event_id`` with its status, attempts and last error, or ``None``."""
        t = self.table
        stmt = select(*self._columns()).where(t.c.queue == self.name, t.c.message_id == event_id)
        with self._sync().connect() as conn:
            row = conn.execute(stmt).first()
        return None if row is None else self._to_event(row)

    def dead_letters(self, limit: int = 100) -> list[InboxEvent]:
        """Dead-lettered events, oldest failure first, with their last error."""
        t = self.table
        stmt = (
            select(*self._columns())
            .where(t.c.queue == self.name, t.c.status == "dead_letter")
            .order_by(t.c.last_error_at, t.c.id)
            .limit(limit)
        )
        with self._sync().connect() as conn:
            return [self._to_event(row) for row in conn.execute(stmt)]

    def replay(self, event_ids: Iterable[str] | None = None) -> int:
        """Make dead letters (all, or those with the given event ids) due again with a fresh
        attempt count; return how many."""
        ids: list[Any] | None = None
        with self._sync().begin() as conn:
            if event_ids is not None:
                t = self.table
                wanted = list(event_ids)
                if not wanted:
                    return 0
                ids = list(
                    conn.execute(
                        select(t.c.id).where(t.c.queue == self.name, t.c.message_id.in_(wanted))
                    ).scalars()
                )
            return int(conn.execute(self.claims.replay_stmt(ids)).rowcount)

    def purge(self, older_than: float, *, batch_size: int = 1000, pause: float = 0.0) -> int:
        """Delete processed events handled more than ``older_than`` seconds ago; count them.

        Deletes ``batch_size`` rows per transaction (short transactions: no long lock, and
        PostgreSQL's autovacuum can reclaim the space as it goes); ``pause`` sleeps between
        batches to leave room for the workers. Once purged, an event id is forgotten: a
        redelivery of it would be stored and handled again, so keep the retention longer than
        any source's redelivery horizon.
        """
        if older_than < 0 or batch_size < 1:
            raise ValueError("older_than must be >= 0 and batch_size >= 1")
        t = self.table
        cutoff = time.time() - older_than
        purged = 0
        while True:
            with self._sync().begin() as conn:
                ids = list(
                    conn.execute(
                        select(t.c.id)
                        .where(
                            t.c.queue == self.name,
                            t.c.status == "processed",
                            t.c.processed_at < cutoff,
                        )
                        .limit(batch_size)
                    ).scalars()
                )
                if ids:
                    conn.execute(delete(t).where(t.c.id.in_(ids)))
            purged += len(ids)
            if len(ids) < batch_size:
                return purged
            if pause:
                time.sleep(pause)
