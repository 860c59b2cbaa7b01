"""Claim, lease and settle rows of a queue-shaped table: the machinery under all three parts.

A claim takes up to ``n`` due rows of one queue in id order, skipping rows another worker has
locked (``FOR UPDATE SKIP LOCKED`` on PostgreSQL and MariaDB; SQLite serializes writers, so
its single-statement claim needs no row locks), marks them ``processing`` under a fresh lease
owner and pushes ``available_at`` to the lease's expiry. A worker that dies simply stops
renewing: once ``available_at`` passes, the row is claimable again (attempt + 1). Every settle
is conditional on the lease owner, so a worker whose lease ran out changes nothing.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from eventforge.errors import ConfigurationError
from eventforge.message import new_id
from sqlalchemy import (
    BigInteger,
    Integer,
    Table,
    and_,
    any_,
    bindparam,
    delete,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.sql import Executable

from ._pg_claims import claim_statement
from .schema import CLAIMABLE

log = logging.getLogger("eventforge_sql.claims")

__all__ = [
    "Claimed",
    "Claims",
    "by_owner",
    "insert_ignoring_duplicates",
    "never_settled_reason",
    "row_values",
]


def never_settled_reason(attempts: int) -> str:
    """The dead-letter reason of a row whose lease expired on its last allowed delivery
    (worded as every backend words it: the conformance suite checks the wording)."""
    return (
        f"delivered {attempts} times without being settled (max_attempts={attempts}): its "
        "consumers crashed or held it past the lease"
    )


@dataclass
class Claimed:
    """One claimed row."""

    id: int
    message_id: str
    envelope: str
    attempt: int
    owner: str
    event_type: str | None = None


def insert_ignoring_duplicates(table: Table, dialect: Dialect) -> Any:
    """An INSERT that skips rows whose (queue, message_id) exists: the dialect's own form."""
    name = dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing(index_elements=["queue", "message_id"])
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing(index_elements=["queue", "message_id"])
    if name in ("mysql", "mariadb"):
        from sqlalchemy.dialects.mysql import insert as mysql_insert

        stmt = mysql_insert(table)
        return stmt.on_duplicate_key_update(message_id=stmt.inserted.message_id)
    raise ConfigurationError(
        f"eventforge-sql supports PostgreSQL, SQLite and MariaDB/MySQL, not {name!r}: use an "
        "engine of one of those (postgresql+psycopg://, sqlite:///, mariadb+pymysql://)",
        key="engine",
    )


class Claims:
    """Claims and settles for one queue of one table."""

    def __init__(self, table: Table, queue: str, dialect: Dialect, lease: float) -> None:
        if lease <= 0:
            raise ValueError(f"lease must be > 0 seconds, got {lease}")
        self.table = table
        self.queue = queue
        self.lease = lease
        self.dialect = dialect
        self.one_statement = bool(dialect.update_returning)  # PostgreSQL, SQLite >= 3.35
        self.postgresql = dialect.name == "postgresql"
        self._pg_claims: dict[tuple[bool, bool], Any] = {}
        self.insert_ignore = insert_ignoring_duplicates(table, dialect)
        self._json_inserts: dict[tuple[str, ...], Any] = {}
        t = table
        # Literal statuses (not bind parameters), so that the planner can match the claim to
        # the partial index on claimable rows.
        claimable: Any = bindparam(
            "claimable", list(CLAIMABLE), expanding=True, literal_execute=True
        )
        self._due = and_(t.c.queue == queue, t.c.status.in_(claimable))
        self._returning = (t.c.id, t.c.message_id, t.c.envelope, t.c.attempt, t.c.event_type)
        # Built once (a statement built per call costs more than its round trip to compile).
        if self.postgresql:
            ids: Any = any_(bindparam("ids", type_=ARRAY(BigInteger())))
        else:
            ids = bindparam("ids", expanding=True)
        self._mark = (
            update(t)
            .where(
                t.c.id == ids if self.postgresql else t.c.id.in_(ids),
                t.c.lease_owner == bindparam("owner"),
                t.c.status == "processing",
            )
            .values(status="processed", lease_owner=None, processed_at=bindparam("now"))
        )

    def id_in(self, ids: Sequence[int]) -> Any:
        """``id IN (...)``; on PostgreSQL ``id = ANY(array)``, one statement text for every
        batch size (a long IN list is parsed anew for each size)."""
        t = self.table
        if self.dialect.name == "postgresql":
            return t.c.id == any_(bindparam("ids", list(ids), type_=ARRAY(BigInteger())))
        return t.c.id.in_(list(ids))

    # -- claiming ---------------------------------------------------------------------------

    def claim(
        self,
        conn: Connection,
        limit: int,
        max_attempts: int | None = None,
        acks: Sequence[tuple[int, str]] = (),
    ) -> list[Claimed]:
        """Claim up to ``limit`` due rows (commit is the caller's); oldest first.

        With ``max_attempts``, rows whose lease expired on their last allowed delivery are not
        claimed (:meth:`dead_letter_expired` moves them to the dead letters). ``acks`` are
        (row id, lease owner) pairs of acknowledged deliveries, deleted first (each only while
        that owner still holds the row). On PostgreSQL all of it is one statement
        (:mod:`._pg_claims`), atomic by itself: run it on an autocommit connection
        (:meth:`connect`) and it costs one round trip.
        """
        t = self.table
        now = time.time()
        owner = new_id()
        if self.postgresql:
            return self._claim_pg(conn, limit, max_attempts, acks, now, owner)
        for ack_owner, ids in by_owner(acks).items():
            conn.execute(delete(t).where(self.id_in(ids), t.c.lease_owner == ack_owner))
        where = and_(self._due, t.c.available_at <= now)
        if max_attempts is not None:
            where = and_(where, ~and_(t.c.status == "processing", t.c.attempt >= max_attempts))
        pick = (
            select(t.c.id)
            .where(where)
            .order_by(t.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        values = {
            "status": "processing",
            "attempt": t.c.attempt + 1,
            "lease_owner": owner,
            "available_at": now + self.lease,
        }
        if self.one_statement:
            stmt = (
                update(t)
                .where(t.c.id.in_(pick.scalar_subquery()))
                .values(**values)
                .returning(*self._returning)
            )
            rows = conn.execute(stmt).all()
        else:
            ids = list(conn.execute(pick).scalars())
            if not ids:
                return []
            conn.execute(update(t).where(t.c.id.in_(ids)).values(**values))
            rows = conn.execute(select(*self._returning).where(t.c.id.in_(ids))).all()
        claimed = [Claimed(r[0], r[1], r[2], r[3], owner, r[4]) for r in rows]
        claimed.sort(key=lambda c: c.id)
        return claimed

    def _claim_pg(
        self,
        conn: Connection,
        limit: int,
        max_attempts: int | None,
        acks: Sequence[tuple[int, str]],
        now: float,
        owner: str,
    ) -> list[Claimed]:
        shape = (bool(acks), max_attempts is not None)
        stmt = self._pg_claims.get(shape)
        if stmt is None:
            stmt = claim_statement(self.table, self.dialect, acks=shape[0], max_attempts=shape[1])
            self._pg_claims[shape] = stmt
        params: dict[str, Any] = {
            "queue": self.queue,
            "now": now,
            "owner": owner,
            "expiry": now + self.lease,
            "limit": limit,
        }
        if max_attempts is not None:
            params["max_attempts"] = max_attempts
        if acks:
            # The acks of the latest fetch go with the claim, any older fetch's in statements
            # of their own before it (an ack needs no atomicity with the claim).
            groups = by_owner(acks)
            ack_owner = acks[-1][1]
            for other, ids in groups.items():
                if other != ack_owner:
                    t = self.table
                    conn.execute(delete(t).where(self.id_in(ids), t.c.lease_owner == other))
            params["ack_ids"] = groups[ack_owner]
            params["ack_owner"] = ack_owner
        rows = conn.execute(stmt, params).all()
        claimed = [Claimed(r[0], r[1], r[2], r[3], owner, r[4]) for r in rows]
        claimed.sort(key=lambda c: c.id)
        return claimed

    def connect(self, engine: Engine) -> AbstractContextManager[Connection]:
        """A connection for :meth:`claim` that commits it: on PostgreSQL an autocommit
        connection (the claim is one statement), elsewhere a transaction."""
        if self.postgresql:
            return engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        return engine.begin()

    def sweep(self, engine: Engine, max_attempts: int) -> None:
        """:meth:`dead_letter_expired` in a transaction of its own, after a claim committed: a
        failure is logged, never raised, so the rows the claim leased still reach the caller
        (the next sweep tries again)."""
        try:
            with engine.begin() as conn:
                self.dead_letter_expired(conn, max_attempts)
        except Exception:
            log.warning("dead-lettering expired leases failed; retried later", exc_info=True)

    def dead_letter_expired(self, conn: Connection, max_attempts: int) -> int:
        """Dead-letter rows whose lease expired on their last allowed delivery; count them.

        The rows are picked with ``SKIP LOCKED`` first: a plain ``UPDATE ... WHERE`` would wait
        for rows other workers hold (on InnoDB even for index entries it merely scans), and two
        workers sweeping while holding their claims would deadlock.
        """
        t = self.table
        now = time.time()
        expired = and_(
            self._due,
            t.c.status == "processing",
            t.c.available_at <= now,
            t.c.attempt >= max_attempts,
        )
        pick = select(t.c.id).where(expired).with_for_update(skip_locked=True)
        ids = list(conn.execute(pick).scalars())
        if not ids:
            return 0
        stmt = (
            update(t)
            .where(self.id_in(ids), expired)
            .values(
                status="dead_letter",
                lease_owner=None,
                error=never_settled_reason(max_attempts),
                last_error_at=now,
            )
        )
        return conn.execute(stmt).rowcount

    # -- settling (each conditional on the lease owner) ---------------------------------------

    def _mine(self, row_id: int, owner: str) -> Any:
        t = self.table
        return and_(t.c.id == row_id, t.c.lease_owner == owner, t.c.status == "processing")

    def delete(self, conn: Connection, row_id: int, owner: str) -> bool:
        return conn.execute(delete(self.table).where(self._mine(row_id, owner))).rowcount == 1

    def delete_many(self, conn: Connection, rows: Sequence[Claimed]) -> int:
        """Delete claimed rows that are still ours; return how many were."""
        if not rows:
            return 0
        t = self.table
        owners = {r.owner for r in rows}
        stmt = delete(t).where(
            t.c.id.in_([r.id for r in rows]),
            t.c.lease_owner.in_(owners),
            t.c.status == "processing",
        )
        return conn.execute(stmt).rowcount

    def mark_processed(self, conn: Connection, rows: Sequence[Claimed]) -> int:
        """Mark claimed rows processed if they are still ours; return how many were."""
        if not rows:
            return 0
        now = time.time()
        return sum(
            conn.execute(self._mark, {"ids": ids, "owner": owner, "now": now}).rowcount
            for owner, ids in by_owner(rows).items()
        )

    def retry_later(
        self, conn: Connection, row_id: int, owner: str, delay: float, error: str | None = None
    ) -> bool:
        now = time.time()
        values: dict[str, Any] = {
            "status": "failed",
            "lease_owner": None,
            "available_at": now + max(0.0, delay),
        }
        if error is not None:
            values.update(error=error, last_error_at=now)
        stmt = update(self.table).where(self._mine(row_id, owner)).values(**values)
        return conn.execute(stmt).rowcount == 1

    def dead_letter(self, conn: Connection, row_id: int, owner: str, reason: str) -> bool:
        stmt = (
            update(self.table)
            .where(self._mine(row_id, owner))
            .values(status="dead_letter", lease_owner=None, error=reason, last_error_at=time.time())
        )
        return conn.execute(stmt).rowcount == 1

    def extend(self, conn: Connection, row_id: int, owner: str) -> bool:
        stmt = (
            update(self.table)
            .where(self._mine(row_id, owner))
            .values(available_at=time.time() + self.lease)
        )
        return conn.execute(stmt).rowcount == 1

    # -- dead letters and counts ------------------------------------------------------------

    def replay_stmt(self, ids: Sequence[Any] | None) -> Executable:
        """Put dead letters (all, or those with the given row ids) back as fresh rows."""
        t = self.table
        stmt = update(t).where(t.c.queue == self.queue, t.c.status == "dead_letter")
        if ids is not None:
            stmt = stmt.where(t.c.id.in_(list(ids)))
        return stmt.values(
            status="pending", attempt=0, available_at=time.time(), lease_owner=None, error=None
        )

    def counts(self, conn: Connection) -> dict[str, int]:
        """Rows per status; ``processing`` rows whose lease expired count as ``pending``."""
        return self.tally(conn)[0]

    def tally(self, conn: Connection) -> tuple[dict[str, int], int]:
        """Rows per status (as :meth:`counts`) and how many ``pending`` or ``failed`` rows are
        not due yet (delayed puts and retries in their backoff), in one query."""
        t = self.table
        now = time.time()
        stmt = (
            select(t.c.status, func.count(), func.sum((t.c.available_at > now).cast(Integer)))
            .where(t.c.queue == self.queue)
            .group_by(t.c.status)
        )
        counts = dict.fromkeys(("pending", "processing", "failed", "processed", "dead_letter"), 0)
        delayed = 0
        for status, count, later_count in conn.execute(stmt):
            counts[status] = counts.get(status, 0) + int(count)
            later = int(later_count or 0)
            if status == "processing":  # ``available_at`` is the lease's expiry
                expired = int(count) - later
                counts["processing"] -= expired
                counts["pending"] += expired
            elif status in ("pending", "failed"):
                delayed += later
        return counts, delayed

    def insert_rows(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        """Insert rows, skipping any whose (queue, message_id) is already stored.

        On PostgreSQL several rows go in one statement that reads them from one JSON parameter,
        ``INSERT ... SELECT ... FROM json_populate_recordset(...)`` (in the rows' order): an
        ``executemany`` sends one INSERT per row, and a statement of ``unnest`` arrays spends
        longer quoting each envelope into a text array than the INSERTs take.
        """
        if not rows:
            return
        if len(rows) > 1 and self.dialect.name == "postgresql":
            columns = tuple(rows[0])
            if all(row.keys() == rows[0].keys() for row in rows):
                conn.execute(
                    self._json_insert(conn, columns), {"rows": json.dumps(rows, ensure_ascii=False)}
                )
                return
        conn.execute(self.insert_ignore, rows)

    def commit_rows(self, engine: Engine, rows: list[dict[str, Any]]) -> None:
        """Insert rows as :meth:`insert_rows` does and commit them.

        On PostgreSQL the insert is one statement, atomic by itself, so it runs in autocommit:
        no ``BEGIN`` and ``COMMIT`` round trips around it.
        """
        if not rows:
            return
        if self.dialect.name == "postgresql" and all(row.keys() == rows[0].keys() for row in rows):
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                self.insert_rows(conn, rows)
            return
        with engine.begin() as conn:
            self.insert_rows(conn, rows)

    def _json_insert(self, conn: Connection, columns: tuple[str, ...]) -> Any:
        stmt = self._json_inserts.get(columns)
        if stmt is None:
            quote = conn.dialect.identifier_preparer
            table = quote.format_table(self.table)
            names = ", ".join(quote.quote(c) for c in columns)
            # The table's row type gives each JSON field its column's type (a value too long
            # for its column is refused, as by a plain INSERT).
            stmt = text(
                f"INSERT INTO {table} ({names}) SELECT {names} "
                f"FROM json_populate_recordset(NULL::{table}, CAST(:rows AS json)) "
                "WITH ORDINALITY AS rows ORDER BY rows.ordinality "
                "ON CONFLICT (queue, message_id) DO NOTHING"
            )
            self._json_inserts[columns] = stmt
        return stmt


def by_owner(rows: Sequence[Claimed] | Sequence[tuple[int, str]]) -> dict[str, list[int]]:
    """Row ids grouped by lease owner (the rows of one claim share an owner)."""
    groups: dict[str, list[int]] = {}
    for row in rows:
        row_id, owner = (row.id, row.owner) if isinstance(row, Claimed) else row
        groups.setdefault(owner, []).append(row_id)
    return groups


def row_values(
    queue: str,
    message_id: str,
    envelope: str,
    now: float,
    event_type: str | None = None,
    *,
    due: float | None = None,
) -> dict[str, Any]:
    """The column values of a new pending row (claimable from ``due`` on, else at once)."""
    return {
        "queue": queue,
        "message_id": message_id,
        "envelope": envelope,
        "status": "pending",
        "attempt": 0,
        "available_at": now if due is None else due,
        "created_at": now,
        "event_type": event_type,
    }
