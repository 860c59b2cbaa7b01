"""Service health on the sql transport: a subscription whose LISTEN connection is terminated by
the database is seen, re-established and delivers again, without touching the process."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
import sqlalchemy as sa
from eventforge.service import HealthServer, Service
from eventforge.testing import wait_until
from eventforge.workqueue import WorkQueue
from eventforge_sql.testing import PostgresServer

pytestmark = pytest.mark.broker


def _ready(url: str) -> int:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _states(svc: Service, seen: list[str], stop: threading.Event) -> None:
    while not stop.is_set():
        state = str(svc.health()["subscriptions"][0]["state"])
        if not seen or seen[-1] != state:
            seen.append(state)
        time.sleep(0.01)


def test_a_terminated_listen_connection_is_recovered_and_delivers(
    pg_server: PostgresServer, pg_engine: sa.Engine
) -> None:
    svc = Service("pg-listener", pg_server.url, probe_interval=0.1, probe_timeout=0.5)
    got: list[Any] = []
    svc.on("events.*")(lambda m: got.append(m.payload))
    seen: list[str] = []
    stop = threading.Event()
    with svc, HealthServer(svc.health) as server:
        assert wait_until(lambda: svc.health()["subscriptions"][0]["probes"]["seen"] >= 2, 20)
        watcher = threading.Thread(target=_states, args=(svc, seen, stop), daemon=True)
        watcher.start()
        start = time.monotonic()
        with pg_engine.begin() as conn:
            killed = conn.execute(
                sa.text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE query ILIKE 'LISTEN%' AND pid <> pg_backend_pid()"
                )
            ).scalar()
        assert killed

        def delivers() -> bool:
            svc.queue.publish("events.x", 1)
            return 1 in got

        assert wait_until(delivers, timeout=30, interval=0.2)
        again = time.monotonic() - start
        assert wait_until(lambda: _ready(server.url) == 200, timeout=20)
        stop.set()
        watcher.join()
        print(
            f"\nsql: {killed} LISTEN connection(s) terminated; delivering again after "
            f"{again:.2f} s (states seen: {seen})"
        )


def test_a_sql_work_queue_consumer_reports_its_backlog(
    pg_server: PostgresServer, pg_engine: sa.Engine
) -> None:
    svc = Service("pg-jobs", pg_server.url, probe_interval=0.2)
    gate = threading.Event()
    svc.consumer("svc-backlog")(lambda m: gate.wait(10))
    with svc:
        work = WorkQueue("svc-backlog", svc.queue.transport)
        for n in range(5):
            work.put(n)
        assert wait_until(lambda: svc.health()["subscriptions"][0]["backlog"] == 4, 20)
        gate.set()
        assert wait_until(lambda: svc.health()["subscriptions"][0]["backlog"] == 0, 20)
