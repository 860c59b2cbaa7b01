"""The transactional inbox: every event stored once by its id, handled inside a transaction.

Events arrive from any source (:meth:`Inbox.ingest_from` a WorkQueue or a subscription, Redis
Streams written by EventFlow producers, or :meth:`Inbox.add`) and are inserted keyed by event
id, duplicates skipped; a source is acknowledged only after the insert committed. Workers claim
due rows under a lease (``FOR UPDATE SKIP LOCKED`` where the database has it) and run the
handler **in the transaction that marks the row processed**, passing it the connection: the
handler's own writes commit with the status change or roll back with it, so each event's
database effects are applied exactly once. A failing handler's row is retried after the
:class:`~eventforge.workqueue.RetryPolicy` backoff (stored as ``available_at``) and dead-lettered
with its error once the attempts are exhausted.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from eventforge.message import Message
from eventforge.transport import Backoff, RetryPolicy
from eventforge.wire import decode_envelope, encode_envelope
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ._claims import Claimed, Claims, row_values
from ._inbox_status import InboxEvent, InboxStatus
from ._ingest import start_ingestion
from .schema import DEFAULT_SCHEMA, Schema

__all__ = ["EVENT_TYPE_HEADER", "Inbox", "InboxEvent", "InboxWorker"]

log = logging.getLogger("eventforge_sql.inbox")

EVENT_TYPE_HEADER = "event_type"
"""The message header whose value is stored as the row's ``event_type``."""

SyncHandler = Callable[[Connection, "InboxEvent"], Any]
AsyncHandler = Callable[[AsyncConnection, "InboxEvent"], Awaitable[Any]]
Handler = Any
"""``SyncHandler``, ``AsyncHandler`` or an object with ``handle_event(conn, event)``."""


class _LeaseLost(Exception):
    """A row's lease ran out and another worker took it: this worker's writes roll back."""


def _resolve(handler: Handler) -> Callable[..., Any]:
    method = getattr(handler, "handle_event", None)
    if method is not None and callable(method):
        return method  # type: ignore[no-any-return]
    if not callable(handler):
        raise TypeError(
            f"an inbox handler is a callable handler(conn, event) or an object with "
            f"handle_event(conn, event), got {handler!r}"
        )
    return handler  # type: ignore[no-any-return]


class Inbox(InboxStatus):
    """The inbox ``name`` in ``schema.inbox`` on ``engine`` (a sync or an asyncio engine).

    ``handler(conn, event)`` (or an object with ``handle_event(conn, event)``, as EventFlow's
    handlers) runs for each event inside the transaction that marks it processed; an async
    handler gets an ``AsyncConnection`` and needs an ``AsyncEngine``. ``batch_size`` rows are
    claimed at once and handled in one transaction (a failure there re-runs the batch in one
    transaction with a savepoint per event, so one poison event never takes its neighbours'
    effects with it);
    ``lease`` is how long a claimed row stays with its worker before another may take it.
    """

    def __init__(
        self,
        engine: Engine | AsyncEngine,
        handler: Handler | None = None,
        *,
        name: str = "default",
        schema: Schema | None = None,
        retry: RetryPolicy | None = None,
        lease: float = 30.0,
        batch_size: int = 100,
        poll_interval: float = 0.5,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.engine = engine
        self.is_async = isinstance(engine, AsyncEngine)
        self.sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
        self.name = name
        self.schema = schema or DEFAULT_SCHEMA
        self.table = self.schema.inbox
        self.retry = retry or RetryPolicy(max_attempts=4, initial_backoff=1.0, max_backoff=900.0)
        self.claims = Claims(self.table, name, self.sync_engine.dialect, lease)
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.handler = None if handler is None else _resolve(handler)
        self._last_sweep = 0.0

    # -- storing events ---------------------------------------------------------------------

    def _row(self, message: Message, now: float) -> dict[str, Any]:
        event_type = message.headers.get(EVENT_TYPE_HEADER)
        envelope = encode_envelope(message).decode("utf-8")
        return row_values(
            self.name, message.id, envelope, now, None if event_type is None else str(event_type)
        )

    def add(self, messages: Message | Iterable[Message], conn: Connection | None = None) -> None:
        """Store events keyed by their message id (an id already stored is skipped).

        With ``conn`` the insert joins that transaction; else it commits before returning.
        """
        batch = [messages] if isinstance(messages, Message) else list(messages)
        now = time.time()
        rows = [self._row(m, now) for m in batch]
        if conn is not None:
            self.claims.insert_rows(conn, rows)
            return
        self.claims.commit_rows(self._sync(), rows)

    async def add_async(
        self, messages: Message | Iterable[Message], conn: AsyncConnection | None = None
    ) -> None:
        """The asyncio twin of :meth:`add` (an ``AsyncEngine``, or ``conn`` to join)."""
        batch = [messages] if isinstance(messages, Message) else list(messages)
        now = time.time()
        rows = [self._row(m, now) for m in batch]
        if conn is not None:
            await conn.run_sync(self.claims.insert_rows, rows)
            return
        if not isinstance(self.engine, AsyncEngine):
            raise TypeError("add_async() without conn= needs an Inbox built on an AsyncEngine")
        async with self.engine.begin() as own:
            await own.run_sync(self.claims.insert_rows, rows)

    def add_dead(self, message: Message, reason: str) -> None:
        """Store an event straight into the dead letters with ``reason`` (input that cannot be
        handled is kept for inspection instead of dropped)."""
        now = time.time()
        row = {**self._row(message, now), "status": "dead_letter", "error": reason}
        row["last_error_at"] = now
        self.claims.commit_rows(self._sync(), [row])

    def ingest_from(self, source: Any, topic: str | None = None, **options: Any) -> Any:
        """Feed the inbox from ``source`` until the returned ingestion is stopped.

        ``source`` is a :class:`~eventforge.workqueue.WorkQueue` (each item is acknowledged
        once its insert committed: at-least-once into the inbox, once in it) or anything with
        ``subscribe(topic, callback)``, such as a transport (at-most-once: what the
        subscription never delivered cannot be stored).
        """
        return start_ingestion(self, source, topic, **options)

    # -- handling ---------------------------------------------------------------------------

    def _event(self, row: Claimed) -> InboxEvent:
        # As bytes, the envelope takes the codec's fast path (a str is validated by the schema).
        message = decode_envelope(row.envelope.encode("utf-8"))
        return InboxEvent(
            event_id=row.message_id,
            event_type=row.event_type,
            payload=message.payload,
            headers=message.headers,
            attempt=row.attempt,
            status="processing",
            message=message,
            received_at=message.timestamp,
        )

    def _claim(self, conn: Connection) -> list[Claimed]:
        rows = self.claims.claim(conn, self.batch_size, self.retry.max_attempts)
        if self._sweep_due(len(rows)):
            self.claims.dead_letter_expired(conn, self.retry.max_attempts)
        return rows

    def _sweep_due(self, claimed: int) -> bool:
        """Whether to dead-letter expired last attempts now (a short claim, at most once per
        second or quarter lease)."""
        now = time.monotonic()
        if claimed < self.batch_size and now - self._last_sweep > min(1.0, self.claims.lease / 4):
            self._last_sweep = now
            return True
        return False

    def _handler(self, handler: Handler | None) -> Callable[..., Any]:
        chosen = self.handler if handler is None else _resolve(handler)
        if chosen is None:
            raise TypeError("no handler: pass one to Inbox(...) or to process()/run()")
        return chosen

    def process_batch(self, handler: Handler | None = None) -> int:
        """Claim due events and handle them; return how many were claimed (0: none due)."""
        call = self._handler(handler)
        if inspect.iscoroutinefunction(call):
            raise TypeError("an async handler runs with process_batch_async() on an AsyncEngine")
        engine = self._sync()
        with self.claims.connect(engine) as conn:  # the claim commits before any handler runs
            rows = self.claims.claim(conn, self.batch_size, self.retry.max_attempts)
        if self._sweep_due(len(rows)):
            self.claims.sweep(engine, self.retry.max_attempts)
        if not rows:
            return 0
        events = [self._event(row) for row in rows]
        with engine.connect() as conn:
            try:
                with conn.begin():
                    for event in events:
                        call(conn, event)
                    if self.claims.mark_processed(conn, rows) != len(rows):
                        raise _LeaseLost
                return len(rows)
            except Exception as exc:
                if len(rows) == 1:
                    self._settle_failure(rows[0], exc)
                    return 1
            try:
                self._handle_each(conn, call, rows, events)
                return len(rows)
            except Exception:
                log.warning(
                    "inbox %r: the batch with a failing event did not commit; handling its "
                    "events one transaction each",
                    self.name,
                    exc_info=True,
                )
            for row, event in zip(rows, events, strict=True):
                try:
                    with conn.begin():
                        call(conn, event)
                        if self.claims.mark_processed(conn, [row]) != 1:
                            raise _LeaseLost
                except Exception as exc:
                    self._settle_failure(row, exc)
        return len(rows)

    def _handle_each(
        self, conn: Connection, call: Callable[..., Any], rows: list[Claimed], events: list[Any]
    ) -> None:
        """Handle a batch in one transaction with a savepoint per event: a failing handler
        rolls back only its own writes, and its row's retry (or dead letter) is recorded in the
        same transaction, so the batch costs one commit."""
        with conn.begin():
            for row, event in zip(rows, events, strict=True):
                try:
                    with conn.begin_nested():
                        call(conn, event)
                        if self.claims.mark_processed(conn, [row]) != 1:
                            raise _LeaseLost
                except Exception as exc:
                    self._record_failure(conn, row, exc)

    def _settle_failure(self, row: Claimed, exc: BaseException) -> None:
        """Record a failure: retry later, or dead-letter once the attempts are exhausted."""
        with self._sync().begin() as conn:
            self._record_failure(conn, row, exc)

    def _record_failure(self, conn: Connection, row: Claimed, exc: BaseException) -> None:
        if isinstance(exc, _LeaseLost):
            log.warning(
                "inbox %r: the lease of event %s ran out while it was handled; another worker "
                "has it, and this worker's writes were rolled back (raise lease= if handlers "
                "take that long)",
                self.name,
                row.message_id,
            )
            return
        error = f"{type(exc).__name__}: {exc}"
        if self.retry.exhausted(row.attempt):
            log.error(
                "inbox %r: event %s dead-lettered after %d attempts: %s",
                self.name,
                row.message_id,
                row.attempt,
                error,
            )
            self.claims.dead_letter(conn, row.id, row.owner, error)
        else:
            log.warning(
                "inbox %r: event %s failed (attempt %d of %d), retried later: %s",
                self.name,
                row.message_id,
                row.attempt,
                self.retry.max_attempts,
                error,
            )
            self.claims.retry_later(conn, row.id, row.owner, self.retry.backoff(row.attempt), error)

    def process(self, handler: Handler | None = None, *, idle_timeout: float = 0.5) -> int:
        """Handle due events on the calling thread until none is due for ``idle_timeout`` s."""
        handled = 0
        idle_since = time.monotonic()
        while True:
            count = self.process_batch(handler)
            handled += count
            if count:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since >= idle_timeout:
                return handled
            else:
                time.sleep(min(0.02, self.poll_interval))

    def run(self, handler: Handler | None = None, *, workers: int = 1) -> InboxWorker:
        """Handle events on ``workers`` threads until :meth:`InboxWorker.stop`."""
        return InboxWorker(self, self._handler(handler), workers)

    # -- asyncio ----------------------------------------------------------------------------

    async def process_batch_async(self, handler: Handler | None = None) -> int:
        """The asyncio twin of :meth:`process_batch` (an ``AsyncEngine``; the handler may be
        async and then gets the ``AsyncConnection``)."""
        engine = self.engine
        if not isinstance(engine, AsyncEngine):
            raise TypeError("process_batch_async() needs an Inbox built on an AsyncEngine")
        call = self._handler(handler)
        is_async = inspect.iscoroutinefunction(call)
        async with engine.begin() as conn:
            rows = await conn.run_sync(self._claim)
        if not rows:
            return 0
        for row in rows:
            event = self._event(row)
            try:
                async with engine.begin() as conn:
                    if is_async:
                        await call(conn, event)
                    else:
                        await conn.run_sync(call, event)
                    if await conn.run_sync(self.claims.mark_processed, [row]) != 1:
                        raise _LeaseLost
            except Exception as exc:
                async with engine.begin() as conn:
                    await conn.run_sync(self._record_failure, row, exc)
        return len(rows)

    async def run_async(self, handler: Handler | None = None) -> None:
        """Handle events until the task is cancelled (polling every ``poll_interval`` when idle)."""
        import asyncio

        backoff = Backoff(initial=0.1, cap=5.0)
        failures = 0
        while True:
            try:
                count = await self.process_batch_async(handler)
                failures = 0
            except Exception:
                failures += 1
                log.warning("inbox %r: database unavailable", self.name, exc_info=True)
                await asyncio.sleep(backoff.delay(failures))
                continue
            if not count:
                await asyncio.sleep(self.poll_interval)

    def __repr__(self) -> str:
        return f"Inbox({self.name!r}, table={self.table.name!r})"


class InboxWorker:
    """Threads that handle an inbox's events until :meth:`stop`."""

    def __init__(self, inbox: Inbox, handler: Callable[..., Any], workers: int) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.inbox = inbox
        self.handler = handler
        self._stopping = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, name=f"eventforge-inbox-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        backoff = Backoff(initial=0.1, cap=5.0)
        failures = 0
        while not self._stopping.is_set():
            try:
                count = self.inbox.process_batch(self.handler)
                failures = 0
            except Exception:
                failures += 1
                log.warning(
                    "inbox %r: database unavailable; retrying", self.inbox.name, exc_info=True
                )
                self._stopping.wait(backoff.delay(failures))
                continue
            if not count:
                self._stopping.wait(self.inbox.poll_interval)

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop claiming; wait up to ``timeout`` for the batches being handled."""
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout)

    def __enter__(self) -> InboxWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
