"""Fixtures of the eventforge-sql tests: a private PostgreSQL per session, SQLite files per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from eventforge.testing.brokers import BrokerUnavailable
from eventforge.testing.pytest_plugin import require_brokers
from eventforge_sql import configure_sqlite, create_schema
from eventforge_sql.testing import PostgresServer


def _start_postgres() -> PostgresServer:
    try:
        return PostgresServer().start()
    except BrokerUnavailable as exc:
        if require_brokers():
            pytest.fail(
                f"PostgreSQL required (EVENTFORGE_REQUIRE_BROKERS=1) but unavailable: {exc}"
            )
        pytest.skip(f"PostgreSQL unavailable: {exc}")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """A private PostgreSQL for the whole session (killable and restartable by fault tests)."""
    server = _start_postgres()
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def pg_engine(pg_server: PostgresServer) -> Iterator[sa.Engine]:
    """An engine on the private PostgreSQL with the schema created."""
    engine = sa.create_engine(pg_server.url, pool_pre_ping=True, pool_size=10)
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


@pytest.fixture(params=["sqlite", "pg"])
def engine(request: pytest.FixtureRequest) -> sa.Engine:
    """Each test runs on SQLite and on the private PostgreSQL."""
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
