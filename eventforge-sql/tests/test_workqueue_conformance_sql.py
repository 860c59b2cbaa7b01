"""The work-queue conformance suite over the SQL backend, on PostgreSQL, SQLite and MariaDB."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from eventforge.testing.workqueue_conformance import BackendFactory, WorkQueueConformance
from eventforge.workqueue import RetryPolicy, WorkQueueBackend
from eventforge_sql import SqlWorkQueueBackend

LEASE = 0.5


class TestPostgresWorkQueueConformance(WorkQueueConformance):
    visibility_timeout = LEASE

    @pytest.fixture
    def make_backend(self, pg_engine: sa.Engine) -> BackendFactory:
        def make(name: str, retry: RetryPolicy) -> WorkQueueBackend:
            return SqlWorkQueueBackend(pg_engine, name, retry, lease=LEASE)

        return make


class TestSqliteWorkQueueConformance(WorkQueueConformance):
    visibility_timeout = LEASE

    @pytest.fixture
    def make_backend(self, sqlite_engine: sa.Engine) -> BackendFactory:
        def make(name: str, retry: RetryPolicy) -> WorkQueueBackend:
            return SqlWorkQueueBackend(sqlite_engine, name, retry, lease=LEASE)

        return make


class TestMariaDBWorkQueueConformance(WorkQueueConformance):
    """MariaDB has no UPDATE ... RETURNING: the claim selects, updates and reads back."""

    visibility_timeout = LEASE

    @pytest.fixture
    def make_backend(self, mariadb_engine: sa.Engine) -> BackendFactory:
        def make(name: str, retry: RetryPolicy) -> WorkQueueBackend:
            return SqlWorkQueueBackend(mariadb_engine, name, retry, lease=LEASE)

        return make
