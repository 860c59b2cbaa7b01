"""Task results in the results table: the result-store conformance suite on PostgreSQL, SQLite
and MariaDB, and the table's rows."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa
from eventforge.testing.results_conformance import ResultStoreConformance, StoreFactory
from eventforge_sql import SqlResultStore
from eventforge_sql.transport import SqlTransport


class TestPostgresResultStore(ResultStoreConformance):
    short_ttl = 0.2
    expiry_slack = 0.5

    @pytest.fixture
    def make_store(self, pg_engine: sa.Engine) -> StoreFactory:
        return lambda: SqlResultStore(pg_engine)


class TestSqliteResultStore(ResultStoreConformance):
    short_ttl = 0.2
    expiry_slack = 0.5

    @pytest.fixture
    def make_store(self, sqlite_engine: sa.Engine) -> StoreFactory:
        return lambda: SqlResultStore(sqlite_engine)


class TestMariaDBResultStore(ResultStoreConformance):
    short_ttl = 0.2
    expiry_slack = 0.5

    @pytest.fixture
    def make_store(self, mariadb_engine: sa.Engine) -> StoreFactory:
        return lambda: SqlResultStore(mariadb_engine)


def test_the_transport_keeps_results_in_the_results_table(sqlite_engine: sa.Engine) -> None:
    """``SqlTransport.result_store()`` writes rows of ``eventforge_results``; a later write
    deletes expired rows (at most once a minute per store)."""
    transport = SqlTransport(sqlite_engine)
    store = transport.result_store()
    assert transport.result_store() is store
    store.put("short", b"x", ttl=0.01, final=True)
    time.sleep(0.02)
    store._purged = 0.0  # the minute since the last purge has passed
    store.put("order-7", b"outcome", ttl=60, final=True)
    with sqlite_engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT task_id, data, final FROM eventforge_results")).all()
    assert [(r[0], bytes(r[1]), bool(r[2])) for r in rows] == [("order-7", b"outcome", True)]
    transport.close()
