"""eventforge on the database: transactional inbox and outbox, and a durable work queue."""

from __future__ import annotations

from ._engines import configure_sqlite, engine_from_url
from .schema import SCHEMA_VERSION, Schema, TableNames, create_schema, schema_sql, schema_version
from .workqueue import SqlWorkQueueBackend

__all__ = [
    "SCHEMA_VERSION",
    "Schema",
    "SqlWorkQueueBackend",
    "TableNames",
    "configure_sqlite",
    "create_schema",
    "engine_from_url",
    "schema_sql",
    "schema_version",
]
