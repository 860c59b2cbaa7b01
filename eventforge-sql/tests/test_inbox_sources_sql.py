"""The inbox fed by EventFlow's Redis Streams producers, by a subscription, and driven from
asyncio; plus EventFlow's quick start rewritten against eventforge."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from eventforge import connect
from eventforge.message import Message
from eventforge.testing.brokers import RedisServer
from eventforge.testing.waiting import wait_until
from eventforge.workqueue import WorkQueue
from eventforge_sql import Inbox, InboxEvent, InvalidStreamEntry, event_from_stream_entry
from eventforge_sql.testing import EffectLog, PostgresServer


def test_both_eventflow_entry_forms_are_read_as_events() -> None:
    data = {
        "data": json.dumps(
            {
                "event_id": "e-1",
                "event_type": "OrderCreated",
                "aggregate_id": "7c8f0a6a",
                "occurred_on": "2025-01-01T00:00:00Z",
                "payload": {"order_id": "o-123"},
            }
        )
    }
    first = event_from_stream_entry(data, "my-events", b"1-0")
    assert (first.id, first.payload) == ("e-1", {"order_id": "o-123"})
    assert first.headers["event_type"] == "OrderCreated"
    assert first.headers["stream_id"] == "1-0"
    flat = {b"event_id": b"e-2", b"event_type": b"OrderPaid", b"payload": b'{"order_id": "o-9"}'}
    second = event_from_stream_entry(flat, "my-events")
    assert (second.id, second.payload, second.headers["event_type"]) == (
        "e-2",
        {"order_id": "o-9"},
        "OrderPaid",
    )
    loose = event_from_stream_entry({"event_id": "e-3", "amount": "5"}, "s")
    assert loose.payload == {"amount": "5"}


@pytest.mark.parametrize(
    ("fields", "complaint"),
    [
        ({"data": "{not json"}, "not JSON"),
        ({"data": "[1, 2]"}, "not a JSON object"),
        ({"event_type": "X"}, "has no event_id"),
    ],
)
def test_an_entry_that_is_no_event_is_refused_with_the_reason(
    fields: dict[str, str], complaint: str
) -> None:
    with pytest.raises(InvalidStreamEntry, match=complaint):
        event_from_stream_entry(fields, "my-events", "5-0")


@pytest.mark.broker
def test_eventflow_producers_feed_the_inbox_unchanged(
    redis_server: RedisServer,
    sqlite_engine: sa.Engine,
    unique: Callable[[str], str],
) -> None:
    """XADD in both forms (one twice, one entry invalid) -> one effect per event; the invalid
    entry is kept as a dead letter; every entry is acknowledged to the group."""
    import redis

    client = redis.Redis(port=redis_server.port)
    stream = unique("my-events")
    client.xadd(stream, {"data": json.dumps({"event_id": "e-1", "payload": {"n": 1}})})
    client.xadd(stream, {"event_id": "e-2", "event_type": "T", "payload": '{"n": 2}'})
    client.xadd(stream, {"data": json.dumps({"event_id": "e-1", "payload": {"n": 1}})})
    client.xadd(stream, {"no_event_id": "x"})
    effects = EffectLog(sqlite_engine, "effects_streams")
    inbox = Inbox(sqlite_engine, effects.record, name=stream, poll_interval=0.02)
    with inbox.ingest_from(client, stream, group="my-service", consumer="worker-1", block=0.1):
        assert wait_until(lambda: inbox.counts()["pending"] == 2, 10)
        assert wait_until(lambda: client.xpending(stream, "my-service")["pending"] == 0, 10)
    inbox.process(idle_timeout=0.1)
    assert effects.counts() == {"e-1": 1, "e-2": 1}
    [invalid] = inbox.dead_letters()
    assert "has no event_id" in (invalid.error or "")
    client.close()


@pytest.mark.broker
def test_the_stream_reader_takes_over_entries_a_dead_consumer_left_unacknowledged(
    redis_server: RedisServer, sqlite_engine: sa.Engine, unique: Callable[[str], str]
) -> None:
    """worker-0 read three entries and died before storing them; worker-1 claims them with
    XAUTOCLAIM once they were idle ``claim_idle`` seconds, stores and acknowledges them."""
    import redis

    client = redis.Redis(port=redis_server.port)
    stream = unique("my-events")
    client.xgroup_create(stream, "my-service", id="0", mkstream=True)
    for n in range(3):
        client.xadd(stream, {"event_id": f"e-{n}", "payload": "{}"})
    [(_, taken)] = client.xreadgroup("my-service", "worker-0", {stream: ">"}, count=10)
    assert len(taken) == 3
    inbox = Inbox(sqlite_engine, name=stream)
    with inbox.ingest_from(
        client, stream, group="my-service", consumer="worker-1", block=0.05, claim_idle=0.3
    ):
        assert wait_until(lambda: inbox.counts()["pending"] == 3, 10)
        assert wait_until(lambda: client.xpending(stream, "my-service")["pending"] == 0, 10)
    assert all(inbox.get(f"e-{n}") is not None for n in range(3))
    client.close()


@pytest.fixture
def source_queue(
    request: pytest.FixtureRequest, unique: Callable[[str], str], tmp_path: Path
) -> Iterator[WorkQueue]:
    """A WorkQueue on a real broker (Redis, JetStream) or on the local:// SQLite transport."""
    kind: str = request.param
    if kind == "local":
        url = f"local://{tmp_path / 'local'}"
    else:
        url = request.getfixturevalue(f"{kind}_server").url
    transport = connect(url)
    queue = WorkQueue(unique("source"), transport)
    yield queue
    queue.close()
    transport.close()


@pytest.mark.broker
@pytest.mark.parametrize("source_queue", ["redis", "nats", "local"], indirect=True)
def test_ingest_from_a_broker_work_queue_stores_each_event_once_and_empties_it(
    source_queue: WorkQueue, sqlite_engine: sa.Engine, unique: Callable[[str], str]
) -> None:
    ids = source_queue.put_many([{"n": n} for n in range(20)])
    source_queue.backend.put(Message(source_queue.name, {"n": 0}, id=ids[0]))  # a resent one
    effects = EffectLog(sqlite_engine, "effects_broker_source")
    inbox = Inbox(sqlite_engine, effects.record, name=unique("inbox"), poll_interval=0.02)
    with inbox.ingest_from(source_queue, batch_size=8) as ingestion:
        assert source_queue.join(15)  # every item acknowledged, after its insert committed
    assert ingestion.stored >= 20
    assert ingestion.failures == 0
    inbox.process(idle_timeout=0.1)
    assert effects.counts() == dict.fromkeys(ids, 1)


def test_ingest_from_a_subscription(sqlite_engine: sa.Engine) -> None:
    from eventforge.transports.memory import MemoryTransport

    transport = MemoryTransport()
    inbox = Inbox(sqlite_engine, lambda conn, event: None, name="subscribed")
    with inbox.ingest_from(transport, "orders.created") as ingestion:
        transport.send(Message("orders.created", {"n": 1}, id="s-1"))
        transport.send(Message("orders.created", {"n": 1}, id="s-1"))
        assert wait_until(lambda: ingestion.stored == 2, 5)
    assert inbox.counts()["pending"] == 1
    transport.close()


def test_async_engine_and_async_handler(pg_server: PostgresServer, pg_engine: sa.Engine) -> None:
    """EventFlow's quick start, rewritten: an AsyncEngine and ``async handle_event``."""
    from sqlalchemy.ext.asyncio import create_async_engine

    effects = EffectLog(pg_engine, "effects_async")
    seen: list[tuple[str | None, object]] = []

    class Handlers:
        async def handle_event(self, session: object, inbox: InboxEvent) -> None:
            seen.append((inbox.event_type, inbox.payload))
            await session.execute(  # type: ignore[attr-defined]
                effects.table.insert().values(event_id=inbox.event_id)
            )

    async def main() -> None:
        engine = create_async_engine(pg_server.url)
        inbox = Inbox(engine, Handlers(), name="async-quickstart", poll_interval=0.02)
        await inbox.add_async(
            Message("my-events", {"order_id": "o-123"}, {"event_type": "OrderCreated"})
        )
        task = asyncio.create_task(inbox.run_async())
        for _ in range(200):
            if effects.counts():
                break
            await asyncio.sleep(0.02)
        task.cancel()
        await engine.dispose()

    asyncio.run(main())
    assert seen == [("OrderCreated", {"order_id": "o-123"})]
    assert sum(effects.counts().values()) == 1


def test_an_async_inbox_serves_the_blocking_calls_on_a_sync_companion(
    pg_server: PostgresServer, pg_engine: sa.Engine
) -> None:
    """Status API and ingestion work on an Inbox built on an AsyncEngine."""
    from sqlalchemy.ext.asyncio import create_async_engine

    inbox = Inbox(create_async_engine(pg_server.url), name="async-status")
    inbox.add(Message("t", 1, id="sync-add"))
    assert inbox.counts()["pending"] == 1
    stored = inbox.get("sync-add")
    assert stored is not None
    assert stored.status == "pending"
