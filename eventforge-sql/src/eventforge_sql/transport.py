"""The ``sql`` transport: durable work queues on a database table.

``connect("postgresql+psycopg://host/db")`` (or ``sqlite:///file.db``, ``mysql+pymysql://...``)
gives a transport whose :class:`~eventforge.workqueue.WorkQueue` items live in the queue table,
so a team whose only infrastructure is its database gets durable, competing-consumer queues.
On PostgreSQL it also carries pub/sub over ``LISTEN/NOTIFY`` (:mod:`eventforge_sql._notify`):
**at-most-once** (a notification sent while a subscriber's listening connection is down is
lost), in order per sending transport, wildcards matched by the subscriber, payloads up to 8000
bytes. On SQLite and MariaDB ``send`` / ``subscribe`` raise :class:`UnsupportedCapabilityError`
pointing at a transport that has pub/sub. On every database it claims keys across processes
(:meth:`SqlTransport.claim`, a unique row in the claims table), so periodic schedules fire
once per tick across workers that share the database.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

from eventforge.errors import TransportClosedError, UnsupportedCapabilityError
from eventforge.message import Message
from eventforge.transport import (
    Capability,
    ResultStore,
    RetryPolicy,
    Transport,
    WorkQueueBackend,
)
from sqlalchemy.engine import Engine, make_url

from ._engines import engine_from_url
from ._key_claims import KeyClaims
from ._notify import NotifyBus
from ._results import SqlResultStore
from .schema import Schema, create_schema
from .workqueue import SqlWorkQueueBackend

__all__ = ["SqlTransport"]

_NO_PUBSUB = (
    "the sql transport carries pub/sub on PostgreSQL only (LISTEN/NOTIFY); on this database it "
    "carries durable work queues only (WorkQueue(name, transport=...)); for pub/sub use "
    "PostgreSQL or a broker transport (redis, nats, tcp), and to publish from a database "
    "transaction use eventforge_sql.Outbox"
)
_URL_OPTIONS = ("lease", "poll_interval", "create", "channel")
_PUBSUB = frozenset(
    {Capability.WILDCARDS, Capability.HEADERS, Capability.ORDERED, Capability.CROSS_PROCESS}
)


class SqlTransport(Transport):
    """Durable work queues in ``engine``'s database (created by :meth:`from_url` or given).

    ``lease`` is the work queues' visibility timeout; ``create=True`` creates the schema when
    missing (otherwise apply ``schema.sql`` or call :func:`~eventforge_sql.create_schema`).
    """

    name: ClassVar[str] = "sql"
    capabilities: ClassVar[frozenset[str]] = frozenset(
        {Capability.DURABLE, Capability.RESULTS, Capability.CLAIMS}
    )

    def __init__(
        self,
        engine: Engine,
        *,
        schema: Schema | None = None,
        lease: float = 30.0,
        poll_interval: float = 0.05,
        create: bool = True,
        own_engine: bool = False,
        channel: str = "eventforge",
    ) -> None:
        self.engine = engine
        self.schema = create_schema(engine, schema) if create else (schema or Schema())
        self.lease = lease
        self.poll_interval = poll_interval
        self._own_engine = own_engine
        self._backends: list[SqlWorkQueueBackend] = []
        self._results: SqlResultStore | None = None
        self._closed = False
        self._bus: NotifyBus | None = None
        self._bus_lock = threading.Lock()
        self.channel = channel
        self._claims = KeyClaims(engine, self.schema.claims)
        if engine.dialect.name == "postgresql":
            # PostgreSQL adds pub/sub to what the class declares for every database.
            self.__dict__["capabilities"] = type(self).capabilities | _PUBSUB

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SqlTransport:
        """A transport on a new engine for the SQLAlchemy ``url``; options as the constructor
        (``lease``, ``poll_interval``, ``create``, ``channel``), the rest go to
        ``create_engine``. ``lease``, ``poll_interval``, ``create`` and ``channel`` may also be
        in the URL's query (``?lease=30``), which keyword options override; the rest of the
        query is the driver's."""
        parsed = make_url(url)
        in_query = {k: parsed.query[k] for k in _URL_OPTIONS if k in parsed.query}
        parsed = parsed.difference_update_query(list(in_query))
        for key, value in in_query.items():
            options.setdefault(key, value if isinstance(value, str) else value[-1])
        own = {
            k: options.pop(k)
            for k in ("lease", "poll_interval", "create", "schema", "channel")
            if k in options
        }
        for key in ("lease", "poll_interval"):
            if key in own:
                own[key] = float(own[key])
        if isinstance(own.get("create"), str):
            own["create"] = own["create"].lower() not in ("0", "false", "no", "off")
        return cls(engine_from_url(parsed, **options), own_engine=True, **own)

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

    def result_store(self) -> ResultStore:
        """Task results in the results table (``eventforge_results``) of this database."""
        if self._closed:
            raise TransportClosedError("sql transport is closed")
        if self._results is None:
            self._results = SqlResultStore(
                self.engine, schema=self.schema, poll_interval=self.poll_interval
            )
        return self._results

    def claim(self, key: str, ttl: float) -> bool:
        """Claim ``key`` for ``ttl`` seconds across every process using this database: the
        first insert of its row in the claims table wins (see :mod:`eventforge_sql._key_claims`)."""
        if self._closed:
            raise TransportClosedError("sql transport is closed")
        return self._claims.claim(key, ttl)

    def _pubsub(self) -> NotifyBus:
        if self._closed:
            raise TransportClosedError("sql transport is closed")
        if self.engine.dialect.name != "postgresql":
            raise UnsupportedCapabilityError(_NO_PUBSUB, transport=self.name, capability="pubsub")
        with self._bus_lock:  # the listener starts with the first pub/sub call
            if self._bus is None:
                self._bus = NotifyBus(self.engine, self.channel)
            return self._bus

    def send(self, message: Message) -> None:
        """NOTIFY the message to every subscriber of the channel (PostgreSQL; at-most-once)."""
        self._pubsub().send(message)

    def receive(self, topic: str, timeout: float | None = None) -> Message | None:
        return self._pubsub().receive(topic, timeout)

    def subscribe(self, topic: str, callback: Any, *, group: str | None = None) -> str:
        self.refuse_group(group)
        return self._pubsub().subscribe(topic, callback)

    def unsubscribe(self, subscription_id: str) -> bool:
        return self._bus.unsubscribe(subscription_id) if self._bus is not None else False

    def stats(self) -> dict[str, Any]:
        return dict(self._bus.counters) if self._bus is not None else {}

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for backend in self._backends:
            backend.close()
        with self._bus_lock:
            if self._bus is not None:
                self._bus.close()
        if self._own_engine:
            self.engine.dispose()

    def __repr__(self) -> str:
        return f"SqlTransport({self.engine.url.render_as_string()!r})"
