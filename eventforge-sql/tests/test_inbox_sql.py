"""The transactional inbox on SQLite and PostgreSQL: idempotent storing, handling inside the
transaction, retries with backoff, dead letters and the status API."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from eventforge.message import Message
from eventforge.workqueue import RetryPolicy, WorkQueue
from eventforge_sql import Inbox, InboxEvent, Schema, TableNames
from eventforge_sql.testing import EffectLog

FAST = RetryPolicy(max_attempts=3, initial_backoff=0.05, max_backoff=0.1, jitter=0.0)


@pytest.fixture
def effects(engine: sa.Engine, unique: Callable[[str], str]) -> EffectLog:
    return EffectLog(engine, unique("effects").replace("-", "_"))


def _inbox(engine: sa.Engine, unique: Callable[[str], str], **options: object) -> Inbox:
    options.setdefault("retry", FAST)
    options.setdefault("poll_interval", 0.02)
    return Inbox(engine, name=unique("inbox"), **options)  # type: ignore[arg-type]


def test_the_same_event_stored_three_times_has_one_effect(
    engine: sa.Engine, unique: Callable[[str], str], effects: EffectLog
) -> None:
    inbox = _inbox(engine, unique, handler=effects.record)
    event = Message("orders", {"order": 1}, {"event_type": "OrderCreated"}, id="evt-1")
    for _ in range(3):
        inbox.add(event)
    inbox.add([event, Message("orders", {"order": 2}, id="evt-2"), event])
    assert inbox.process(idle_timeout=0.1) == 2
    assert effects.counts() == {"evt-1": 1, "evt-2": 1}
    stored = inbox.get("evt-1")
    assert stored is not None
    assert (stored.status, stored.event_type, stored.payload) == (
        "processed",
        "OrderCreated",
        {"order": 1},
    )
    inbox.add(event)  # a redelivery after processing is still a duplicate
    assert inbox.process(idle_timeout=0.1) == 0
    assert effects.counts() == {"evt-1": 1, "evt-2": 1}


def test_a_failing_handler_rolls_back_its_writes_and_is_retried(
    engine: sa.Engine, unique: Callable[[str], str], effects: EffectLog
) -> None:
    attempts: list[int] = []

    def flaky(conn: sa.Connection, event: InboxEvent) -> None:
        effects.record(conn, event)  # written, then rolled back when the handler fails
        attempts.append(event.attempt)
        if event.attempt < 3:
            raise RuntimeError(f"attempt {event.attempt} fails")

    inbox = _inbox(engine, unique, handler=flaky)
    inbox.add(Message("t", "x", id="flaky"))
    inbox.process_batch()
    failed = inbox.get("flaky")
    assert failed is not None
    assert failed.status == "failed"
    assert failed.error == "RuntimeError: attempt 1 fails"
    assert failed.next_retry_at is not None
    assert failed.next_retry_at > time.time() - 1
    assert effects.counts() == {}
    inbox.process(idle_timeout=0.5)
    assert attempts == [1, 2, 3]
    assert effects.counts() == {"flaky": 1}
    assert inbox.counts()["processed"] == 1


def test_poison_event_is_dead_lettered_with_its_error_and_others_are_unaffected(
    engine: sa.Engine, unique: Callable[[str], str], effects: EffectLog
) -> None:
    def handler(conn: sa.Connection, event: InboxEvent) -> None:
        effects.record(conn, event)
        if event.payload == "poison":
            raise ValueError("cannot handle poison")

    inbox = _inbox(engine, unique, handler=handler, batch_size=10)
    inbox.add([Message("t", "poison", id="p")] + [Message("t", i, id=f"ok-{i}") for i in range(5)])
    inbox.process(idle_timeout=0.6)
    assert effects.counts() == {f"ok-{i}": 1 for i in range(5)}
    letters = inbox.dead_letters()
    assert [(d.event_id, d.attempt, d.error) for d in letters] == [
        ("p", 3, "ValueError: cannot handle poison")
    ]
    assert inbox.counts() == {
        "pending": 0,
        "processing": 0,
        "failed": 0,
        "processed": 5,
        "dead_letter": 1,
    }


def test_a_failing_event_in_a_batch_leaves_its_neighbours_committed_once_in_one_transaction(
    engine: sa.Engine, unique: Callable[[str], str], effects: EffectLog
) -> None:
    """The batch is handled again in one transaction with a savepoint per event: the failing
    event's writes roll back alone and its retry is recorded; the others commit once."""
    transactions: dict[str, sa.RootTransaction] = {}

    def handler(conn: sa.Connection, event: InboxEvent) -> None:
        root = conn.get_transaction()
        assert root is not None
        transactions[event.event_id] = root  # kept alive: the objects' ids stay distinct
        effects.record(conn, event)
        if event.payload == "bad":
            raise ValueError("bad event")

    inbox = _inbox(engine, unique, handler=handler, batch_size=10)
    ids = ["ok-0", "ok-1", "bad", "ok-2", "ok-3"]
    inbox.add([Message("t", "bad" if i == "bad" else "fine", id=i) for i in ids])
    assert inbox.process_batch() == 5
    assert effects.counts() == {i: 1 for i in ids if i != "bad"}
    assert len({id(transactions[i]) for i in ids}) == 1  # one transaction for the whole batch
    failed = inbox.get("bad")
    assert failed is not None
    assert (failed.status, failed.attempt, failed.error) == ("failed", 1, "ValueError: bad event")
    assert inbox.counts()["processed"] == 4
    inbox.process(idle_timeout=0.6)  # retried until dead-lettered; nothing else runs again
    assert effects.counts() == {i: 1 for i in ids if i != "bad"}
    assert [(d.event_id, d.attempt) for d in inbox.dead_letters()] == [("bad", 3)]


def test_a_batch_whose_commit_fails_is_handled_one_event_per_transaction(
    pg_engine: sa.Engine, unique: Callable[[str], str]
) -> None:
    """A handler whose writes break a deferred constraint fails only at COMMIT, so no savepoint
    catches it: the batch then falls back to a transaction per event, and only that event is
    retried."""
    table = unique("deferred").replace("-", "_")
    with pg_engine.begin() as conn:
        conn.exec_driver_sql(
            f"CREATE TABLE {table} (event_id TEXT, k INTEGER, "
            "CONSTRAINT one_k UNIQUE (k) DEFERRABLE INITIALLY DEFERRED)"
        )

    def handler(conn: sa.Connection, event: InboxEvent) -> None:
        conn.execute(
            sa.text(f"INSERT INTO {table} (event_id, k) VALUES (:e, :k)"),
            {"e": event.event_id, "k": event.payload},
        )
        if event.payload == 0:  # a second row with k=0: refused when the transaction commits
            conn.execute(sa.text(f"INSERT INTO {table} (event_id, k) VALUES ('dup', 0)"))

    inbox = _inbox(pg_engine, unique, handler=handler, batch_size=10)
    inbox.add([Message("t", k, id=f"e-{k}") for k in range(4)])
    assert inbox.process_batch() == 4
    with pg_engine.connect() as conn:
        stored = conn.exec_driver_sql(f"SELECT event_id FROM {table} ORDER BY k").scalars()
        assert list(stored) == ["e-1", "e-2", "e-3"]
    failed = inbox.get("e-0")
    assert failed is not None
    assert failed.status == "failed"
    assert failed.error is not None
    assert "one_k" in failed.error
    assert inbox.counts()["processed"] == 3


def test_retry_backoff_is_stored_and_capped(
    engine: sa.Engine, unique: Callable[[str], str]
) -> None:
    policy = RetryPolicy(max_attempts=10, initial_backoff=60.0, max_backoff=120.0, jitter=0.0)

    def fail(conn: sa.Connection, event: InboxEvent) -> None:
        raise RuntimeError("down")

    inbox = _inbox(engine, unique, handler=fail, retry=policy)
    inbox.add(Message("t", 1, id="slow"))
    before = time.time()
    inbox.process_batch()
    stored = inbox.get("slow")
    assert stored is not None
    assert stored.next_retry_at is not None
    assert 59 <= stored.next_retry_at - before <= 61
    assert inbox.process_batch() == 0  # not due for a minute
    # attempt 5 would wait 60 * 2**4 s without the cap
    with engine.begin() as conn:
        conn.execute(
            sa.update(inbox.table)
            .where(inbox.table.c.message_id == "slow")
            .values(attempt=4, available_at=0)
        )
    before = time.time()
    inbox.process_batch()
    stored = inbox.get("slow")
    assert stored is not None
    assert stored.next_retry_at is not None
    assert 119 <= stored.next_retry_at - before <= 121


def test_replay_one_or_all_dead_letters(
    engine: sa.Engine, unique: Callable[[str], str], effects: EffectLog
) -> None:
    broken = {"a", "b", "c"}

    def handler(conn: sa.Connection, event: InboxEvent) -> None:
        if event.event_id in broken:
            raise RuntimeError("broken")
        effects.record(conn, event)

    inbox = _inbox(engine, unique, handler=handler, retry=RetryPolicy(max_attempts=1))
    inbox.add([Message("t", n, id=n) for n in ("a", "b", "c")])
    inbox.process(idle_timeout=0.1)
    assert sorted(d.event_id for d in inbox.dead_letters()) == ["a", "b", "c"]
    broken.clear()  # fixed
    assert inbox.replay(["b"]) == 1
    inbox.process(idle_timeout=0.1)
    assert effects.counts() == {"b": 1}
    assert inbox.replay() == 2
    assert inbox.replay([]) == 0
    inbox.process(idle_timeout=0.1)
    assert effects.counts() == {"a": 1, "b": 1, "c": 1}
    assert inbox.dead_letters() == []


def test_purge_deletes_only_old_processed_rows_in_batches(
    engine: sa.Engine, unique: Callable[[str], str]
) -> None:
    inbox = _inbox(engine, unique, handler=lambda conn, event: None)
    inbox.add([Message("t", i, id=f"e{i}") for i in range(25)])
    inbox.process(idle_timeout=0.1)
    inbox.add(Message("t", "new", id="pending-one"))
    assert inbox.purge(3600) == 0  # nothing that old
    with engine.begin() as conn:
        conn.execute(
            sa.update(inbox.table)
            .where(inbox.table.c.queue == inbox.name, inbox.table.c.status == "processed")
            .values(processed_at=time.time() - 7200)
        )
    assert inbox.purge(3600, batch_size=10) == 25
    assert inbox.counts()["processed"] == 0
    assert inbox.get("pending-one") is not None


def test_ingest_from_a_work_queue_acknowledges_after_commit(
    engine: sa.Engine, unique: Callable[[str], str], effects: EffectLog
) -> None:
    source = WorkQueue(unique("source"))
    ids = source.put_many([{"n": i} for i in range(20)])
    source.backend.put(Message(source.name, {"n": 0}, id=ids[0]))  # the source repeats one
    inbox = _inbox(engine, unique, handler=effects.record)
    with inbox.ingest_from(source, batch_size=8) as ingestion:
        assert source.join(10)
    assert ingestion.stored == 21
    inbox.process(idle_timeout=0.1)
    assert effects.counts() == dict.fromkeys(ids, 1)


def test_a_failed_insert_leaves_the_events_with_the_source(
    engine: sa.Engine, unique: Callable[[str], str], effects: EffectLog
) -> None:
    """The inbox table is missing: nothing is acknowledged; once it exists, all arrive."""
    names = TableNames(inbox=unique("late_inbox").replace("-", "_"))
    schema = Schema(names)
    source = WorkQueue(unique("source"))
    ids = source.put_many(range(5))
    inbox = Inbox(engine, effects.record, name="late", schema=schema, poll_interval=0.02)
    ingestion = inbox.ingest_from(source)
    try:
        assert _eventually(lambda: ingestion.failures >= 1)
        assert source.stats["acked"] == 0
        schema.inbox.create(engine)
        assert source.join(10)
    finally:
        ingestion.stop()
    inbox.process(idle_timeout=0.1)
    assert effects.counts() == dict.fromkeys(ids, 1)


def test_handler_objects_with_handle_event_are_accepted(
    engine: sa.Engine, unique: Callable[[str], str], effects: EffectLog
) -> None:
    class Handlers:
        def handle_event(self, session: sa.Connection, inbox: InboxEvent) -> None:
            effects.record(session, inbox)

    inbox = _inbox(engine, unique, handler=Handlers())
    inbox.add(Message("t", 1, id="obj"))
    with inbox.run(workers=2):
        assert _eventually(lambda: effects.counts() == {"obj": 1})


def test_a_handler_that_is_not_callable_is_refused(engine: sa.Engine) -> None:
    with pytest.raises(TypeError, match="handle_event"):
        Inbox(engine, handler=42)


def _eventually(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    from eventforge.testing.waiting import wait_until

    return wait_until(condition, timeout)
