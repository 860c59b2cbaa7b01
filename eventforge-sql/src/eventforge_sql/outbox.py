"""The transactional outbox: messages written in the application's transaction, relayed later.

``outbox.publish(conn, topic, payload, **headers)`` inserts a row through the application's own
connection or session: the message exists if and only if that transaction commits. A
:class:`Relay` (a thread, or an asyncio task) sends pending rows to any transport in id order
per topic, with the message id fixed at publish time, then deletes them in the transaction that
claimed them. Several relays may run: each locks the rows it sends (``FOR UPDATE SKIP LOCKED``)
and leaves a topic alone while another relay holds its earlier rows, so a topic's messages go
out in order. A relay that dies mid-batch rolls back: its rows are sent again by the next relay,
and the receiving broker's dedupe on the message id (the sql and Redis work queues, JetStream's
``Nats-Msg-Id``) drops the copies. On PostgreSQL each publish also sends a ``NOTIFY`` that
wakes idle relays at once; polling every ``poll_interval`` is the fallback.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from eventforge.message import Message, check_headers
from eventforge.topics import validate_topic
from eventforge.transport import Backoff, Transport
from eventforge.wire import decode_envelope, encode_envelope
from eventforge.workqueue import WorkQueue
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from ._claims import row_values
from ._engines import sync_companion
from .schema import DEFAULT_SCHEMA, Schema

__all__ = ["Outbox", "Relay", "RelayThread"]

log = logging.getLogger("eventforge_sql.outbox")

Sink = Callable[[list[Message]], Any]
"""What a relay sends to: a callable taking the batch's messages, in order."""


def _dialect_name(conn: Any) -> str:
    dialect = getattr(conn, "dialect", None)
    if dialect is None:  # an ORM Session
        dialect = conn.get_bind().dialect
    return str(dialect.name)


class Outbox:
    """Where :meth:`publish` writes: ``schema.outbox``. ``notify`` (PostgreSQL only) wakes
    listening relays when the publishing transaction commits; ``channel`` names the
    notification channel."""

    def __init__(
        self,
        schema: Schema | None = None,
        *,
        notify: bool = True,
        channel: str = "eventforge_outbox",
    ) -> None:
        self.schema = schema or DEFAULT_SCHEMA
        self.table = self.schema.outbox
        self.notify = notify
        self.channel = channel

    def _prepare(self, topic: str, payload: Any, headers: dict[str, Any]) -> tuple[Message, Any]:
        validate_topic(topic)
        check_headers(headers)
        message = Message(topic, payload, headers)
        envelope = encode_envelope(message).decode("utf-8")
        row = row_values(topic, message.id, envelope, time.time())
        return message, self.table.insert().values(**row)

    def publish(self, conn: Any, topic: str, payload: Any, **headers: Any) -> str:
        """Write a message in ``conn``'s transaction (a ``Connection`` or an ORM ``Session``);
        return its id. It is sent once the transaction commits, never if it rolls back."""
        message, stmt = self._prepare(topic, payload, headers)
        conn.execute(stmt)
        if self.notify and _dialect_name(conn) == "postgresql":
            conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": self.channel})
        return message.id

    async def publish_async(self, conn: Any, topic: str, payload: Any, **headers: Any) -> str:
        """:meth:`publish` through an ``AsyncConnection`` or ``AsyncSession``."""
        message, stmt = self._prepare(topic, payload, headers)
        await conn.execute(stmt)
        if self.notify and _dialect_name(conn) == "postgresql":
            await conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": self.channel})
        return message.id


def _sink(to: Any) -> Sink:
    if isinstance(to, WorkQueue):
        backend = to.backend  # put keeps each message's id: the queue's dedupe key
        return backend.put_many
    if isinstance(to, Transport):

        def send_all(messages: list[Message]) -> None:
            for message in messages:
                to.send(message)

        return send_all
    if callable(to):
        return to  # type: ignore[no-any-return]
    raise TypeError(
        f"a relay sends to a WorkQueue, a Transport or a callable taking a list of messages, "
        f"got {to!r}"
    )


class Relay:
    """Send the outbox's committed messages to ``to`` and delete them once sent.

    ``to`` is a :class:`~eventforge.workqueue.WorkQueue` (stored with their ids, so a resent
    message is dropped as a duplicate), a transport (``send`` per message: pub/sub, whose
    delivery guarantee is the transport's) or a callable taking each batch's messages.

    ``engine`` is a sync ``Engine`` or an ``AsyncEngine``: the relay's batches run on a worker
    thread either way, so for an ``AsyncEngine`` it makes a companion engine on the same
    database with the dialect's blocking driver (asyncpg -> psycopg, aiosqlite -> pysqlite,
    aiomysql -> pymysql), which :meth:`close` disposes.
    """

    def __init__(
        self,
        engine: Engine | AsyncEngine,
        to: Any,
        outbox: Outbox | None = None,
        *,
        batch_size: int = 100,
        poll_interval: float = 1.0,
        listen: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self._companion = isinstance(engine, AsyncEngine)
        if isinstance(engine, AsyncEngine):
            engine = sync_companion(engine.sync_engine)
        self.engine: Engine = engine
        self.outbox = outbox or Outbox()
        self.table = self.outbox.table
        self.sink = _sink(to)
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.listen = listen and engine.dialect.name == "postgresql"
        self.sent = 0
        self._locking = engine.dialect.name in ("postgresql", "mysql", "mariadb")

    def run_once(self) -> int:
        """Send one batch of pending messages; return how many were sent (0: none pending)."""
        t = self.table
        with self.engine.begin() as conn:
            if not self._locking:
                # SQLite has no row locks: take the database's write lock first, so that two
                # relays never hold the same rows (the second waits for the first to commit).
                conn.execute(update(t).where(t.c.id < 0).values(status="pending"))
            pick = (
                select(t.c.id, t.c.queue, t.c.envelope)
                .where(t.c.status == "pending")
                .order_by(t.c.id)
                .limit(self.batch_size)
            )
            if self._locking:
                pick = pick.with_for_update(skip_locked=True)
            rows = list(conn.execute(pick).all())
            if not rows:
                return 0
            if self._locking:
                rows = self._in_order(conn, rows)
                if not rows:
                    return 0
            messages = [decode_envelope(envelope) for _, _, envelope in rows]
            self.sink(messages)
            conn.execute(delete(t).where(t.c.id.in_([row_id for row_id, _, _ in rows])))
        self.sent += len(rows)
        return len(rows)

    def _in_order(self, conn: Connection, rows: list[Any]) -> list[Any]:
        """Keep only topics whose earliest pending row is ours (another relay holds the rest)."""
        t = self.table
        first: dict[str, int] = {}
        for row_id, topic, _ in rows:
            first.setdefault(topic, row_id)
        earliest = dict(
            conn.execute(
                select(t.c.queue, func.min(t.c.id))
                .where(t.c.status == "pending", t.c.queue.in_(list(first)))
                .group_by(t.c.queue)
            ).all()
        )
        mine = {topic for topic, row_id in first.items() if earliest.get(topic) == row_id}
        return [row for row in rows if row[1] in mine]

    def drain(self) -> int:
        """Send until nothing is pending; return how many were sent."""
        total = 0
        while True:
            count = self.run_once()
            if not count:
                return total
            total += count

    def close(self) -> None:
        """Dispose the companion engine made for an ``AsyncEngine`` (a given sync engine is the
        application's and is left alone)."""
        if self._companion:
            self.engine.dispose()

    def start(self) -> RelayThread:
        """Relay on a background thread until :meth:`RelayThread.stop`."""
        return RelayThread(self)

    async def run_async(self) -> None:
        """Relay until the task is cancelled (each batch runs on a worker thread)."""
        backoff = Backoff(initial=0.1, cap=5.0)
        failures = 0
        while True:
            try:
                count = await asyncio.to_thread(self.run_once)
                failures = 0
            except Exception:
                failures += 1
                log.warning("outbox relay: sending failed; retrying", exc_info=True)
                await asyncio.sleep(backoff.delay(failures))
                continue
            if count < self.batch_size:
                await asyncio.sleep(self.poll_interval)

    # -- waiting for work --------------------------------------------------------------------

    def wait(self, stopping: threading.Event, listener: Any) -> Any:
        """Wait up to ``poll_interval`` for a NOTIFY (PostgreSQL) or just sleep; return the
        listening connection to reuse (``None`` when there is none)."""
        if not self.listen:
            stopping.wait(self.poll_interval)
            return None
        try:
            if listener is None:
                listener = self.engine.raw_connection()
                driver = listener.driver_connection
                driver.autocommit = True
                driver.execute(f'LISTEN "{self.outbox.channel}"')
            deadline = time.monotonic() + self.poll_interval
            while not stopping.is_set():  # in slices, so that stop() is not kept waiting
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                notifies = listener.driver_connection.notifies
                if list(notifies(timeout=min(0.2, remaining), stop_after=1)):
                    break
            return listener
        except Exception:
            log.debug("outbox relay: LISTEN failed; polling instead", exc_info=True)
            _close(listener)
            stopping.wait(self.poll_interval)
            return None


def _close(listener: Any) -> None:
    if listener is not None:
        try:
            listener.invalidate()
        except Exception:
            pass


class RelayThread:
    """A relay running on its own thread; :meth:`stop` ends it after the current batch."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="eventforge-outbox", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        relay = self.relay
        backoff = Backoff(initial=0.1, cap=5.0)
        failures = 0
        listener = None
        try:
            while not self._stopping.is_set():
                try:
                    count = relay.run_once()
                    failures = 0
                except Exception:
                    failures += 1
                    log.warning("outbox relay: sending failed; retrying", exc_info=True)
                    _close(listener)
                    listener = None
                    self._stopping.wait(backoff.delay(failures))
                    continue
                if count < relay.batch_size:
                    listener = relay.wait(self._stopping, listener)
        finally:
            _close(listener)

    def stop(self, timeout: float | None = 10.0) -> None:
        self._stopping.set()
        self._thread.join(timeout)

    def __enter__(self) -> RelayThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
