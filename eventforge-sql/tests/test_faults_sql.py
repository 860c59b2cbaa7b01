"""Faults with real processes against the private PostgreSQL; each test reports its figures
(events in / effects applied / duplicate effects / lost / recovery time)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from eventforge.message import Message
from eventforge.testing.waiting import wait_until
from eventforge.workqueue import RetryPolicy, WorkQueue
from eventforge_sql import (
    Inbox,
    Outbox,
    Relay,
    Schema,
    SqlWorkQueueBackend,
    TableNames,
)
from eventforge_sql.testing import EffectLog, PostgresServer

pytestmark = [pytest.mark.broker, pytest.mark.slow]

CHILD = str(Path(__file__).with_name("_child_sql.py"))


def _spawn(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, CHILD, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def _figures(effects: EffectLog, expected: list[str]) -> tuple[int, int, int]:
    counts = effects.counts()
    applied = sum(counts.values())
    duplicates = sum(n - 1 for n in counts.values() if n > 1)
    lost = len([e for e in expected if e not in counts])
    return applied, duplicates, lost


def test_four_worker_processes_handle_every_event_once(
    pg_server: PostgresServer,
    pg_engine: sa.Engine,
    unique: Callable[[str], str],
    report: Callable[[str], None],
) -> None:
    name = unique("inbox-4p")
    table = unique("effects").replace("-", "_")
    effects = EffectLog(pg_engine, table)
    inbox = Inbox(pg_engine, name=name)
    ids = [f"evt-{i}" for i in range(1000)]
    inbox.add([Message("t", i, id=event_id) for i, event_id in enumerate(ids)])
    inbox.add([Message("t", 0, id=ids[0])] * 2)  # the source delivered one three times
    workers = [_spawn("inbox", pg_server.url, name, table, f"w{i}", "-", "30") for i in range(4)]
    for worker in workers:
        assert worker.wait(60) == 0, worker.stderr.read() if worker.stderr else ""
    applied, duplicates, lost = _figures(effects, ids)
    by_worker = effects.by_worker()
    report(
        f"4 worker processes: events in {len(ids) + 2} (1000 distinct), effects {applied}, "
        f"duplicates {duplicates}, lost {lost}, per worker {sorted(by_worker.values())}"
    )
    assert (applied, duplicates, lost) == (1000, 0, 0)
    assert len(by_worker) >= 2  # the work was shared


def test_worker_killed_inside_its_handler_transaction_is_retried_after_the_lease(
    pg_server: PostgresServer,
    pg_engine: sa.Engine,
    unique: Callable[[str], str],
    report: Callable[[str], None],
) -> None:
    """The handler wrote its effect, then its process was SIGKILLed before the commit: the
    write rolled back, the row came back after the lease and has exactly one effect."""
    name = unique("inbox-kill")
    table = unique("effects").replace("-", "_")
    effects = EffectLog(pg_engine, table)
    inbox = Inbox(pg_engine, effects.record, name=name, lease=1.0, poll_interval=0.05)
    inbox.add(Message("t", "victim", id="victim"))
    victim = _spawn("inbox", pg_server.url, name, table, "doomed", "victim", "1.0")
    assert victim.wait(30) == -9
    killed_at = time.monotonic()
    assert effects.counts() == {}  # the partial write was rolled back
    stored = inbox.get("victim")
    assert stored is not None
    assert (stored.status, stored.attempt) in (("processing", 1), ("pending", 1))
    assert wait_until(lambda: inbox.process_batch() == 1, 15)
    recovery = time.monotonic() - killed_at
    done = inbox.get("victim")
    assert done is not None
    assert (done.status, done.attempt) == ("processed", 2)
    applied, duplicates, lost = _figures(effects, ["victim"])
    report(
        f"worker SIGKILLed in handler: events in 1, effects {applied}, duplicates {duplicates}, "
        f"lost {lost}, retried after {recovery:.2f}s (lease 1.0s)"
    )
    assert (applied, duplicates, lost) == (1, 0, 0)


def test_postgresql_killed_and_restarted_mid_run_loses_and_duplicates_nothing(
    pg_server: PostgresServer,
    pg_engine: sa.Engine,
    unique: Callable[[str], str],
    report: Callable[[str], None],
) -> None:
    name = unique("inbox-pgkill")
    effects = EffectLog(pg_engine, unique("effects").replace("-", "_"))
    retry = RetryPolicy(max_attempts=50, initial_backoff=0.05, max_backoff=0.5)
    inbox = Inbox(pg_engine, effects.record, name=name, retry=retry, lease=2.0, poll_interval=0.05)
    ids = [f"evt-{i}" for i in range(3000)]
    stored: list[str] = []

    def produce() -> None:  # an idempotent producer: a batch that failed is sent again
        for start in range(0, len(ids), 100):
            batch = ids[start : start + 100]
            while True:
                try:
                    inbox.add([Message("t", i, id=event_id) for i, event_id in enumerate(batch)])
                    break
                except sa.exc.DBAPIError:
                    time.sleep(0.1)
            stored.extend(batch)
            time.sleep(0.01)

    producer = threading.Thread(target=produce)
    producer.start()
    with inbox.run(workers=2):
        assert wait_until(lambda: sum(effects.counts().values()) >= 500, 30)
        pg_server.kill()
        time.sleep(0.5)
        pg_server.restart()
        restarted = time.monotonic()
        before = sum(effects.counts().values())
        assert wait_until(lambda: sum(effects.counts().values()) > before, 30)
        recovery = time.monotonic() - restarted
        producer.join(60)
        assert wait_until(lambda: sum(effects.counts().values()) >= len(ids), 60)
    applied, duplicates, lost = _figures(effects, stored)
    report(
        f"PostgreSQL SIGKILL + restart mid-run: events in {len(stored)}, effects {applied}, "
        f"duplicates {duplicates}, lost {lost}, first effect {recovery:.2f}s after restart"
    )
    assert len(stored) == len(ids)
    assert (applied, duplicates, lost) == (len(ids), 0, 0)


def test_postgresql_killed_and_restarted_keeps_every_delayed_item_and_none_comes_early(
    pg_server: PostgresServer,
    pg_engine: sa.Engine,
    unique: Callable[[str], str],
    report: Callable[[str], None],
) -> None:
    name = unique("delayed-pgkill")
    backend = SqlWorkQueueBackend(pg_engine, name, RetryPolicy())
    queue = WorkQueue(name, retry=RetryPolicy(), backend=backend)
    total = 60
    due: dict[int, float] = {}
    for n in range(total):
        start = time.time()
        queue.put(n, delay=0.5 + n * 0.1)  # due over 0.5 .. 6.4 s: before and after the restart
        due[n] = start + 0.5 + n * 0.1
    pg_server.kill()
    killed_at = time.monotonic()
    time.sleep(0.5)
    pg_server.restart()
    restarted = time.monotonic() - killed_at
    arrived: dict[int, float] = {}
    duplicates = 0
    deadline = time.monotonic() + 60
    while len(arrived) < total and time.monotonic() < deadline:
        try:
            delivery = queue.get(timeout=0.5)
        except sa.exc.DBAPIError:  # a pooled connection of before the restart
            continue
        if delivery is None:
            continue
        payload = delivery.message.payload
        delivery.ack()
        duplicates += payload in arrived
        arrived.setdefault(payload, time.time())
    queue.close()
    lost = sorted(set(due) - set(arrived))
    early = [n for n, at in arrived.items() if at < due[n]]
    report(
        f"PostgreSQL SIGKILL + restart with delayed items: put {total}, delivered "
        f"{len(arrived)}, lost {len(lost)}, early {len(early)}, duplicates {duplicates}, "
        f"database back after {restarted:.1f}s"
    )
    assert (len(lost), len(early), duplicates) == (0, 0, 0), (lost, early)


def test_relay_killed_mid_batch_loses_nothing_and_the_queue_drops_resent_copies(
    pg_server: PostgresServer,
    pg_engine: sa.Engine,
    unique: Callable[[str], str],
    report: Callable[[str], None],
) -> None:
    outbox_table = unique("outbox").replace("-", "_")
    schema = Schema(TableNames(outbox=outbox_table))
    schema.outbox.create(pg_engine)
    outbox = Outbox(schema)
    queue = unique("relayed")
    with pg_engine.begin() as conn:
        ids = [outbox.publish(conn, "orders", n) for n in range(200)]
    try:
        with pg_engine.begin() as conn:  # rolled back: never sent
            outbox.publish(conn, "orders", "rolled back")
            raise RuntimeError("rollback")
    except RuntimeError:
        pass
    child = _spawn("relay", pg_server.url, outbox_table, queue, "75")
    assert child.wait(30) == -9
    backend = SqlWorkQueueBackend(pg_engine, queue)
    stored_by_child = backend.stats()["pending"]
    relay = Relay(pg_engine, backend.put_many, outbox)
    resent = relay.drain()
    pending = backend.stats()["pending"]
    with pg_engine.connect() as conn:
        t = backend.table
        payloads = conn.execute(
            sa.select(t.c.message_id).where(t.c.queue == queue).order_by(t.c.id)
        ).scalars()
        stored_ids = list(payloads)
    report(
        f"relay SIGKILLed mid-batch: messages 200 (+1 rolled back), stored before the kill "
        f"{stored_by_child}, sent again {resent}, copies dropped by the queue "
        f"{resent + stored_by_child - pending}, in the queue {pending}, lost "
        f"{len(set(ids) - set(stored_ids))}"
    )
    assert stored_by_child == 75
    assert stored_ids == ids  # every message once, in publish order
