"""eventforge on the database: transactional inbox and outbox, a durable work queue, and task
results."""

from __future__ import annotations

from ._engines import configure_sqlite, engine_from_url
from ._ingest import Ingestion
from ._results import SqlResultStore
from .inbox import Inbox, InboxEvent, InboxWorker
from .outbox import Outbox, Relay, RelayThread
from .schema import SCHEMA_VERSION, Schema, TableNames, create_schema, schema_sql, schema_version
from .streams import InvalidStreamEntry, event_from_stream_entry
from .workqueue import SqlWorkQueueBackend

__version__ = "0.1.0"

__all__ = [
    "SCHEMA_VERSION",
    "Inbox",
    "InboxEvent",
    "InboxWorker",
    "Ingestion",
    "InvalidStreamEntry",
    "Outbox",
    "Relay",
    "RelayThread",
    "Schema",
    "SqlResultStore",
    "SqlWorkQueueBackend",
    "TableNames",
    "__version__",
    "configure_sqlite",
    "create_schema",
    "engine_from_url",
    "event_from_stream_entry",
    "schema_sql",
    "schema_version",
]
