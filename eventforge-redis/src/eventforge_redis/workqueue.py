"""A durable work queue on a Redis stream: the backend behind ``WorkQueue(name, transport=redis)``.

Layout, for the queue ``name`` (prefix ``eventforge``): the stream ``eventforge:wq:<name>`` with
one consumer group, ``...:dead`` for dead letters, ``...:delayed`` (+ ``:items``) for nacked
items waiting out their backoff.

* ``put`` is one ``XADD`` and returns after Redis answered: a returned put is stored (and, with
  ``appendonly yes``, survives a server crash up to the fsync policy).
* ``fetch`` reads with ``XREADGROUP ... BLOCK``, the block always shorter than the read's socket
  timeout, so a blocked read never fails spuriously and a paused server is noticed. Entries of
  consumers that died are taken over with ``XAUTOCLAIM`` after ``claim_idle`` seconds; the
  attempt number is the stream's delivery count plus the attempts of earlier rounds.
* ``ack`` / ``nack`` / ``dead_letter`` run one Lua script each: check that this delivery still
  owns the entry (a stale worker's late settle is ignored, counted in ``stale_settles`` and
  reported by returning ``False``), then ``XACK`` + ``XDEL`` and, for a nack, re-add (now or
  after a delay) and, for a dead letter, append to the dead-letter stream. Nothing is trimmed
  by length: acked entries are deleted one by one, so an unacknowledged entry is never dropped.
* Acks of deliveries held less than half of ``claim_idle`` (the usual case) are batched and sent
  in the background, since no consumer with that ``claim_idle`` can have taken the entry over
  yet. An older delivery (or one whose ``touch`` is that old) is acked synchronously, so that a
  stale ack returns ``False`` and the queue counts each item acked once. Not covered: consumers
  configured with a shorter ``claim_idle``, or a batched ack held up past ``claim_idle`` (Redis
  paused); such a stale ack is still ignored by Redis and counted in ``stale_settles``.
* ``dedupe_ttl``: a consumer marks each message id it takes (``SET NX`` with that TTL); a
  later delivery of a marked id (a duplicate ``put``, or a redelivery after its consumer died)
  is acknowledged without running the handler and counted in ``duplicates_skipped``. A nack
  clears the mark, so retries still run. This gives at-most-once *effects* for redeliveries:
  an item whose consumer died before doing its work is skipped too (counted).

The parts: :mod:`._wq_stream` (keys, client, counters, settles), :mod:`._wq_fetch` (reading,
takeovers, prefetch), :mod:`._settler` (batched acks), :mod:`._group_commit` (shared puts),
:mod:`._wq_delay` (delayed puts), :mod:`._wq_dead` (dead letters and replay),
:mod:`._wq_scripts` (the Lua scripts).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from eventforge.errors import TransportClosedError, TransportError
from eventforge.message import Message
from eventforge.transport import DeadLetter, Delivery, RetryPolicy, WorkQueueBackend
from eventforge.wire import WireCodec

from . import _wq_dead
from . import _wq_scripts as scripts
from ._connect import RedisSettings, describe_error
from ._group_commit import GroupCommit
from ._settler import Settler
from ._wq_delay import delay_ms, put_delayed
from ._wq_fetch import Fetcher
from ._wq_stream import StreamQueue

__all__ = ["RedisWorkQueueBackend"]

log = logging.getLogger("eventforge.transports.redis")

_TOUCH = scripts.Script(scripts.TOUCH)


class RedisWorkQueueBackend(WorkQueueBackend):
    """One named work queue on a Redis stream; thread-safe, shared by any number of processes."""

    durable = True
    delays = True
    lease_setting = "claim_idle"

    def __init__(
        self,
        name: str,
        policy: RetryPolicy,
        *,
        settings: RedisSettings,
        codec: WireCodec,
        prefix: str = "eventforge",
        block: float = 1.0,
        claim_idle: float = 30.0,
        dedupe_ttl: float | None = None,
        prefetch: int = 16,
        max_connections: int = 64,
    ) -> None:
        if not name or any(c.isspace() for c in name):
            raise ValueError(f"work queue name must be non-empty without spaces, got {name!r}")
        self.name = name
        self.policy = policy
        client = settings.client(
            socket_timeout=block + settings.socket_timeout, max_connections=max_connections
        )
        self._queue = q = StreamQueue(
            name,
            prefix=prefix,
            settings=settings,
            codec=codec,
            client=client,
            claim_idle=claim_idle,
            dedupe_ttl=dedupe_ttl,
        )
        self.stream = q.stream
        self.dead_stream = q.dead_stream
        self.group = q.group
        self.consumer = q.consumer
        self._closed = False
        try:
            q.create_group("0")
            q.reload_scripts()
        except Exception as exc:
            client.close()
            raise describe_error(exc, settings, f"opening work queue {name!r}") from exc
        self._puts: GroupCommit[bytes] = GroupCommit(self._xadd_batch)
        self._acks = Settler(
            client,
            lambda client, batch: int(q.ack_many(client, batch)),
            q.acks_done,
            name,
            reload=q.reload_scripts,
        )
        self._fetcher = Fetcher(q, self, self._acks, block=block, prefetch=prefetch)

    # -- producer --------------------------------------------------------------------------------

    def put(self, message: Message) -> None:
        """``XADD``; returns once Redis stored the entry.

        Puts from several threads at once share a pipeline (group commit), each still
        returning only after its own entry was stored.
        """
        self._check_open()
        data = self._queue.codec.encode(message)
        if delay_ms(message) > 0:
            put_delayed(self._queue, [(message, data)])
            self._queue.count("put")
            return
        try:
            self._puts.submit(data)
        except Exception as exc:
            raise describe_error(
                exc, self._queue.settings, f"putting into work queue {self.name!r}"
            ) from exc
        self._queue.count("put")

    def _xadd_batch(self, batch: list[bytes]) -> list[Any]:
        client = self._queue.client
        try:
            if len(batch) == 1:
                return [client.xadd(self.stream, {"data": batch[0]})]
            with client.pipeline(transaction=False) as pipe:
                for data in batch:
                    pipe.xadd(self.stream, {"data": data})
                return list(pipe.execute(raise_on_error=False))
        except Exception as exc:
            return [exc] * len(batch)

    def put_many(self, messages: list[Message]) -> None:
        """Store several items in one round trip (pipelined ``XADD``); returns once all are stored.

        Encoding happens first, so a bad message raises before anything is stored. If the
        link fails midway some items may be stored and others not: the error says so.
        """
        self._check_open()
        q = self._queue
        encoded = [q.codec.encode(message) for message in messages]
        delayed = [(m, d) for m, d in zip(messages, encoded, strict=True) if delay_ms(m)]
        if delayed:
            put_delayed(q, delayed)
            now = [d for m, d in zip(messages, encoded, strict=True) if not delay_ms(m)]
            q.count("put", len(delayed))
            if not now:
                return
            encoded = now
        try:
            with q.client.pipeline(transaction=False) as pipe:
                for data in encoded:
                    pipe.xadd(self.stream, {"data": data})
                pipe.execute()
        except Exception as exc:
            raise describe_error(
                exc, q.settings, f"putting {len(encoded)} items into work queue {self.name!r} "
                "(some may be stored)"
            ) from exc  # fmt: skip
        q.count("put", len(encoded))

    # -- consumer --------------------------------------------------------------------------------

    def fetch(self, max_items: int = 1, timeout: float | None = None) -> list[Delivery]:
        """Up to ``max_items`` deliveries: prefetched ones, reclaimed ones, then new ones."""
        self._check_open()
        return self._fetcher.fetch(max_items, timeout)

    def ack(self, delivery: Delivery) -> bool | None:
        """Done: remove the entry; ``False`` when this delivery no longer owns it (stale).

        A delivery held less than half of ``claim_idle`` cannot have been taken over by
        another consumer yet: its acknowledgement is sent in the background, batched with
        others (``None`` is returned; ``stats`` shows the entry in flight until it reached
        Redis; a lost ack means a redelivery, not a loss). An older delivery is acked in one
        synchronous round trip, so a stale ack is reported.
        """
        entry_id, count, _, held_since = delivery.token
        if time.monotonic() - held_since < self._queue.claim_idle_ms / 2000:
            self._acks.submit((entry_id, count))
            return None
        return self._queue.settle("ack", entry_id, count)

    def nack(self, delivery: Delivery, *, delay: float = 0.0) -> bool:
        """Again after ``delay`` seconds, as attempt + 1 (same message id); ``False`` if stale."""
        q = self._queue
        entry_id, count, _, _ = delivery.token
        data = q.codec.encode(delivery.message)
        seen = q.seen_key(delivery.message.id) if q.dedupe_ttl_ms else ""
        return q.settle(
            "nack", entry_id, count, data, str(delivery.attempt), str(int(delay * 1000)), seen
        )

    def dead_letter(self, delivery: Delivery, reason: str) -> bool:
        """Move to ``<stream>:dead`` with the reason and the attempts made; ``False`` if stale."""
        entry_id, count, _, _ = delivery.token
        data = self._queue.codec.encode(delivery.message)
        return self._queue.settle(
            "dead", entry_id, count, data, str(delivery.attempt), reason, repr(time.time())
        )

    def touch(self, delivery: Delivery) -> None:
        """Reset the entry's idle time so it is not taken over while still being worked on."""
        q = self._queue
        entry_id, count, earlier, _ = delivery.token
        touched_at = time.monotonic()
        if _TOUCH(q.client, self.stream, self.group, self.consumer, entry_id, count):
            delivery.token = (entry_id, count, earlier, touched_at)
        else:
            q.count("stale_settles")

    # -- dead letters ----------------------------------------------------------------------------

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters; ``token`` is the dead-letter stream entry id."""
        return _wq_dead.dead_letters(self._queue, limit)

    def replay(self, tokens: list[Any] | None = None) -> int:
        """Put dead letters back as fresh items (attempt 1); return how many."""
        return _wq_dead.replay(self._queue, tokens)

    # -- introspection ---------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """``pending`` (stored, not taken; includes delayed retries), ``in_flight``, ``dead_letters``."""
        with self._queue.client.pipeline(transaction=False) as pipe:
            pipe.xlen(self.stream)
            pipe.xpending(self.stream, self.group)
            pipe.zcard(f"{self.stream}:delayed")
            pipe.xlen(self.dead_stream)
            try:
                length, pending, delayed, dead = pipe.execute()
            except Exception as exc:
                if "NOGROUP" not in str(exc):
                    raise
                raise TransportError(
                    f"work queue {self.name!r}: its stream {self.stream!r} or consumer group "
                    f"{self.group!r} is gone from Redis (deleted, or Redis restarted without "
                    "persistence); items stored before are lost. A consumer recreates it on its "
                    "next fetch; run Redis with appendonly yes to keep queued work"
                ) from exc
        in_flight = int(pending["pending"]) if isinstance(pending, dict) else 0
        counters = self._queue.counters()
        buffered = self._fetcher.buffered()
        # Prefetched entries of this process are pending work, not in flight.
        in_flight = max(0, in_flight - buffered)
        return {
            **counters,
            "pending": max(0, int(length) - in_flight) + int(delayed),
            "in_flight": in_flight,
            "prefetched": buffered,
            "delayed": int(delayed),
            "dead_letters": int(dead),
        }

    def close(self) -> None:
        """Release the connections; unsettled deliveries stay pending for another consumer."""
        if self._closed:
            return
        self._closed = True
        self._fetcher.closed = True
        q = self._queue
        self._acks.close(q.settings.socket_timeout)
        for delivery in self._fetcher.take_all():
            # Give prefetched items back at once, with their attempt count.
            entry_id, count, earlier, _ = delivery.token
            data = q.codec.encode(delivery.message)
            seen = q.seen_key(delivery.message.id) if q.dedupe_ttl_ms else ""
            try:
                q.settle("nack", entry_id, count, data, str(earlier), "0", seen)
            except Exception as exc:
                log.warning(
                    "work queue %r: could not release a prefetched item: %s", self.name, exc
                )
        q.client.close()

    def _check_open(self) -> None:
        if self._closed:
            raise TransportClosedError(f"work queue {self.name!r} is closed")
