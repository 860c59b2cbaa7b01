"""Task results in a database table (``eventforge_results``), for ``@task(results=...)``.

A write is one transaction: update the row unless it holds an outcome that has not expired,
else insert it, skipping a row another writer inserted first, whose state is then read to
decide. Every database orders two writers of one row (row locks on PostgreSQL and MariaDB, one
writer at a time on SQLite), so a final record is never replaced. Expired rows read as absent;
a store deletes them at most once a minute, with a write.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from eventforge.errors import ConfigurationError, TransportError
from eventforge.transport import ResultStore, StoredResult, check_result_ttl, check_task_id
from sqlalchemy import Table, delete, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine

from .schema import DEFAULT_SCHEMA, Schema

__all__ = ["SqlResultStore"]

_PURGE_EVERY = 60.0
_ATTEMPTS = 5


def _insert_ignoring_duplicates(table: Table, dialect: str) -> Any:
    if dialect == "postgresql":
        return pg_insert(table).on_conflict_do_nothing(index_elements=["task_id"])
    if dialect == "sqlite":
        return sqlite_insert(table).on_conflict_do_nothing(index_elements=["task_id"])
    if dialect in ("mysql", "mariadb"):
        return insert(table).prefix_with("IGNORE")
    raise ConfigurationError(
        f"eventforge-sql keeps results on PostgreSQL, SQLite and MariaDB/MySQL, not {dialect!r}",
        key="engine",
    )


class SqlResultStore(ResultStore):
    """Results in ``schema.results`` through ``engine`` (every process on the database).

    ``poll_interval`` caps how long a waiter sleeps between two reads.
    """

    name = "sql"

    def __init__(
        self, engine: Engine, *, schema: Schema | None = None, poll_interval: float = 0.05
    ) -> None:
        self.engine = engine
        self.table = (schema or DEFAULT_SCHEMA).results
        self.poll_interval = poll_interval
        insert_ignoring = _insert_ignoring_duplicates(self.table, engine.dialect.name)
        # Whether an INSERT took effect: the row it returns (psycopg reports no rowcount for
        # INSERT ... ON CONFLICT), or the row count where there is no RETURNING.
        self._returning = bool(engine.dialect.insert_returning)
        self._insert = (
            insert_ignoring.returning(self.table.c.task_id) if self._returning else insert_ignoring
        )
        self._purged = 0.0
        self._lock = threading.Lock()

    def put(self, task_id: str, data: bytes, *, ttl: float, final: bool) -> bool:
        check_task_id(task_id)
        ttl = check_result_ttl(ttl)
        for _ in range(_ATTEMPTS):
            now = time.time()
            with self.engine.begin() as conn:
                stored = self._write(conn, task_id, bytes(data), final, now, now + ttl)
            if stored is not None:
                self._purge(now)
                return stored
        raise TransportError(
            f"storing the result of task {task_id!r} lost {_ATTEMPTS} races with other writers "
            "of the same id in a row; retry"
        )

    def _write(
        self, conn: Connection, task_id: str, data: bytes, final: bool, now: float, until: float
    ) -> bool | None:
        """Store the record (True), find an outcome in place (False), or ``None``: the row
        changed under us, try again."""
        t = self.table
        values = {"data": data, "final": final, "expires_at": until}
        replace = (
            update(t)
            .where(t.c.task_id == task_id, or_(t.c.final.is_(False), t.c.expires_at <= now))
            .values(**values)
        )
        if conn.execute(replace).rowcount == 1:
            return True
        inserted = conn.execute(self._insert.values(task_id=task_id, **values))
        if (inserted.first() is not None) if self._returning else inserted.rowcount == 1:
            return True
        row = conn.execute(select(t.c.final, t.c.expires_at).where(t.c.task_id == task_id)).first()
        if row is not None and row[0] and row[1] > now:
            return False
        return None

    def get(self, task_id: str) -> StoredResult | None:
        t = self.table
        stmt = select(t.c.data, t.c.final).where(
            t.c.task_id == task_id, t.c.expires_at > time.time()
        )
        with self.engine.connect() as conn:
            row = conn.execute(stmt).first()
        return None if row is None else StoredResult(bytes(row[0]), bool(row[1]))

    def delete(self, task_id: str) -> bool:
        t = self.table
        with self.engine.begin() as conn:
            live = conn.execute(
                select(t.c.task_id).where(t.c.task_id == task_id, t.c.expires_at > time.time())
            ).first()
            conn.execute(delete(t).where(t.c.task_id == task_id))
        return live is not None

    def _purge(self, now: float) -> None:
        with self._lock:
            if now - self._purged < _PURGE_EVERY:
                return
            self._purged = now
        with self.engine.begin() as conn:
            conn.execute(delete(self.table).where(self.table.c.expires_at <= now))

    def __repr__(self) -> str:
        return f"SqlResultStore({self.engine.url.render_as_string()!r}, {self.table.name!r})"
