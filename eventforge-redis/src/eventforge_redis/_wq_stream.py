"""The Redis side of one work queue: its keys, its command client, its counters, its settles.

Shared by the parts of :class:`~eventforge_redis.workqueue.RedisWorkQueueBackend`: the backend
itself (puts and settles), the fetcher (reads, takeovers, delayed items) and the dead-letter
functions. Keys, for the queue ``name`` and prefix ``eventforge``: the stream
``eventforge:wq:<name>`` read by the consumer group ``eventforge-workers``, ``...:dead`` for
dead letters, ``...:delayed`` (+ ``:items``) for items waiting out a delay, ``...:seen:<id>``
for the dedupe marks.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from eventforge.wire import WireCodec

from . import _wq_scripts as scripts
from ._connect import RedisSettings, describe_error
from ._groups import consumer_name

__all__ = ["SETTLE", "StreamQueue"]

log = logging.getLogger("eventforge.transports.redis")

SETTLE = scripts.Script(scripts.SETTLE)
_ACK_MANY = scripts.Script(scripts.ACK_MANY)

_COUNTERS = (
    "put",
    "delivered",
    "redelivered",
    "malformed",
    "stale_settles",
    "duplicates_skipped",
    "trimmed_unacked",
    "stream_lost",
    "acks_sent",
    "prefetch_expired",
)


class StreamQueue:
    """Names, client and counters of one queue; thread-safe."""

    def __init__(
        self,
        name: str,
        *,
        prefix: str,
        settings: RedisSettings,
        codec: WireCodec,
        client: Any,
        claim_idle: float,
        dedupe_ttl: float | None,
    ) -> None:
        self.name = name
        self.stream = f"{prefix}:wq:{name}"
        self.dead_stream = f"{self.stream}:dead"
        self.group = f"{prefix}-workers"
        self.consumer = consumer_name()
        self.settings = settings
        self.codec = codec
        self.client = client
        self.claim_idle_ms = max(1, int(claim_idle * 1000))
        self.dedupe_ttl_ms = None if dedupe_ttl is None else max(1, int(dedupe_ttl * 1000))
        self._lock = threading.Lock()
        self._counters = dict.fromkeys(_COUNTERS, 0)

    # -- counters --------------------------------------------------------------------------------

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counters[key] += n

    def counters(self) -> dict[str, int]:
        """A snapshot of the counters."""
        with self._lock:
            return dict(self._counters)

    def acks_done(self, done: int, stale: int) -> None:
        """Account for a batch of acks: ``done`` took effect, ``stale`` were settled already."""
        with self._lock:
            self._counters["acks_sent"] += done
            self._counters["stale_settles"] += stale

    # -- keys and scripts ------------------------------------------------------------------------

    def seen_key(self, message_id: str) -> str:
        """The dedupe mark of ``message_id``."""
        return f"{self.stream}:seen:{message_id}"

    def create_group(self, start: str) -> None:
        try:
            self.client.xgroup_create(self.stream, self.group, id=start, mkstream=True)
        except Exception as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def reload_scripts(self) -> None:
        """Load the batch-ack script (it is called by SHA from pipelines, where a missing
        script cannot be loaded on the fly)."""
        self.client.script_load(scripts.ACK_MANY)

    def ack_many(self, client: Any, batch: list[tuple[Any, ...]]) -> Any:
        """Ack ``(entry id, delivery count)`` pairs still owned, on ``client`` or a pipeline."""
        args: list[Any] = [self.stream, self.group]
        for entry_id, count in batch:
            args.append(entry_id)
            args.append(count)
        return client.evalsha(_ACK_MANY.sha, 0, *args)

    def settle(self, mode: str, entry_id: str, count: int, *args: str | bytes) -> bool:
        """Run one settle script; return whether it took effect (``False``: stale, counted)."""
        try:
            done = SETTLE(self.client, mode, self.stream, self.group, entry_id, count, *args)
        except Exception as exc:
            raise describe_error(exc, self.settings, f"{mode} on work queue {self.name!r}") from exc
        if not done:
            self.count("stale_settles")
            log.info(
                "work queue %r: %s of entry %s ignored: it was settled already or taken over by "
                "another consumer",
                self.name,
                mode,
                entry_id,
            )
            return False
        return True

    def stream_lost(self) -> None:
        """The stream or its group vanished: report the loss and create them again."""
        self.count("stream_lost")
        log.error(
            "work queue %r: the stream or its consumer group vanished (Redis restarted without "
            "persistence, or the key was deleted); items stored before are lost. Recreating it. "
            "Run Redis with appendonly yes to keep queued work",
            self.name,
        )
        self.create_group("0")
