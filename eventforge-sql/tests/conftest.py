"""Fixtures of the eventforge-sql tests: a private PostgreSQL and a private MariaDB per session,
SQLite files per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from eventforge.testing.brokers import BrokerUnavailable
from eventforge.testing.pytest_plugin import require_brokers
from eventforge_sql import configure_sqlite, create_schema, engine_from_url
from eventforge_sql.testing import MariaDBServer, PostgresServer


def _start(server: Callable[[], PostgresServer | MariaDBServer], what: str) -> Any:
    try:
        return server().start()
    except BrokerUnavailable as exc:
        if require_brokers():
            pytest.fail(f"{what} required (EVENTFORGE_REQUIRE_BROKERS=1) but unavailable: {exc}")
        pytest.skip(f"{what} unavailable: {exc}")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """A private PostgreSQL for the whole session (killable and restartable by fault tests)."""
    server: PostgresServer = _start(PostgresServer, "PostgreSQL")
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def pg_engine(pg_server: PostgresServer) -> Iterator[sa.Engine]:
    """An engine on the private PostgreSQL with the schema created."""
    engine = sa.create_engine(pg_server.url, pool_pre_ping=True, pool_size=10)
    create_schema(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[MariaDBServer]:
    """A private MariaDB for the whole session (never the machine's own server)."""
    server: MariaDBServer = _start(MariaDBServer, "MariaDB")
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def mariadb_engine(mariadb_server: MariaDBServer) -> Iterator[sa.Engine]:
    """An engine on the private MariaDB (READ COMMITTED, as engine_from_url sets it) with the
    schema created."""
    engine = engine_from_url(mariadb_server.url, pool_pre_ping=True, pool_size=10)
    create_schema(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[sa.Engine]:
    """An engine on a fresh SQLite file with the schema created."""
    engine = configure_sqlite(sa.create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}"))
    create_schema(engine)
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", "pg", "mariadb"])
def engine(request: pytest.FixtureRequest) -> sa.Engine:
    """Each test runs on SQLite, on the private PostgreSQL and on the private MariaDB."""
    return request.getfixturevalue(f"{request.param}_engine")  # type: ignore[no-any-return]


@pytest.fixture
def unique() -> Callable[[str], str]:
    """Unique names, so tests sharing the session's database never see each other's rows."""
    import os

    return lambda prefix: f"{prefix}-{os.urandom(5).hex()}"


FIGURES: list[str] = []


@pytest.fixture
def report() -> Callable[[str], None]:
    """Record a line of measured figures, printed in the terminal summary."""
    return FIGURES.append


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("eventforge-sql fault figures")
        for line in FIGURES:
            terminalreporter.write_line(line)
