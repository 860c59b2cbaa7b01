"""Delayed puts on the SQL work queue, on SQLite and on PostgreSQL: the due time is the row's
``available_at``, which the claim already honours; never early, late by at most a consumer's
poll interval. Lateness figures are printed (run with -s to see them)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from eventforge.transport import NOT_BEFORE_HEADER
from eventforge.workqueue import RetryPolicy, WorkQueue
from eventforge_sql import SqlWorkQueueBackend

pytestmark = pytest.mark.broker

POLICY = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.05, jitter=0.0)
Made = Callable[[], WorkQueue]


@pytest.fixture
def make_queue(engine: sa.Engine, unique: Callable[[str], str]) -> Iterator[Made]:
    """Work queues on one fresh queue name of the parametrized engine; closed after."""
    name = unique("delays")
    made: list[WorkQueue] = []

    def make() -> WorkQueue:
        queue = WorkQueue(name, retry=POLICY, backend=SqlWorkQueueBackend(engine, name, POLICY))
        made.append(queue)
        return queue

    yield make
    for queue in made:
        queue.close()


def _collect(queue: WorkQueue, n: int, timeout: float = 20.0) -> list[tuple[Any, float, float]]:
    """Take ``n`` items (acking each): payload, the time it arrived, its due time (or 0)."""
    out: list[tuple[Any, float, float]] = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        delivery = queue.get(timeout=0.5)
        if delivery is not None:
            due = float(delivery.message.headers.get(NOT_BEFORE_HEADER, 0.0))
            out.append((delivery.message.payload, time.time(), due))
            delivery.ack()
    return out


def test_a_delayed_put_comes_no_earlier_than_its_delay(make_queue: Made, engine: sa.Engine) -> None:
    queue = make_queue()
    put_at: dict[int, float] = {}
    for n in range(8):
        put_at[n] = time.time()
        queue.put(n, delay=1.0)
    queue.put("now")
    assert queue.stats["delayed"] == 8
    got = _collect(queue, 9)
    assert got[0][0] == "now"
    assert [payload for payload, _, _ in got[1:]] == list(range(8))  # same delay: put order
    lateness = []
    for payload, at, due in got[1:]:
        assert due >= put_at[payload] + 1.0
        assert at >= due, f"item {payload} came {(due - at) * 1000:.1f} ms early"
        lateness.append(at - due)
    print(
        f"\nsql ({engine.dialect.name}) delayed put, delay=1.0 s: {len(lateness)} items, "
        f"lateness p50 {statistics.median(lateness) * 1000:.0f} ms, "
        f"max {max(lateness) * 1000:.0f} ms"
    )
    assert queue.stats["delayed"] == 0


def test_a_delayed_row_waits_in_the_table_not_in_a_consumer(make_queue: Made) -> None:
    producer = make_queue()
    put_at = time.time()
    producer.put("later", delay=0.6)
    producer.close()
    consumer = make_queue()  # another backend: nothing held in memory
    assert consumer.get(timeout=0.1) is None
    got = consumer.get(timeout=10)
    assert got is not None
    assert time.time() - put_at >= 0.6
    assert (got.message.payload, got.attempt) == ("later", 1)
    got.ack()


def test_not_before_in_the_past_is_claimable_at_once(make_queue: Made) -> None:
    queue = make_queue()
    queue.put("past", not_before=datetime.now(timezone.utc) - timedelta(minutes=5))
    queue.put("zero", delay=0)
    assert queue.stats["delayed"] == 0
    got = _collect(queue, 2, timeout=5)
    assert [payload for payload, _, _ in got] == ["past", "zero"]


def test_a_waiting_consumer_gets_items_as_they_come_due(make_queue: Made) -> None:
    queue = make_queue()
    queue.put("second", delay=1.2)
    queue.put("first", delay=0.3)
    assert [payload for payload, _, _ in _collect(queue, 2)] == ["first", "second"]


def test_items_due_by_the_time_of_a_claim_come_in_put_order(make_queue: Made) -> None:
    """The claim walks due rows in id order: among items already due, the one put first
    comes first, whatever their due times."""
    queue = make_queue()
    queue.put("put first, due later", delay=0.4)
    queue.put("put second, due sooner", delay=0.2)
    time.sleep(0.5)
    got = [payload for payload, _, _ in _collect(queue, 2)]
    assert got == ["put first, due later", "put second, due sooner"]


def test_put_many_delays_every_row(make_queue: Made) -> None:
    queue = make_queue()
    queue.put_many([1, 2, 3], delay=0.5)
    assert queue.stats["delayed"] == 3
    assert queue.stats["pending"] == 3  # delayed rows are pending rows
    assert queue.get(timeout=0.05) is None
    assert sorted(payload for payload, _, _ in _collect(queue, 3)) == [1, 2, 3]


def test_a_delay_of_three_days_is_the_rows_available_at(
    make_queue: Made, engine: sa.Engine
) -> None:
    queue = make_queue()
    before = time.time()
    queue.put("in three days", delay=3 * 86_400)
    after = time.time()
    table = queue.backend.table  # type: ignore[attr-defined]
    with engine.connect() as conn:
        due = conn.execute(
            sa.select(table.c.available_at).where(table.c.queue == queue.name)
        ).scalar_one()
    assert before + 3 * 86_400 <= due <= after + 3 * 86_400
    assert queue.get(timeout=0.1) is None
