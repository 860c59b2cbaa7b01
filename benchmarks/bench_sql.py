"""eventforge-sql beside pgqueuer and a raw psycopg SKIP LOCKED loop, on one private PostgreSQL.

Scenarios (jobs are small JSON payloads; the same batch size, 100, everywhere):

* Enqueue: the sql WorkQueue backend's ``put_many`` of 100 vs pgqueuer's ``Queries.enqueue`` of
  100 (goal: at least 1.0x).
* Dequeue + ack, 2 worker processes draining a filled queue: the sql WorkQueue (``fetch(100)``
  then ``ack`` each, and ``WorkQueue.get`` one at a time) vs pgqueuer's ``QueueManager`` in
  drain mode (batch 100; goal: at least 3x) and vs a raw psycopg loop, ``SELECT ... FOR UPDATE
  SKIP LOCKED LIMIT 100`` + ``DELETE`` in one transaction (goal: at least 0.8x).
* Inbox: ``Inbox.add`` of 100 per transaction, then 2 worker processes handling every event
  (a no-op handler) vs the raw loop (goal: processing at least 0.6x).
* Outbox: ``publish`` of 100 per application transaction, then ``Relay.drain`` to a no-op sink.
* Delayed work items: ``WorkQueue.put_many(..., delay=3600)`` beside the plain ``put_many``;
  ``fetch(100)`` + ack in this process with 20,000 delayed rows ahead of the due ones beside
  none ahead; the delivery-time error of a delayed put (arrival minus due time, p50 / p99, items
  due 0.5 .. 1.5 s after their put, a consumer waiting) beside the put-to-delivery latency of a
  plain put (all reported).

Workers start before the clock and wait for a go; the clock stops when both report done.
Every figure is the median of the rounds.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from _common import delay_error_and_latency, row

HERE = Path(__file__).resolve().parent
PAYLOAD = {"user": "alice", "action": "resize", "n": 1}
BATCH = 100
WORKERS = 2
QUICK = False  # quick mode (the test suite's smoke run) drains with one worker process

CHILD = f"""
import sys
sys.path.insert(0, {str(HERE)!r})
import bench_sql
bench_sql.child(sys.argv[1:])
"""


# -- worker processes -------------------------------------------------------------------------


def child(argv: list[str]) -> None:
    mode, url, name = argv
    drain: Callable[[], None]
    if mode == "raw":
        conn = psycopg.connect(url.replace("postgresql+psycopg", "postgresql"))

        def drain() -> None:
            while True:
                with conn.transaction():
                    rows = conn.execute(
                        "SELECT id, payload FROM raw_jobs ORDER BY id LIMIT 100 "
                        "FOR UPDATE SKIP LOCKED"
                    ).fetchall()
                    if not rows:
                        return
                    for _ in rows:
                        json.loads(rows[0][1])
                    conn.execute("DELETE FROM raw_jobs WHERE id = ANY(%s)", ([r[0] for r in rows],))

    elif mode in ("wq", "wq-get"):
        from eventforge.workqueue import WorkQueue
        from eventforge_sql import SqlWorkQueueBackend, engine_from_url

        backend = SqlWorkQueueBackend(engine_from_url(url), name)
        queue = WorkQueue(name, backend=backend)

        def drain() -> None:
            if mode == "wq-get":
                while (delivery := queue.get(timeout=0)) is not None:
                    delivery.ack()
                return
            while deliveries := backend.fetch(BATCH, timeout=0):
                for delivery in deliveries:
                    delivery.ack()

    elif mode == "inbox":
        from eventforge_sql import Inbox, engine_from_url

        inbox = Inbox(engine_from_url(url), lambda conn, event: None, name=name, batch_size=BATCH)

        def drain() -> None:
            while inbox.process_batch():
                pass

    elif mode == "pgqueuer":

        def drain() -> None:
            asyncio.run(_pgqueuer_drain(url))

    else:
        raise SystemExit(f"unknown mode {mode}")
    print("ready", flush=True)
    sys.stdin.readline()
    drain()
    print("done", flush=True)


async def _pgqueuer_drain(url: str) -> None:
    from pgqueuer import PsycopgDriver, Queries, QueueManager
    from pgqueuer.types import QueueExecutionMode

    conn = await psycopg.AsyncConnection.connect(
        url.replace("postgresql+psycopg", "postgresql"), autocommit=True
    )
    qm = QueueManager(Queries(PsycopgDriver(conn)))

    @qm.entrypoint("bench")
    async def work(job: Any) -> None:
        json.loads(job.payload)

    await qm.run(batch_size=BATCH, mode=QueueExecutionMode.drain)
    await conn.close()


def drain_rate(mode: str, url: str, name: str, n: int) -> float:
    workers = 1 if QUICK else WORKERS
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, mode, url, name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(workers)
    ]
    for c in children:
        assert c.stdout is not None
        line = c.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"{mode} worker failed to start: {line!r}")
    start = time.perf_counter()
    for c in children:
        assert c.stdin is not None
        c.stdin.write("go\n")
        c.stdin.flush()
    for c in children:
        assert c.stdout is not None
        if c.stdout.readline().strip() != "done":
            raise RuntimeError(f"{mode} worker did not finish")
    elapsed = time.perf_counter() - start
    for c in children:
        c.wait(30)
    return n / elapsed


# -- one round of each scenario -----------------------------------------------------------------


def _batches(n: int) -> list[list[dict[str, Any]]]:
    return [[{**PAYLOAD, "n": i + j} for j in range(BATCH)] for i in range(0, n, BATCH)]


def raw_round(url: str, n: int) -> tuple[float, float]:
    dsn = url.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS raw_jobs (id BIGSERIAL PRIMARY KEY, payload TEXT)")
        conn.execute("TRUNCATE raw_jobs")
        start = time.perf_counter()
        with conn.cursor() as cur:
            for batch in _batches(n):
                with conn.transaction():
                    cur.executemany(
                        "INSERT INTO raw_jobs (payload) VALUES (%s)",
                        [(json.dumps(p),) for p in batch],
                    )
        enqueue = n / (time.perf_counter() - start)
    return enqueue, drain_rate("raw", url, "raw", n)


def wq_round(url: str, n: int, mode: str = "wq") -> tuple[float, float]:
    from eventforge.message import Message
    from eventforge_sql import SqlWorkQueueBackend, engine_from_url

    name = f"bench-{os.urandom(4).hex()}"
    engine = engine_from_url(url)
    backend = SqlWorkQueueBackend(engine, name)
    batches = [[Message(name, p) for p in batch] for batch in _batches(n)]
    start = time.perf_counter()
    for batch in batches:
        backend.put_many(batch)
    enqueue = n / (time.perf_counter() - start)
    rate = drain_rate(mode, url, name, n)
    engine.dispose()
    return enqueue, rate


def pgqueuer_round(url: str, n: int) -> tuple[float, float]:
    async def enqueue_all() -> float:
        from pgqueuer import PsycopgDriver, Queries

        conn = await psycopg.AsyncConnection.connect(
            url.replace("postgresql+psycopg", "postgresql"), autocommit=True
        )
        queries = Queries(PsycopgDriver(conn))
        await conn.execute("DELETE FROM pgqueuer")
        payloads = [[json.dumps(p).encode() for p in batch] for batch in _batches(n)]
        start = time.perf_counter()
        for batch in payloads:
            await queries.enqueue(["bench"] * len(batch), batch, [0] * len(batch))
        rate = n / (time.perf_counter() - start)
        await conn.close()
        return rate

    enqueue = asyncio.run(enqueue_all())
    return enqueue, drain_rate("pgqueuer", url, "pgqueuer", n)


def inbox_round(url: str, n: int) -> tuple[float, float]:
    from eventforge.message import Message
    from eventforge_sql import Inbox, engine_from_url

    name = f"bench-{os.urandom(4).hex()}"
    engine = engine_from_url(url)
    inbox = Inbox(engine, name=name)
    batches = [[Message("e", p) for p in batch] for batch in _batches(n)]
    start = time.perf_counter()
    for batch in batches:
        inbox.add(batch)
    ingest = n / (time.perf_counter() - start)
    rate = drain_rate("inbox", url, name, n)
    engine.dispose()
    return ingest, rate


def outbox_round(url: str, n: int) -> tuple[float, float]:
    from eventforge_sql import Outbox, Relay, engine_from_url

    engine = engine_from_url(url)
    outbox = Outbox(notify=False)
    start = time.perf_counter()
    for batch in _batches(n):
        with engine.begin() as conn:
            for payload in batch:
                outbox.publish(conn, "bench.outbox", payload)
    publish = n / (time.perf_counter() - start)
    start = time.perf_counter()
    Relay(engine, lambda messages: None, outbox, batch_size=BATCH).drain()
    relay = n / (time.perf_counter() - start)
    engine.dispose()
    return publish, relay


def _drain(queue: Any, n: int) -> float:
    start = time.perf_counter()
    got = 0
    while got < n:
        for delivery in queue.backend.fetch(BATCH, timeout=5):
            delivery.ack()
            got += 1
    return n / (time.perf_counter() - start)


def delayed_round(url: str, n: int, ahead: int, timed: int) -> tuple[float, ...]:
    """Plain and delayed put_many rates, fetch + ack rates without and with ``ahead`` delayed
    rows ahead, then the delivery error of delayed puts (ms) and the put-to-delivery latency
    of plain puts (ms), each as p50, p99."""
    from eventforge.workqueue import WorkQueue
    from eventforge_sql import SqlWorkQueueBackend, engine_from_url

    engine = engine_from_url(url)

    def queue() -> WorkQueue:
        name = f"bench-{os.urandom(4).hex()}"
        return WorkQueue(name, backend=SqlWorkQueueBackend(engine, name))

    rates = []
    plain = queue()
    for delay in (None, 3600.0):
        start = time.perf_counter()
        for batch in _batches(n):
            plain.put_many(batch, delay=delay)
        rates.append(n / (time.perf_counter() - start))
    rates.append(_drain(plain, n))  # the delayed rows are behind: not in the way
    blocked = queue()
    for batch in _batches(ahead):
        blocked.put_many(batch, delay=3600)
    for batch in _batches(n):
        blocked.put_many(batch)
    rates.append(_drain(blocked, n))
    timing = queue()
    timed_figures = delay_error_and_latency(timing, timed)
    for made in (plain, blocked, timing):
        made.close()
    engine.dispose()
    return (*rates, *timed_figures)


def _install_pgqueuer(url: str) -> None:
    async def install() -> None:
        from pgqueuer import PsycopgDriver, Queries

        conn = await psycopg.AsyncConnection.connect(
            url.replace("postgresql+psycopg", "postgresql"), autocommit=True
        )
        await Queries(PsycopgDriver(conn)).install()
        await conn.close()

    asyncio.run(install())


# -- the area -------------------------------------------------------------------------------------


def run(quick: bool = False) -> list[dict[str, Any]]:
    from eventforge_sql import create_schema, engine_from_url
    from eventforge_sql.testing import PostgresServer

    global QUICK
    QUICK = quick
    n = 200 if quick else 20_000
    rounds = 1 if quick else 3
    server = PostgresServer().start()
    try:
        url = server.url
        engine = engine_from_url(url)
        create_schema(engine)
        engine.dispose()
        _install_pgqueuer(url)
        samples: dict[str, list[tuple[float, ...]]] = {
            k: [] for k in ("raw", "wq", "wq-get", "pgqueuer", "inbox", "outbox", "delayed")
        }
        for _ in range(rounds):
            samples["raw"].append(raw_round(url, n))
            samples["wq"].append(wq_round(url, n))
            samples["wq-get"].append(wq_round(url, max(BATCH, n // 10), "wq-get"))
            samples["pgqueuer"].append(pgqueuer_round(url, n))
            samples["inbox"].append(inbox_round(url, n))
            samples["outbox"].append(outbox_round(url, n))
            samples["delayed"].append(delayed_round(url, n // 4, n, 20 if quick else 200))
    finally:
        server.cleanup()

    def med(key: str, index: int) -> float:
        return statistics.median(s[index] for s in samples[key])

    raw_drain, pgq_drain, pgq_put = med("raw", 1), med("pgqueuer", 1), med("pgqueuer", 0)
    raw_name = "raw psycopg, 2 procs: SELECT .. FOR UPDATE SKIP LOCKED LIMIT 100 + DELETE"
    return [
        row("sql WorkQueue put_many(100)", med("wq", 0), "pgqueuer enqueue(100)", pgq_put,
            "jobs/s", ">= 1.0x"),
        row("sql WorkQueue fetch(100) + ack each, 2 procs", med("wq", 1),
            "pgqueuer QueueManager drain, batch 100, 2 procs", pgq_drain, "jobs/s", ">= 3x"),
        row("sql WorkQueue fetch(100) + ack each, 2 procs", med("wq", 1), raw_name, raw_drain,
            "jobs/s", ">= 0.8x"),
        row("sql WorkQueue.get() + ack one at a time, 2 procs", med("wq-get", 1), raw_name,
            raw_drain, "jobs/s", "report"),
        row("Inbox.add(100 per transaction)", med("inbox", 0), "raw psycopg executemany INSERT 100",
            med("raw", 0), "events/s", "report"),
        row("Inbox processing, no-op handler, batch 100, 2 procs", med("inbox", 1), raw_name,
            raw_drain, "events/s", ">= 0.6x"),
        row("Outbox.publish, 100 per transaction", med("outbox", 0),
            "raw psycopg executemany INSERT 100", med("raw", 0), "msgs/s", "report"),
        row("Relay.drain to a no-op sink, batch 100", med("outbox", 1), raw_name, raw_drain,
            "msgs/s", "report"),
        row("sql WorkQueue put_many(100, delay=3600)", med("delayed", 1),
            "sql WorkQueue put_many(100), not delayed", med("delayed", 0), "jobs/s", "report"),
        row(f"sql WorkQueue fetch(100) + ack, 1 proc, {n:,} delayed rows ahead",
            med("delayed", 3), "the same, no delayed rows ahead", med("delayed", 2), "jobs/s",
            "report"),
        row("sql delayed put: arrival - due time, p50", med("delayed", 4),
            "plain put -> get latency p50", med("delayed", 6), "ms", "report",
            higher_is_better=False),
        row("sql delayed put: arrival - due time, p99", med("delayed", 5),
            "plain put -> get latency p99", med("delayed", 7), "ms", "report",
            higher_is_better=False),
    ]  # fmt: skip


if __name__ == "__main__":
    for result in run(quick="--quick" in sys.argv):
        print(
            f"{result['scenario']:<58} {result['eventforge']:>10,.0f}  vs "
            f"{result['anchor_value']:>10,.0f} {result['unit']:<9} {result['ratio']:.2f}x  "
            f"(goal {result['goal']}; anchor: {result['anchor']})"
        )
