"""The tables of eventforge-sql: one queue-table shape for the work queue, the inbox and the outbox.

Every table has the same columns, so one claim / lease / settle machinery serves all three:

============== =====================================================================
column         meaning
============== =====================================================================
id             row id (ascending: the delivery order within a queue)
queue          the work queue's name, the inbox's name, or the outbox message's topic
message_id     the eventforge message id (the inbox's event id); unique per queue
envelope       the message as an eventforge wire envelope (JSON: payload, headers, ...)
status         pending, processing, failed, processed, dead_letter
attempt        deliveries so far (1 during the first delivery)
available_at   when the row may next be claimed: its due time (``next_retry_at``), or
               while ``processing``, the expiry of its lease
lease_owner    the claim that holds the row while ``processing`` (NULL otherwise)
created_at     when the row was written
processed_at   when it was handled (inbox); queue and outbox rows are deleted instead, once
               acked or sent
error          the last error, or the dead-letter reason
last_error_at  when that error happened
event_type     the inbox's event type (EventFlow's ``event_type``), else NULL
============== =====================================================================

The results table (``eventforge_results``) keeps task results by task id: the record's bytes
(``data``), whether it is an outcome (``final``) and when it expires (``expires_at``).
The claims table, ``eventforge_claims`` (``claim_key`` primary key, ``held_until``), holds the
claims of periodic schedules: the first insert of a tick's key fires the tick
(:meth:`~eventforge_sql.SqlTransport.claim`).

Times are UNIX seconds (double precision) read from the writing process's clock, so the same
schema runs on every dialect. The schema is created by :func:`create_schema` or by the SQL file
``schema.sql`` shipped in this package (PostgreSQL, default table names); its version is
recorded in the version table so that a later release can migrate it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib import resources
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Double,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    select,
)
from sqlalchemy.dialects.mysql import LONGBLOB
from sqlalchemy.engine import Connection, Engine

__all__ = [
    "CLAIMABLE",
    "SCHEMA_VERSION",
    "STATUSES",
    "Schema",
    "TableNames",
    "create_schema",
    "schema_sql",
    "schema_version",
]

SCHEMA_VERSION = 1
"""The version of the table layout this release writes and reads."""

STATUSES = ("pending", "processing", "failed", "processed", "dead_letter")
CLAIMABLE = ("pending", "processing", "failed")
"""Statuses a worker may claim once ``available_at`` has passed (an expired lease included)."""


@dataclass(frozen=True)
class TableNames:
    """The names of the tables; change them to fit the application's naming or to share a
    database between several independent setups."""

    queue: str = "eventforge_queue"
    inbox: str = "eventforge_inbox"
    outbox: str = "eventforge_outbox"
    version: str = "eventforge_schema_version"
    results: str = "eventforge_results"
    claims: str = "eventforge_claims"


_RowId = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements INTEGER keys only
_Blob = LargeBinary().with_variant(LONGBLOB(), "mysql", "mariadb")  # BLOB holds only 64 KiB there


# MariaDB/MySQL: every Unicode character (a server default of latin1 or utf8mb3 refuses some),
# and keys compared byte for byte ('A' and 'a' are two message ids, task ids or claim keys).
_TEXT: dict[str, Any] = {
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
    "mariadb_charset": "utf8mb4",
    "mariadb_collate": "utf8mb4_bin",
}


def _results_table(metadata: MetaData, name: str) -> Table:
    table = Table(
        name,
        metadata,
        Column("task_id", String(200), primary_key=True),
        Column("data", _Blob, nullable=False),
        Column("final", Boolean, nullable=False),
        Column("expires_at", Double, nullable=False),
        **_TEXT,
    )
    Index(f"ix_{name}_expires", table.c.expires_at)  # the purge of expired records
    return table


def _queue_table(metadata: MetaData, name: str) -> Table:
    table = Table(
        name,
        metadata,
        Column("id", _RowId, primary_key=True, autoincrement=True),
        Column("queue", String(255), nullable=False),
        Column("message_id", String(255), nullable=False),
        Column("envelope", Text, nullable=False),
        Column("status", String(16), nullable=False, default="pending"),
        Column("attempt", Integer, nullable=False, default=0),
        Column("available_at", Double, nullable=False),
        Column("lease_owner", String(64)),
        Column("created_at", Double, nullable=False),
        Column("processed_at", Double),
        Column("error", Text),
        Column("last_error_at", Double),
        Column("event_type", String(128)),
        UniqueConstraint("queue", "message_id", name=f"uq_{name}_message"),
        **_TEXT,
    )
    # The claim walks one queue's claimable rows in id order and stops after a batch: a partial
    # index (PostgreSQL, SQLite) holds only those rows, so processed and dead rows cost nothing.
    claimable = table.c.status.in_(CLAIMABLE)
    Index(
        f"ix_{name}_claim",
        table.c.queue,
        table.c.id,
        postgresql_where=claimable,
        sqlite_where=claimable,
    )
    # Counts per status, dead letters, the lease sweep and purging.
    Index(f"ix_{name}_status", table.c.queue, table.c.status, table.c.available_at)
    return table


class Schema:
    """The SQLAlchemy ``Table`` objects of eventforge-sql, under configurable names.

    ``schema`` is the database schema (PostgreSQL) the tables live in; ``None`` uses the
    connection's default.
    """

    def __init__(self, names: TableNames | None = None, *, schema: str | None = None) -> None:
        self.names = names or TableNames()
        self.metadata = MetaData(schema=schema)
        self.queue = _queue_table(self.metadata, self.names.queue)
        self.inbox = _queue_table(self.metadata, self.names.inbox)
        self.outbox = _queue_table(self.metadata, self.names.outbox)
        self.version = Table(
            self.names.version,
            self.metadata,
            Column("component", String(64), primary_key=True),
            Column("version", Integer, nullable=False),
            Column("installed_at", Double, nullable=False),
        )
        self.results = _results_table(self.metadata, self.names.results)
        self.claims = Table(
            self.names.claims,
            self.metadata,
            Column("claim_key", String(255), primary_key=True),
            Column("held_until", Double, nullable=False),
            **_TEXT,
        )
        Index(f"ix_{self.names.claims}_until", self.claims.c.held_until)

    def __repr__(self) -> str:
        return f"Schema({self.names!r})"


DEFAULT_SCHEMA = Schema()


def create_schema(bind: Engine | Connection, schema: Schema | None = None) -> Schema:
    """Create the tables and indexes that do not exist yet and record the schema version.

    Safe to call at every start. Refuses (``RuntimeError``) a database whose recorded version is
    newer than this release understands, instead of writing rows it could not read back.
    """
    schema = schema or DEFAULT_SCHEMA
    if isinstance(bind, Engine):
        with bind.begin() as conn:
            _create(conn, schema)
    else:
        _create(bind, schema)
    return schema


def _create(conn: Connection, schema: Schema) -> None:
    schema.metadata.create_all(conn, checkfirst=True)
    version = schema.version
    found = conn.execute(
        select(version.c.version).where(version.c.component == "eventforge_sql")
    ).scalar()
    if found is None:
        conn.execute(
            version.insert().values(
                component="eventforge_sql", version=SCHEMA_VERSION, installed_at=time.time()
            )
        )
    elif found > SCHEMA_VERSION:
        raise RuntimeError(
            f"the database holds eventforge-sql schema version {found}, newer than this "
            f"release's {SCHEMA_VERSION}; upgrade eventforge-sql"
        )


def schema_version(bind: Engine | Connection, schema: Schema | None = None) -> int | None:
    """The schema version recorded in the database, or ``None`` when no schema was created."""
    schema = schema or DEFAULT_SCHEMA
    stmt = select(schema.version.c.version).where(schema.version.c.component == "eventforge_sql")
    if isinstance(bind, Engine):
        with bind.connect() as conn:
            if not bind.dialect.has_table(conn, schema.names.version):
                return None
            return conn.execute(stmt).scalar()
    if not bind.dialect.has_table(bind, schema.names.version):
        return None
    return bind.execute(stmt).scalar()


def schema_sql() -> str:
    """The documented SQL file (PostgreSQL, default table names) that :func:`create_schema`
    is equivalent to."""
    return resources.files(__package__).joinpath("schema.sql").read_text(encoding="utf-8")
