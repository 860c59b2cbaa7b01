"""Claims on the sql transport (a unique row in the claims table), on SQLite, PostgreSQL and
MariaDB, and a periodic schedule fired once per tick by three services sharing PostgreSQL; and
the row leases of the claim machinery (``_claims``): on the databases with row locks, workers
never wait for each other's rows."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from eventforge.message import Message
from eventforge.service import Service
from eventforge.service.schedule import Tick
from eventforge.transport import Capability
from eventforge.workqueue import RetryPolicy
from eventforge_sql import SqlWorkQueueBackend
from eventforge_sql.testing import PostgresServer
from eventforge_sql.transport import SqlTransport

pytestmark = pytest.mark.broker


def test_a_key_is_claimed_once_across_transports_until_its_ttl_passes(
    engine: sa.Engine, unique: Callable[[str], str]
) -> None:
    a, b = SqlTransport(engine), SqlTransport(engine)
    key = unique("tick")
    assert Capability.CLAIMS in a.capabilities
    assert [a.claim(key, 5), b.claim(key, 5), a.claim(key, 5)] == [True, False, False]
    short = unique("short")
    assert a.claim(short, 0.05) is True
    assert b.claim(short, 0.05) is False
    with engine.begin() as conn:  # its time passes (no sleep: the row's expiry moves back)
        conn.execute(
            sa.text("UPDATE eventforge_claims SET held_until = 0 WHERE claim_key = :k"),
            {"k": short},
        )
    assert b.claim(short, 0.05) is True
    with pytest.raises(ValueError, match="ttl must be > 0"):
        a.claim(key, 0)
    with pytest.raises(ValueError, match="at most 255 characters"):
        a.claim("k" * 256, 5)


def test_concurrent_claims_of_one_key_have_one_winner(
    pg_engine: sa.Engine, unique: Callable[[str], str]
) -> None:
    """Eight threads on their own connections claim the same keys at once: one wins each."""
    transport = SqlTransport(pg_engine)
    keys = [unique("race") for _ in range(20)]
    wins: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def claimer() -> None:
        start.wait()
        for key in keys:
            if transport.claim(key, 30):
                with lock:
                    wins.append(key)

    threads = [threading.Thread(target=claimer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(wins) == sorted(keys)


def test_three_services_sharing_a_database_fire_each_tick_once(
    pg_server: PostgresServer, pg_engine: sa.Engine, unique: Callable[[str], str]
) -> None:
    """Three services, each on its own engine (its own connections, as three worker processes
    would have), run one 0.1 s schedule: every tick of the window fires exactly once."""
    name = unique("ticker")
    fired: list[Tick] = []
    lock = threading.Lock()

    def beat(tick: Tick) -> None:
        with lock:
            fired.append(tick)

    services, transports = [], []
    for _ in range(3):
        transports.append(SqlTransport.from_url(pg_server.url))
        svc = Service(name, transports[-1], probe_interval=None)
        svc.every(0.1, name="beat")(beat)
        services.append(svc)
    for svc in services:
        svc.start()
    start = time.time()
    time.sleep(1.5)
    end = time.time()
    for svc in services:
        svc.stop()
    for transport in transports:
        transport.close()
    ticks = collections.Counter(round(t.scheduled.timestamp() * 1000) for t in fired)
    window = list(range(int(start * 10) * 100 + 200, int(end * 10) * 100 - 100, 100))
    duplicates = sum(c - 1 for c in ticks.values())
    misses = [t for t in window if t not in ticks]
    print(
        f"\nschedule across 3 services (postgresql): ticks {len(window)}, firings {len(fired)}, "
        f"duplicates {duplicates}, misses {len(misses)}"
    )
    assert duplicates == 0
    assert misses == []


_LOCK_TIMEOUT = {
    "postgresql": "SET LOCAL lock_timeout = '1s'",
    "mariadb": "SET SESSION innodb_lock_wait_timeout = 1",
}


@pytest.mark.parametrize("database", ["pg", "mariadb"])
def test_a_lease_sweep_skips_rows_another_worker_is_claiming(
    database: str, request: pytest.FixtureRequest, unique: Callable[[str], str]
) -> None:
    """Worker A re-claims rows whose lease ran out and has not committed yet; worker B's sweep
    of expired leases returns at once instead of waiting for A's locks (on InnoDB a plain
    UPDATE locks every index entry it scans: two sweeping workers deadlocked)."""
    engine: sa.Engine = request.getfixturevalue(f"{database}_engine")
    name = unique("sweep")
    backend = SqlWorkQueueBackend(engine, name, RetryPolicy(max_attempts=5), lease=0.05)
    backend.put_many([Message(name, n) for n in range(3)])
    assert len(backend.fetch(3, timeout=5)) == 3
    backend.put_many([Message(name, n) for n in range(3, 300)])  # the sweep's index pays off
    time.sleep(0.1)  # the first three leases run out unsettled
    claims = backend.claims
    with engine.connect() as a, engine.connect() as b, a.begin():
        held = claims.claim(a, 3, max_attempts=5)  # A holds them again, uncommitted
        assert [row.attempt for row in held] == [2, 2, 2]
        with b.begin():
            b.execute(sa.text(_LOCK_TIMEOUT[engine.dialect.name]))
            started = time.monotonic()
            assert claims.dead_letter_expired(b, max_attempts=5) == 0
            taken = claims.claim(b, 3, max_attempts=5)
            assert time.monotonic() - started < 1.0
        assert {row.id for row in taken}.isdisjoint(row.id for row in held)
    backend.close()
