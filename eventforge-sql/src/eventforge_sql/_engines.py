"""Engines for eventforge-sql: tuned SQLite connections and URL-built engines."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

__all__ = ["configure_sqlite", "engine_from_url", "sync_companion"]

_SYNC_DRIVERS = {
    "asyncpg": "psycopg",
    "psycopg_async": "psycopg",
    "aiosqlite": "pysqlite",
    "aiomysql": "pymysql",
    "asyncmy": "pymysql",
}
# The driver a URL without one gets: SQLAlchemy's defaults (psycopg2, mysqlclient) are not
# dependencies of eventforge-sql; the drivers of its extras are.
_DEFAULT_DRIVERS = {"postgresql": "psycopg", "mysql": "pymysql", "mariadb": "pymysql"}


def configure_sqlite(engine: Engine, *, busy_timeout: float = 30.0) -> Engine:
    """Make an SQLite engine fit for several writers: WAL journal, ``synchronous=NORMAL`` and a
    busy timeout, set on every new connection. Returns ``engine``; other dialects are untouched.

    Without WAL, readers and the writer block each other and every commit syncs the journal
    several times: with several workers a claim can then wait long enough for leases to run out.
    """
    if engine.dialect.name != "sqlite":
        return engine

    @event.listens_for(engine, "connect")
    def _tune(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        cursor.close()

    return engine


def engine_from_url(url: str | sa.URL, **options: Any) -> Engine:
    """``create_engine(url)`` with eventforge-sql's defaults: a URL naming no driver gets the
    one of eventforge-sql's extras (``postgresql://`` -> ``postgresql+psycopg://``,
    ``mysql://`` / ``mariadb://`` -> ``+pymysql``), READ COMMITTED on MariaDB/MySQL, and for
    SQLite files :func:`configure_sqlite`.

    No pre-ping (it would cost a round trip per transaction): after a database restart the
    first statement on a stale pooled connection fails, SQLAlchemy then discards every pooled
    connection, and the workers' retry takes fresh ones.
    """
    url = sa.make_url(url)
    driver = _DEFAULT_DRIVERS.get(url.drivername)  # no "+driver" in the URL
    if driver is not None:
        url = url.set(drivername=f"{url.drivername}+{driver}")
    if url.get_backend_name() in ("mysql", "mariadb"):
        # InnoDB's default REPEATABLE READ takes gap locks that make concurrent claims and
        # deletes deadlock; the claims need no more than READ COMMITTED.
        options.setdefault("isolation_level", "READ COMMITTED")
    engine = sa.create_engine(url, **options)
    return configure_sqlite(engine)


def sync_companion(engine: Engine) -> Engine:
    """A sync engine on the database of an ``AsyncEngine``'s ``sync_engine``: the same URL with
    the dialect's blocking driver (asyncpg -> psycopg, aiosqlite -> pysqlite, ...)."""
    url = engine.url
    driver = _SYNC_DRIVERS.get(url.get_driver_name(), url.get_driver_name())
    return engine_from_url(url.set(drivername=f"{url.get_backend_name()}+{driver}"))
