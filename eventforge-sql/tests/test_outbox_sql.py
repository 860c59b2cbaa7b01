"""The transactional outbox: sent if and only if the publishing transaction commits, in order
per topic with several relays, ids kept so that a receiving queue drops resent copies."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from eventforge.message import Message
from eventforge.testing.waiting import wait_until
from eventforge.workqueue import WorkQueue
from eventforge_sql import (
    Outbox,
    Relay,
    Schema,
    SqlWorkQueueBackend,
    TableNames,
    configure_sqlite,
    create_schema,
)
from eventforge_sql.testing import PostgresServer
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session


@pytest.fixture
def outbox(engine: sa.Engine, unique: Callable[[str], str]) -> Outbox:
    """An outbox table of its own per test (the relays of other tests never see its rows)."""
    schema = Schema(TableNames(outbox=unique("outbox").replace("-", "_")))
    schema.outbox.create(engine)
    return Outbox(schema)


class Sink:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.lock = threading.Lock()

    def __call__(self, messages: list[Message]) -> None:
        with self.lock:
            self.messages.extend(messages)

    def payloads(self) -> list[object]:
        with self.lock:
            return [m.payload for m in self.messages]


def test_committed_messages_are_sent_and_rolled_back_ones_never(
    engine: sa.Engine, outbox: Outbox
) -> None:
    sink = Sink()
    with engine.begin() as conn:
        kept = outbox.publish(conn, "orders.created", {"order": 1}, tenant="acme")

    def failing_transaction() -> None:
        with engine.begin() as conn:
            outbox.publish(conn, "orders.created", {"order": 2})
            raise RuntimeError("the application's transaction fails")

    with pytest.raises(RuntimeError):
        failing_transaction()
    relay = Relay(engine, sink, outbox)
    assert relay.drain() == 1
    [message] = sink.messages
    assert (message.id, message.topic, message.payload) == (kept, "orders.created", {"order": 1})
    assert message.headers["tenant"] == "acme"
    assert relay.drain() == 0


def test_publish_through_an_orm_session(engine: sa.Engine, outbox: Outbox) -> None:
    sink = Sink()
    with Session(engine) as session, session.begin():
        outbox.publish(session, "invoices.issued", {"invoice": 7})
    Relay(engine, sink, outbox).drain()
    assert sink.payloads() == [{"invoice": 7}]


def test_bad_headers_and_topics_are_refused_before_anything_is_written(
    engine: sa.Engine, outbox: Outbox
) -> None:
    with engine.begin() as conn:
        with pytest.raises(TypeError, match="header 'meta' is a dict"):
            outbox.publish(conn, "t", 1, meta={"a": 1})
        with pytest.raises(ValueError, match="topic"):
            outbox.publish(conn, "", 1)
    assert Relay(engine, Sink(), outbox).drain() == 0


def test_several_relays_send_each_message_once_and_in_order_per_topic(
    engine: sa.Engine, outbox: Outbox
) -> None:
    sink = Sink()
    topics = [f"topic.{i}" for i in range(4)]
    total = 400
    for start in range(0, total, 100):
        with engine.begin() as conn:
            for n in range(start, start + 100):
                outbox.publish(conn, topics[n % 4], n)
    relays = [Relay(engine, sink, outbox, batch_size=7, poll_interval=0.05) for _ in range(3)]
    running = [relay.start() for relay in relays]
    try:
        assert wait_until(lambda: len(sink.messages) >= total, 30)
    finally:
        for thread in running:
            thread.stop()
    payloads = sink.payloads()
    assert sorted(payloads) == list(range(total))  # each once
    per_topic: dict[str, list[int]] = defaultdict(list)
    for message in sink.messages:
        per_topic[message.topic].append(message.payload)
    for sent in per_topic.values():
        assert sent == sorted(sent)


def test_relay_to_a_work_queue_keeps_ids_so_resent_copies_are_dropped(
    engine: sa.Engine, outbox: Outbox, unique: Callable[[str], str], tmp_path: Path
) -> None:
    # SQLite has one writer at a time: a relay holding its outbox rows cannot write to a queue
    # in the same file, so there the queue lives in another database.
    queue_engine = engine
    if engine.dialect.name == "sqlite":
        queue_engine = configure_sqlite(sa.create_engine(f"sqlite:///{tmp_path / 'queue.db'}"))
    create_schema(queue_engine)
    name = unique("relayed")
    queue = WorkQueue(name, backend=SqlWorkQueueBackend(queue_engine, name))
    with engine.begin() as conn:
        ids = [outbox.publish(conn, "jobs", n) for n in range(3)]
    # A relay that sent two of them and died before its commit: they go out again.
    queue.backend.put_many([Message("jobs", n, id=i) for n, i in enumerate(ids[:2])])
    Relay(engine, queue, outbox).drain()
    assert queue.stats["pending"] == 3
    got = [queue.get(timeout=5) for _ in range(3)]
    assert [d.message.id for d in got if d is not None] == ids
    queue.close()


def test_a_notify_wakes_an_idle_relay_on_postgresql(
    pg_engine: sa.Engine, unique: Callable[[str], str]
) -> None:
    """With polling every 60 s, the message still arrives: the commit's NOTIFY woke the relay."""
    schema = Schema(TableNames(outbox=unique("outbox").replace("-", "_")))
    schema.outbox.create(pg_engine)
    outbox = Outbox(schema, channel=unique("wake").replace("-", "_"))
    sink = Sink()
    with Relay(pg_engine, sink, outbox, poll_interval=60.0).start():
        wait_until(lambda: False, 0.3)  # the relay found nothing and listens
        with pg_engine.begin() as conn:
            outbox.publish(conn, "wake.up", "now")
        assert wait_until(lambda: sink.payloads() == ["now"], 20)


def test_publish_async_is_sent_by_run_async_on_an_async_engine(
    pg_server: PostgresServer, pg_engine: sa.Engine, unique: Callable[[str], str]
) -> None:
    """An AsyncConnection and an AsyncSession publish; a rolled-back one is never sent; the
    relay built on the AsyncEngine relays from an asyncio task."""
    schema = Schema(TableNames(outbox=unique("outbox").replace("-", "_")))
    schema.outbox.create(pg_engine)
    outbox = Outbox(schema)
    sink = Sink()

    async def main() -> list[str]:
        engine = create_async_engine(pg_server.url)
        async with engine.begin() as conn:
            first = await outbox.publish_async(conn, "orders", 1)
        async with AsyncSession(engine) as session, session.begin():
            second = await outbox.publish_async(session, "orders", 2)
        with contextlib.suppress(RuntimeError):
            async with engine.begin() as conn:
                await outbox.publish_async(conn, "orders", "rolled back")
                raise RuntimeError("the application's transaction fails")
        relay = Relay(engine, sink, outbox, poll_interval=0.02)
        task = asyncio.create_task(relay.run_async())
        for _ in range(500):
            if len(sink.messages) >= 2:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)  # time for anything else to arrive
        task.cancel()
        relay.close()
        await engine.dispose()
        return [first, second]

    ids = asyncio.run(main())
    assert [(m.id, m.payload) for m in sink.messages] == list(zip(ids, [1, 2], strict=True))
