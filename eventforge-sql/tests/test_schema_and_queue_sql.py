"""Schema creation, the SQL file, the version record, and the sql transport's own promises."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from eventforge import connect
from eventforge.errors import UnsupportedCapabilityError
from eventforge.message import Message
from eventforge.testing.waiting import wait_until
from eventforge.transport import NOT_BEFORE_HEADER
from eventforge.workqueue import RetryPolicy, WorkQueue
from eventforge_sql import (
    SCHEMA_VERSION,
    Schema,
    SqlWorkQueueBackend,
    TableNames,
    create_schema,
    schema_sql,
    schema_version,
)
from eventforge_sql.transport import SqlTransport


def _columns(engine: sa.Engine, table: str, schema: str | None = None) -> dict[str, str]:
    inspector = sa.inspect(engine)
    return {c["name"]: str(c["type"]) for c in inspector.get_columns(table, schema=schema)}


def test_create_schema_records_the_version_and_is_idempotent(sqlite_engine: sa.Engine) -> None:
    assert schema_version(sqlite_engine) == SCHEMA_VERSION
    create_schema(sqlite_engine)  # a second start changes nothing
    assert schema_version(sqlite_engine) == SCHEMA_VERSION


def test_schema_version_is_none_before_create(tmp_path: Path) -> None:
    assert schema_version(sa.create_engine(f"sqlite:///{tmp_path / 'empty.db'}")) is None


def test_newer_schema_version_is_refused(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'future.db'}")
    schema = create_schema(engine)
    with engine.begin() as conn:
        conn.execute(sa.update(schema.version).values(version=SCHEMA_VERSION + 1))
    with pytest.raises(RuntimeError, match="upgrade eventforge-sql"):
        create_schema(engine)


def test_table_names_are_configurable(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'named.db'}")
    names = TableNames(queue="jobs", inbox="app_inbox", outbox="app_outbox", version="app_ver")
    create_schema(engine, Schema(names))
    assert {"jobs", "app_inbox", "app_outbox", "app_ver"} <= set(
        sa.inspect(engine).get_table_names()
    )
    backend = SqlWorkQueueBackend(engine, "q", schema=Schema(names))
    backend.put(Message("q", "x"))
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM jobs")).scalar() == 1


def test_schema_sql_file_creates_the_same_tables_as_create_schema(
    pg_engine: sa.Engine, unique: Callable[[str], str]
) -> None:
    """The documented SQL file and create_schema() give the same columns (on PostgreSQL)."""
    namespace = unique("ddl").replace("-", "_")
    with pg_engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {namespace}")
        conn.exec_driver_sql(f"SET LOCAL search_path TO {namespace}")
        conn.exec_driver_sql(schema_sql())
    assert schema_version(pg_engine, Schema(schema=namespace)) == SCHEMA_VERSION
    for table in (
        "eventforge_queue",
        "eventforge_inbox",
        "eventforge_outbox",
        "eventforge_results",
        "eventforge_claims",
    ):
        assert _columns(pg_engine, table, namespace) == _columns(pg_engine, table)


def test_an_item_whose_lease_expires_max_attempts_times_is_dead_lettered(
    engine: sa.Engine, unique: Callable[[str], str]
) -> None:
    policy = RetryPolicy(max_attempts=2, initial_backoff=0.0, jitter=0.0)
    name = unique("lease-cap")
    queue = WorkQueue(
        name, retry=policy, backend=SqlWorkQueueBackend(engine, name, policy, lease=0.2)
    )
    try:
        queue.put("never settled")
        for attempt in (1, 2):
            delivery = queue.get(timeout=5)
            assert delivery is not None
            assert delivery.attempt == attempt  # fetched and abandoned
        assert queue.get(timeout=1.0) is None
        assert wait_until(lambda: len(queue.dead_letters()) == 1, 5)
        letter = queue.dead_letters()[0]
        assert letter.reason.startswith("delivered 2 times without being settled (max_attempts=2)")
        assert (letter.message.payload, letter.attempts) == ("never settled", 2)
    finally:
        queue.close()


def _rows(engine: sa.Engine, queue: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.text("SELECT count(*) FROM eventforge_queue WHERE queue = :q"), {"q": queue}
            ).scalar_one()
        )


def test_buffered_acks_of_several_fetches_are_deleted_by_the_next_fetch(
    engine: sa.Engine, unique: Callable[[str], str]
) -> None:
    """Acks of two fetches (two lease owners) wait for the next fetch, which deletes every one
    of them and claims only the items not acked."""
    name = unique("acks")
    backend = SqlWorkQueueBackend(engine, name, ack_delay=60.0)  # no flush before the fetch
    try:
        backend.put_many([Message(name, i) for i in range(6)])
        first, second = backend.fetch(2, timeout=5), backend.fetch(2, timeout=5)
        for delivery in first + second:
            assert backend.ack(delivery) is None  # buffered
        assert _rows(engine, name) == 6
        rest = backend.fetch(10, timeout=5)
        assert [d.message.payload for d in rest] == [4, 5]
        assert [d.attempt for d in rest] == [1, 1]
        assert _rows(engine, name) == 2
    finally:
        backend.close()


def test_a_buffered_ack_with_no_fetch_after_it_is_committed_by_the_flusher(
    engine: sa.Engine, unique: Callable[[str], str]
) -> None:
    name = unique("flusher")
    backend = SqlWorkQueueBackend(engine, name, ack_delay=0.02)
    try:
        backend.put_many([Message(name, i) for i in range(3)])
        deliveries = backend.fetch(3, timeout=5)
        deliveries[0].ack()
        assert wait_until(lambda: _rows(engine, name) == 2, 5)
        time.sleep(0.1)  # the flusher has ended: the next ack starts another
        deliveries[1].ack()
        assert wait_until(lambda: _rows(engine, name) == 1, 5)
    finally:
        backend.close()


def test_put_of_a_stored_message_id_adds_nothing(
    engine: sa.Engine, unique: Callable[[str], str]
) -> None:
    """A producer that resends the same message (a relay after a crash) stores it once."""
    name = unique("dedupe")
    backend = SqlWorkQueueBackend(engine, name)
    message = Message(name, {"n": 1})
    backend.put(message)
    backend.put_many([message, Message(name, {"n": 2})])
    assert backend.stats()["pending"] == 2


def test_put_many_stores_a_batch_in_order_once_per_id_with_exact_values(
    engine: sa.Engine, unique: Callable[[str], str]
) -> None:
    """A batch (one statement on PostgreSQL) keeps its order, skips ids stored before or
    repeated within it, and stores text and due times exactly; a value too long for its
    column is refused, not truncated."""
    name = unique("batch")
    backend = SqlWorkQueueBackend(engine, name)
    first = Message(name, "first", id="évt-0")
    backend.put(first)
    batch = [Message(name, {"n": n, "text": "naïve 🚀"}, id=f"évt-{n}") for n in range(1, 40)]
    due = time.time() - 0.123456789  # due already, with every digit of a double
    delayed = Message(name, "due", {NOT_BEFORE_HEADER: due}, id="due")
    shouted = Message(name, "DUE", id="DUE")  # another id: ids are compared case-sensitively
    backend.put_many([first, *batch[:20], batch[3], delayed, shouted, *batch[20:]])
    t = backend.table
    with engine.connect() as conn:
        stored = conn.execute(
            sa.select(t.c.message_id, t.c.available_at).where(t.c.queue == name).order_by(t.c.id)
        ).all()
    order = ["évt-0", *(m.id for m in batch[:20]), "due", "DUE", *(m.id for m in batch[20:])]
    assert [row[0] for row in stored] == order
    assert dict(stored)["due"] == due
    delivered = backend.fetch(100, timeout=5)
    assert [d.message.id for d in delivered] == order
    assert delivered[1].message.payload == {"n": 1, "text": "naïve 🚀"}
    if engine.dialect.name != "sqlite":  # SQLite does not enforce VARCHAR lengths
        with pytest.raises(sa.exc.DBAPIError):
            backend.put_many([Message(name, 1, id="x" * 300), Message(name, 2)])
    backend.close()


def test_connect_by_url_gives_a_durable_work_queue(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    transport = connect(url, lease=5)
    try:
        assert isinstance(transport, SqlTransport)
        queue = WorkQueue("orders", transport=transport)
        assert queue.backend.durable
        message_id = queue.put({"order": 1})
    finally:
        transport.close()
    again = connect(f"{url}?lease=7&poll_interval=0.02")  # the options may be in the URL too
    try:
        assert (again.lease, again.poll_interval) == (7.0, 0.02)  # type: ignore[attr-defined]
        delivery = WorkQueue("orders", transport=again).get(timeout=5)
        assert delivery is not None
        assert delivery.message.id == message_id
        delivery.ack()
    finally:
        again.close()


def test_pubsub_on_sqlite_is_refused_with_advice(tmp_path: Path) -> None:
    transport = connect(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with pytest.raises(UnsupportedCapabilityError, match="Outbox"):
            transport.send(Message("t", 1))
        with pytest.raises(UnsupportedCapabilityError, match="work queues only"):
            transport.subscribe("t", lambda m: None)
    finally:
        transport.close()
