"""The ``sql`` transport: durable work queues on a database table.

``connect("postgresql+psycopg://host/db")`` (or ``sqlite:///file.db``, ``mysql+pymysql://...``)
gives a transport whose :class:`~eventforge.workqueue.WorkQueue` items live in the queue table,
so a team whose only infrastructure is its database gets durable, competing-consumer queues.
It offers no pub/sub: ``send`` / ``subscribe`` raise :class:`UnsupportedCapabilityError`
pointing at a transport that has it (a broadcast over a table would need either polling per
subscriber or PostgreSQL ``LISTEN/NOTIFY``, which is at-most-once; neither is offered yet).
"""

from __future__ import annotations

from typing import Any, ClassVar

from eventforge.errors import TransportClosedError, UnsupportedCapabilityError
from eventforge.message import Message
from eventforge.transport import Capability, Transport
from eventforge.workqueue import RetryPolicy, WorkQueueBackend
from sqlalchemy.engine import Engine

from ._engines import engine_from_url
from .schema import Schema, create_schema
from .workqueue import SqlWorkQueueBackend

__all__ = ["SqlTransport"]

_NO_PUBSUB = (
    "the sql transport carries durable work queues only (WorkQueue(name, transport=...)); "
    "for pub/sub use a broker transport (redis, nats, tcp), and to publish from a database "
    "transaction use eventforge_sql.Outbox"
)


class SqlTransport(Transport):
    """Durable work queues in ``engine``'s database (created by :meth:`from_url` or given).

    ``lease`` is the work queues' visibility timeout; ``create=True`` creates the schema when
    missing (otherwise apply ``schema.sql`` or call :func:`~eventforge_sql.create_schema`).
    """

    name: ClassVar[str] = "sql"
    capabilities: ClassVar[frozenset[str]] = frozenset({Capability.DURABLE})

    def __init__(
        self,
        engine: Engine,
        *,
        schema: Schema | None = None,
        lease: float = 30.0,
        poll_interval: float = 0.05,
        create: bool = True,
        own_engine: bool = False,
    ) -> None:
        self.engine = engine
        self.schema = create_schema(engine, schema) if create else (schema or Schema())
        self.lease = lease
        self.poll_interval = poll_interval
        self._own_engine = own_engine
        self._backends: list[SqlWorkQueueBackend] = []
        self._closed = False

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SqlTransport:
        """A transport on a new engine for the SQLAlchemy ``url``; options as the constructor
        (``lease``, ``poll_interval``, ``create``), the rest go to ``create_engine``."""
        own = {
            k: options.pop(k)
            for k in ("lease", "poll_interval", "create", "schema")
            if k in options
        }
        for key in ("lease", "poll_interval"):
            if key in own:
                own[key] = float(own[key])
        return cls(engine_from_url(url, **options), own_engine=True, **own)

    def work_queue_backend(self, name: str, policy: RetryPolicy) -> WorkQueueBackend:
        if self._closed:
            raise TransportClosedError("sql transport is closed")
        backend = SqlWorkQueueBackend(
            self.engine,
            name,
            policy,
            schema=self.schema,
            lease=self.lease,
            poll_interval=self.poll_interval,
        )
        self._backends.append(backend)
        return backend

    def send(self, message: Message) -> None:
        raise UnsupportedCapabilityError(_NO_PUBSUB, transport=self.name, capability="pubsub")

    def receive(self, topic: str, timeout: float | None = None) -> Message | None:
        raise UnsupportedCapabilityError(_NO_PUBSUB, transport=self.name, capability="pubsub")

    def subscribe(self, topic: str, callback: Any) -> str:
        raise UnsupportedCapabilityError(_NO_PUBSUB, transport=self.name, capability="pubsub")

    def unsubscribe(self, subscription_id: str) -> bool:
        return False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for backend in self._backends:
            backend.close()
        if self._own_engine:
            self.engine.dispose()

    def __repr__(self) -> str:
        return f"SqlTransport({self.engine.url.render_as_string()!r})"
