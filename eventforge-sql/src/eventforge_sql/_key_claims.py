"""Claims of keys across processes: the first insert of a key into the claims table wins.

``claim(key, ttl)`` runs one transaction: it deletes the key's row if its ``held_until`` has
passed, then inserts ``(key, now + ttl)`` skipping a key that exists (``ON CONFLICT DO NOTHING RETURNING``
on PostgreSQL and SQLite, ``INSERT IGNORE`` on MariaDB/MySQL). The primary key makes the insert
atomic across every process using the database: of concurrent claimers, one inserts the row and
the others find it (PostgreSQL makes them wait for the winner's commit, SQLite serializes
writers). Expired rows of other keys are swept at most once a minute.
"""

from __future__ import annotations

import time
from typing import Any

from eventforge.errors import ConfigurationError
from sqlalchemy import Table, bindparam, delete
from sqlalchemy.engine import Dialect, Engine

__all__ = ["KeyClaims"]

SWEEP_EVERY = 60.0
"""Seconds between two sweeps of expired claims (by one transport)."""


def _insert_new_key(table: Table, dialect: Dialect) -> Any:
    """An INSERT that does nothing (row count 0) when the key exists: the dialect's own form."""
    name = dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing(index_elements=["claim_key"])
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing(index_elements=["claim_key"])
    if name in ("mysql", "mariadb"):
        return table.insert().prefix_with("IGNORE")
    raise ConfigurationError(
        f"eventforge-sql supports PostgreSQL, SQLite and MariaDB/MySQL, not {name!r}: use an "
        "engine of one of those (postgresql+psycopg://, sqlite:///, mariadb+pymysql://)",
        key="engine",
    )


class KeyClaims:
    """``claim(key, ttl)`` on one claims table."""

    def __init__(self, engine: Engine, table: Table) -> None:
        self._engine = engine
        self._returning = bool(engine.dialect.insert_returning)  # PostgreSQL, SQLite >= 3.35
        insert = _insert_new_key(table, engine.dialect)
        # The inserted key comes back only when the row was new (psycopg reports no row count).
        self._insert = insert.returning(table.c.claim_key) if self._returning else insert
        self._expired = delete(table).where(
            table.c.claim_key == bindparam("k"), table.c.held_until <= bindparam("now")
        )
        self._sweep = delete(table).where(table.c.held_until <= bindparam("now"))
        self._swept = 0.0

    def claim(self, key: str, ttl: float) -> bool:
        """Return True when this is the first claim of ``key`` since its last one expired."""
        if not ttl > 0:
            raise ValueError(f"a claim's ttl must be > 0 seconds, got {ttl}")
        if len(key) > 255:
            raise ValueError(f"a claim's key is at most 255 characters, got {len(key)}: {key!r}")
        now = time.time()
        with self._engine.begin() as conn:
            conn.execute(self._expired, {"k": key, "now": now})
            result = conn.execute(self._insert, {"claim_key": key, "held_until": now + ttl})
            won = result.first() is not None if self._returning else result.rowcount == 1
        if now - self._swept >= SWEEP_EVERY:
            self._swept = now
            with self._engine.begin() as conn:
                conn.execute(self._sweep, {"now": now})
        return won
