"""RedisTransport: pub/sub, competing consumers and durable work queues on one Redis.

* Plain subscriptions: Redis pub/sub (``PUBLISH`` / ``SUBSCRIBE`` / ``PSUBSCRIBE``),
  at-most-once, with health checks and automatic resubscription.
* Groups (``subscribe(topic, cb, group=name)``): Redis Streams consumer groups, each message
  handled once across all members, at-least-once.
* Work queues (``work_queue_backend``): Redis Streams, durable, at-least-once, with retries,
  dead letters and optional deduplication.

Every message travels as the same JSON envelope as on TCP (:mod:`eventforge.wire`), so
``redis-cli SUBSCRIBE`` and ``XRANGE`` show it as is.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, ClassVar

from eventforge.errors import ConfigurationError, TransportClosedError
from eventforge.message import Message
from eventforge.topics import validate_pattern, validate_topic
from eventforge.transport import (
    Backoff,
    Callback,
    Counter,
    ResultStore,
    RetryPolicy,
    SubscriptionStatus,
    Transport,
)
from eventforge.wire import DEFAULT_MAX_SIZE, WireCodec
from eventforge.wire.serializers import Serializer

from ._connect import (
    RedisAuthError,
    RedisPermissionError,
    RedisSettings,
    describe_error,
    read_options,
)
from ._groups import GroupConsumer
from ._options import CONNECTION_OPTIONS, OPTIONS
from ._publisher import Counted, Publisher
from ._results import RedisResultStore
from ._subscriber import Subscriber
from .plugin import CAPABILITIES
from .workqueue import RedisWorkQueueBackend

__all__ = [
    "CAPABILITIES",
    "RedisAuthError",
    "RedisPermissionError",
    "RedisSettings",
    "RedisTransport",
]

log = logging.getLogger("eventforge.transports.redis")


class _ReportedCount(Counted):
    """A counted publish nobody waits for: the writer thread calls ``nobody()`` on a 0."""

    __slots__ = ("nobody",)

    def __init__(self, nobody: Callable[[], None]) -> None:
        super().__init__()
        self.nobody = nobody

    def resolve(self, receivers: int, groups: int) -> None:
        super().resolve(receivers, groups)
        if receivers + groups == 0:
            try:
                self.nobody()
            except Exception:
                log.exception("a nobody callback of a counted publish raised; ignored")


class RedisTransport(Transport):
    """Broker-backed transport over Redis (``redis://`` and ``rediss://`` for TLS).

    ``RedisTransport(host="localhost", port=6379)`` or ``RedisTransport.from_url(url)``.
    Connecting happens in the constructor, so wrong credentials, a missing ACL permission or an
    unreachable server raise there, once, with a clear message.

    ``send`` is asynchronous behind the API: the envelope is encoded and queued, and a writer
    thread pipelines everything queued into one round trip. ``flush()`` waits until all of it
    reached Redis. A lost link drops what was queued (counted in ``stats()["publish_dropped"]``)
    and ``send`` raises until the link is back.

    Settings that matter: ``health_check_interval`` (seconds of silence before the pub/sub
    link is PINGed), ``socket_timeout`` (how long an answer may take; also the PING timeout),
    ``block`` (how long a stream read blocks; the read's socket timeout is ``block +
    socket_timeout`` so it never fails spuriously), ``claim_idle`` (how long a group or work
    queue entry may sit with a dead consumer before another takes it over), ``key_prefix``
    (namespace of every key this transport writes).
    """

    name: ClassVar[str] = "redis"
    capabilities: ClassVar[frozenset[str]] = CAPABILITIES

    def __init__(
        self,
        host: str = "localhost",
        port: int = 6379,
        *,
        settings: RedisSettings | None = None,
        ssl: bool = False,
        ssl_options: dict[str, Any] | None = None,
        serializer: str | Serializer | None = None,
        trusted: bool = False,
        max_size: int = DEFAULT_MAX_SIZE,
        **options: Any,
    ) -> None:
        if settings is None:
            settings, values = read_options(
                None,
                {"host": host, "port": port, "ssl": ssl, "ssl_options": ssl_options, **options},
            )
        else:
            given = sorted(CONNECTION_OPTIONS & options.keys())
            if given:
                raise ConfigurationError(
                    f"give the connection options {given} inside settings=, not beside it",
                    key=f"transport.{given[0]}",
                )
            values = {
                k: v for k, v in OPTIONS.read(None, options).items() if k not in CONNECTION_OPTIONS
            }
        self.settings = settings
        self.key_prefix: str = values["key_prefix"]
        self.block: float = values["block"]
        self.claim_idle: float = values["claim_idle"]
        self.health_check_interval: float = values["health_check_interval"]
        self.backoff = Backoff(
            initial=values["reconnect_initial"],
            cap=max(values["reconnect_max"], values["reconnect_initial"]),
        )
        self._codec = WireCodec(serializer, trusted=trusted, max_size=max_size)
        self._closed = False
        self._lock = threading.Lock()
        self._callback_errors = Counter()
        self._client = settings.client()
        try:
            self._client.ping()
        except Exception as exc:
            self._client.close()
            raise describe_error(exc, settings, "connecting") from exc
        try:
            self._publisher = Publisher(
                settings,
                prefix=self.key_prefix,
                group_maxlen=values["group_maxlen"],
                max_pending=values["max_pending"],
                idle_check=self.health_check_interval,
                backoff=self.backoff,
            )
        except Exception:
            self._client.close()
            raise
        self._subscriber = Subscriber(
            settings,
            self._codec,
            health_check_interval=self.health_check_interval,
            ping_timeout=settings.socket_timeout,
            max_backlog=values["max_delivery_backlog"],
            backoff=self.backoff,
            on_callback_error=self._callback_failed,
        )
        self._groups: dict[tuple[str, str], GroupConsumer] = {}
        self._group_subs: dict[str, GroupConsumer] = {}
        self._group_ids = 0
        self._backends: list[RedisWorkQueueBackend] = []

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisTransport:
        """``redis://[user[:password]@]host[:port][/db]``, or ``rediss://`` for TLS.

        The query may hold any option of the transport (see ``docs/transports/redis.md``:
        connection options such as ``socket_timeout`` or ``ssl_check_hostname``, and the
        transport's own such as ``health_check_interval``, ``block``, ``claim_idle``,
        ``key_prefix``), spelled as the keyword takes it; keyword ``options`` win over the URL.
        """
        codec = {k: options.pop(k) for k in ("serializer", "trusted", "max_size") if k in options}
        settings, values = read_options(url, options)
        return cls(settings=settings, **codec, **values)

    @property
    def url(self) -> str:
        """The server's URL, password masked."""
        return self.settings.url

    # -- the contract ------------------------------------------------------------------------------

    def send(self, message: Message) -> None:
        """Publish to every subscriber of the topic and to one member of every matching group."""
        if self._closed:
            raise TransportClosedError("RedisTransport is closed; create a new one")
        topic = message.topic
        validate_topic(topic)
        self._publisher.submit(
            topic.encode(), self._codec.encode(message), self.settings.socket_timeout
        )

    def send_counted(self, message: Message) -> int:
        """Publish like :meth:`send` and return how many receivers Redis handed it to.

        The count is the route script's reply: the receivers ``PUBLISH`` reported plus the
        group streams the message was appended to. ``0`` means nobody received it: no
        pub/sub connection subscribed to a matching channel or glob and no group's pattern
        matched; that is what ``MessageQueue(unroutable=...)`` acts on. A positive count is not
        a number of subscriptions: a pub/sub receiver is a *connection* (one per transport
        carries all of its plain subscriptions, any other Redis client counts too, and a
        connection with several matching channels or globs counts once per match), and a
        group counts once however many members it has. A wildcard subscription's Redis glob
        can be broader than its pattern (Redis's ``*`` also matches dots), so a message it
        then filters out (``stats()["filtered"]`` on the receiving side) still counts as
        received.

        The message is queued behind every earlier :meth:`send` of this transport (order is
        kept) and the call waits for its reply: one round trip, instead of :meth:`send`'s
        pipelining. Raises like :meth:`send` and :meth:`flush`: an envelope over
        ``max_size`` before anything is sent, :class:`~eventforge.errors.TransportError` when
        the link is down or fails before the reply, ``RedisPermissionError`` when an ACL
        denies the publish.
        """
        if self._closed:
            raise TransportClosedError("RedisTransport is closed; create a new one")
        topic = message.topic
        validate_topic(topic)
        counted = self._publisher.submit_counted(
            topic.encode(), self._codec.encode(message), self.settings.socket_timeout
        )
        return counted.receivers + counted.groups

    def send_reporting_nobody(self, message: Message, nobody: Callable[[], None]) -> None:
        """Publish like :meth:`send_counted`, without waiting: ``nobody()`` if the count is 0.

        Raises what :meth:`send` raises. The route script's count comes back on the writer
        thread, which calls ``nobody()`` (it must return at once) when no connection and no
        group received the message; it is not called when the publish failed. Requests use
        it to fail fast with ``NoRespondersError`` while their reply is awaited.
        """
        if self._closed:
            raise TransportClosedError("RedisTransport is closed; create a new one")
        topic = message.topic
        validate_topic(topic)
        self._publisher.submit(
            topic.encode(),
            self._codec.encode(message),
            self.settings.socket_timeout,
            _ReportedCount(nobody),
        )

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything sent so far reached Redis; ``False`` if ``timeout`` passed first.

        Raises the error of a publish that Redis refused (for example ACL ``NOPERM``).
        """
        self._check_open()
        return self._publisher.flush(timeout)

    def subscribe(self, topic: str, callback: Callback, *, group: str | None = None) -> str:
        """Subscribe; with ``group``, each message goes to one member of the group (any process).

        Returns once Redis confirmed the subscription, so anything published afterwards is
        delivered to it.
        """
        if group is None:
            return self._subscribe_plain(topic, callback)
        self._check_open()
        validate_pattern(topic)
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {type(callback).__name__}")
        if not isinstance(group, str) or not group or any(c.isspace() for c in group):
            raise ConfigurationError(
                f"group must be a non-empty string without spaces, got {group!r}", key="group"
            )
        with self._lock:
            consumer = self._groups.get((topic, group))
            if consumer is None:
                consumer = GroupConsumer(
                    self.settings,
                    self._client,
                    self._codec,
                    prefix=self.key_prefix,
                    pattern=topic,
                    group=group,
                    block=self.block,
                    claim_idle=self.claim_idle,
                    backoff=self.backoff,
                    on_callback_error=self._callback_failed,
                )
                self._groups[(topic, group)] = consumer
            self._group_ids += 1
            sub_id = f"redis-group-{self._group_ids}"
            consumer.add(sub_id, callback)
            self._group_subs[sub_id] = consumer
        return sub_id

    def unsubscribe(self, subscription_id: str) -> bool:
        """Stop a subscription; a group member's last unsubscribe leaves the group."""
        with self._lock:
            consumer = self._group_subs.pop(subscription_id, None)
            if consumer is None:
                return self._subscriber.remove(subscription_id)
            consumer.remove(subscription_id)
            if len(consumer):
                return True
            self._groups.pop((consumer.pattern, consumer.group), None)
        consumer.stop()
        return True

    def subscription_status(self, subscription_id: str) -> SubscriptionStatus:
        """A group member: whether Redis still holds its consumer group and routes to its
        stream (asked every call), with the stream's backlog. A pub/sub subscription: whether
        it is registered (the link's own health check watches the connection)."""
        with self._lock:
            consumer = self._group_subs.get(subscription_id)
        if consumer is not None:
            try:
                return consumer.status()
            except Exception as exc:
                raise describe_error(exc, self.settings, "reading a group's state") from exc
        if subscription_id in self._subscriber:
            return SubscriptionStatus(True)
        return SubscriptionStatus(
            False, f"{subscription_id} is not subscribed on this Redis transport"
        )

    def close(self) -> None:
        """Send what is queued, leave every group, stop every thread, close the connections."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            consumers = list(self._groups.values())
            self._groups.clear()
            self._group_subs.clear()
            backends = list(self._backends)
            self._backends.clear()
        self._publisher.close(self.settings.socket_timeout)
        self._subscriber.close()
        for consumer in consumers:
            consumer.stop()
        for backend in backends:
            backend.close()
        self._client.close()

    # -- optional -----------------------------------------------------------------------------------

    def claim(self, key: str, ttl: float) -> bool:
        """Claim ``key`` across every client of this Redis: ``SET eventforge:claim:<key> NX PX``."""
        if self._closed:
            raise TransportClosedError("RedisTransport is closed; create a new one")
        if ttl <= 0:
            raise ValueError(f"a claim's ttl must be > 0 seconds, got {ttl}")
        done = self._client.set(
            f"eventforge:claim:{key}", b"1", nx=True, px=max(1, int(ttl * 1000))
        )
        return bool(done)

    def result_store(self) -> ResultStore:
        """Task results in this Redis: ``<key_prefix>:result:<task id>``, expired by Redis."""
        if self._closed:
            raise TransportClosedError("RedisTransport is closed; create a new one")
        return RedisResultStore(self._client, self.key_prefix)

    def work_queue_backend(
        self, name: str, policy: RetryPolicy, **options: Any
    ) -> RedisWorkQueueBackend:
        """A durable work queue on a Redis stream (see :class:`RedisWorkQueueBackend`)."""
        self._check_open()
        options.setdefault("block", self.block)
        options.setdefault("claim_idle", self.claim_idle)
        backend = RedisWorkQueueBackend(
            name,
            policy,
            settings=self.settings,
            codec=self._codec,
            prefix=self.key_prefix,
            **options,
        )
        with self._lock:
            self._backends.append(backend)
        return backend

    def stats(self) -> dict[str, Any]:
        """Counters of the publisher, the pub/sub reader and the group consumers."""
        result: dict[str, Any] = {
            **self._publisher.stats(),
            **self._subscriber.stats(),
            "callback_errors": self._callback_errors.value,
            "groups": len(self._groups),
        }
        result["sent"] = result["published"]
        totals: dict[str, int] = {}
        for consumer in list(self._groups.values()):
            for key, counter in consumer.counters.items():
                totals[key] = totals.get(key, 0) + counter.value
        result.update(totals)
        result["dropped"] = (
            result["publish_dropped"]
            + result["malformed"]
            + result["delivery_dropped"]
            + totals.get("group_malformed", 0)
        )
        return result

    @property
    def client(self) -> Any:
        """The redis-py client this transport uses for commands (for inspection and tests)."""
        return self._client

    # -- internals ----------------------------------------------------------------------------------

    def _subscribe_plain(self, topic: str, callback: Callback) -> str:
        self._check_open()
        validate_pattern(topic)
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {type(callback).__name__}")
        timeout = self.settings.socket_connect_timeout + self.settings.socket_timeout
        return self._subscriber.add(topic, callback, timeout)

    def _check_open(self) -> None:
        if self._closed:
            raise TransportClosedError("RedisTransport is closed; create a new one")

    def _callback_failed(self, message: Message, exc: BaseException) -> None:
        self._callback_errors.bump()
        log.error("subscription callback raised for topic %r: %r", message.topic, exc, exc_info=exc)

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._subscriber)} subscriptions"
        return f"RedisTransport({self.settings.address}, {state})"
