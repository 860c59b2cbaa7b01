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
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from eventforge.errors import ProtocolError, TransportClosedError
from eventforge.message import Message
from eventforge.transport import (
    DEAD_LETTER_REASON_HEADER,
    DeadLetter,
    Delivery,
    WorkQueueBackend,
)

from . import _wq_scripts as scripts
from ._connect import describe_error
from ._group_commit import GroupCommit
from ._groups import consumer_name, prune_consumers
from ._settler import Settler
from ._wq_delay import delay_ms, put_delayed

if TYPE_CHECKING:
    from eventforge.transport import RetryPolicy
    from eventforge.wire import WireCodec

    from ._connect import RedisSettings

__all__ = ["RedisWorkQueueBackend"]

log = logging.getLogger("eventforge.transports.redis")

_PROMOTE_EVERY = 0.05
"""How often an idle consumer moves due delayed items into the stream: a delay's precision."""


class _Script:
    """A Lua script called by SHA, loaded again when the server lost it (restart)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def __call__(self, client: Any, *args: Any) -> Any:
        try:
            return client.evalsha(self.sha, 0, *args)
        except Exception as exc:
            if type(exc).__name__ != "NoScriptError":
                raise
            return client.eval(self.source, 0, *args)


_SETTLE = _Script(scripts.SETTLE)
_PROMOTE = _Script(scripts.PROMOTE)
_CLAIM = _Script(scripts.CLAIM)
_ACK_MANY = _Script(scripts.ACK_MANY)
_TOUCH = _Script(scripts.TOUCH)


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
        self.stream = f"{prefix}:wq:{name}"
        self.dead_stream = f"{self.stream}:dead"
        self.group = f"{prefix}-workers"
        self.consumer = consumer_name()
        self._settings = settings
        self._codec = codec
        self._block = block
        self._claim_idle_ms = max(1, int(claim_idle * 1000))
        self._dedupe_ttl_ms = None if dedupe_ttl is None else max(1, int(dedupe_ttl * 1000))
        self._client = settings.client(
            socket_timeout=block + settings.socket_timeout, max_connections=max_connections
        )
        self._lock = threading.Lock()
        self._closed = False
        self._prefetch = max(1, int(prefetch))
        self._buffer: deque[tuple[float, Delivery]] = deque()
        self._next_claim = 0.0
        self._next_promote = 0.0
        self.counters = {
            "put": 0,
            "delivered": 0,
            "redelivered": 0,
            "malformed": 0,
            "stale_settles": 0,
            "duplicates_skipped": 0,
            "trimmed_unacked": 0,
            "stream_lost": 0,
            "acks_sent": 0,
            "prefetch_expired": 0,
        }
        try:
            self._create_group("0")
            self._reload_scripts()
        except Exception as exc:
            self._client.close()
            raise describe_error(exc, settings, f"opening work queue {name!r}") from exc
        self._puts: GroupCommit[bytes] = GroupCommit(self._xadd_batch)
        self._acks = Settler(
            self._client,
            lambda client, batch: int(self._ack_call(client, batch)),
            self._acks_done,
            name,
            reload=self._reload_scripts,
        )

    # -- producer --------------------------------------------------------------------------------

    def put(self, message: Message) -> None:
        """``XADD``; returns once Redis stored the entry.

        Puts from several threads at once share a pipeline (group commit), each still
        returning only after its own entry was stored.
        """
        self._check_open()
        data = self._codec.encode(message)
        if delay_ms(message) > 0:
            put_delayed(self, [(message, data)])
            self._count("put")
            return
        try:
            self._puts.submit(data)
        except Exception as exc:
            raise describe_error(
                exc, self._settings, f"putting into work queue {self.name!r}"
            ) from exc
        self._count("put")

    def _xadd_batch(self, batch: list[bytes]) -> list[Any]:
        try:
            if len(batch) == 1:
                return [self._client.xadd(self.stream, {"data": batch[0]})]
            with self._client.pipeline(transaction=False) as pipe:
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
        encoded = [self._codec.encode(message) for message in messages]
        delayed = [(m, d) for m, d in zip(messages, encoded, strict=True) if delay_ms(m)]
        if delayed:
            put_delayed(self, delayed)
            now = [d for m, d in zip(messages, encoded, strict=True) if not delay_ms(m)]
            self._count("put", len(delayed))
            if not now:
                return
            encoded = now
        try:
            with self._client.pipeline(transaction=False) as pipe:
                for data in encoded:
                    pipe.xadd(self.stream, {"data": data})
                pipe.execute()
        except Exception as exc:
            raise describe_error(
                exc, self._settings, f"putting {len(encoded)} items into work queue {self.name!r} "
                "(some may be stored)"
            ) from exc  # fmt: skip
        self._count("put", len(encoded))

    # -- consumer --------------------------------------------------------------------------------

    def fetch(self, max_items: int = 1, timeout: float | None = None) -> list[Delivery]:
        """Up to ``max_items`` deliveries: reclaimed ones first, then new ones."""
        self._check_open()
        buffered = self._take_buffered(max_items)
        if buffered:
            return buffered
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            now = time.monotonic()
            wait_hint = self._promote_if_due(now)
            out = self._claim_if_due(now, max_items)
            if out:
                return out
            remaining = None if deadline is None else deadline - time.monotonic()
            block = self._block if remaining is None else min(self._block, remaining)
            if wait_hint is not None:
                block = min(block, wait_hint)
            out = self._read(max_items, block)
            if out:
                return out
            if deadline is not None and time.monotonic() >= deadline:
                return []
            if self._closed:
                raise TransportClosedError(f"work queue {self.name!r} is closed")

    def ack(self, delivery: Delivery) -> bool | None:
        """Done: remove the entry; ``False`` when this delivery no longer owns it (stale).

        A delivery held less than half of ``claim_idle`` cannot have been taken over by
        another consumer yet: its acknowledgement is sent in the background, batched with
        others (``None`` is returned; ``stats`` shows the entry in flight until it reached
        Redis; a lost ack means a redelivery, not a loss). An older delivery is acked in one
        synchronous round trip, so a stale ack is reported.
        """
        entry_id, count, _, held_since = delivery.token
        if time.monotonic() - held_since < self._claim_idle_ms / 2000:
            self._acks.submit((entry_id, count))
            return None
        return self._settle("ack", entry_id, count)

    def nack(self, delivery: Delivery, *, delay: float = 0.0) -> bool:
        """Again after ``delay`` seconds, as attempt + 1 (same message id); ``False`` if stale."""
        entry_id, count, _, _ = delivery.token
        data = self._codec.encode(delivery.message)
        seen = self._seen_key(delivery.message.id) if self._dedupe_ttl_ms else ""
        return self._settle(
            "nack", entry_id, count, data, str(delivery.attempt), str(int(delay * 1000)), seen
        )

    def dead_letter(self, delivery: Delivery, reason: str) -> bool:
        """Move to ``<stream>:dead`` with the reason and the attempts made; ``False`` if stale."""
        entry_id, count, _, _ = delivery.token
        data = self._codec.encode(delivery.message)
        return self._settle(
            "dead", entry_id, count, data, str(delivery.attempt), reason, repr(time.time())
        )

    def touch(self, delivery: Delivery) -> None:
        """Reset the entry's idle time so it is not taken over while still being worked on."""
        entry_id, count, earlier, _ = delivery.token
        touched_at = time.monotonic()
        if _TOUCH(self._client, self.stream, self.group, self.consumer, entry_id, count):
            delivery.token = (entry_id, count, earlier, touched_at)
        else:
            self._count("stale_settles")

    # -- dead letters ----------------------------------------------------------------------------

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters; ``token`` is the dead-letter stream entry id."""
        entries = self._client.xrange(self.dead_stream, count=limit)
        return [self._dead_letter(entry_id, fields) for entry_id, fields in entries]

    def replay(self, tokens: list[Any] | None = None) -> int:
        """Put dead letters back as fresh items (attempt 1); return how many."""
        if tokens is None:
            entries = self._client.xrange(self.dead_stream)
        else:
            entries = []
            for token in tokens:
                entries.extend(self._client.xrange(self.dead_stream, token, token))
        replayed = 0
        for entry_id, fields in entries:
            data = fields.get(b"data", b"")
            with self._client.pipeline(transaction=True) as pipe:
                pipe.xadd(self.stream, {"data": _strip_reason(data, self._codec)})
                pipe.xdel(self.dead_stream, entry_id)
                if self._dedupe_ttl_ms:
                    try:
                        pipe.delete(self._seen_key(self._codec.decode(data).id))
                    except ProtocolError:
                        pass
                pipe.execute()
            replayed += 1
        return replayed

    # -- introspection ---------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """``pending`` (stored, not taken; includes delayed retries), ``in_flight``, ``dead_letters``."""
        with self._client.pipeline(transaction=False) as pipe:
            pipe.xlen(self.stream)
            pipe.xpending(self.stream, self.group)
            pipe.zcard(f"{self.stream}:delayed")
            pipe.xlen(self.dead_stream)
            try:
                length, pending, delayed, dead = pipe.execute()
            except Exception as exc:
                if "NOGROUP" not in str(exc):
                    raise
                length, pending, delayed, dead = 0, {"pending": 0}, 0, 0
        in_flight = int(pending["pending"]) if isinstance(pending, dict) else 0
        with self._lock:
            counters = dict(self.counters)
            buffered = len(self._buffer)
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
        self._acks.close(self._settings.socket_timeout)
        with self._lock:
            held = [d for _, d in self._buffer]
            self._buffer.clear()
        for delivery in held:  # give prefetched items back at once, with their attempt count
            entry_id, count, earlier, _ = delivery.token
            data = self._codec.encode(delivery.message)
            seen = self._seen_key(delivery.message.id) if self._dedupe_ttl_ms else ""
            try:
                self._settle("nack", entry_id, count, data, str(earlier), "0", seen)
            except Exception as exc:
                log.warning(
                    "work queue %r: could not release a prefetched item: %s", self.name, exc
                )
        self._client.close()

    # -- internals -------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise TransportClosedError(f"work queue {self.name!r} is closed")

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counters[key] += n

    def _seen_key(self, message_id: str) -> str:
        return f"{self.stream}:seen:{message_id}"

    def _create_group(self, start: str) -> None:
        try:
            self._client.xgroup_create(self.stream, self.group, id=start, mkstream=True)
        except Exception as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _promote_if_due(self, now: float) -> float | None:
        if now < self._next_promote:
            return max(0.0, self._next_promote - now)
        moved, wait_ms = _PROMOTE(self._client, self.stream, 100)
        wait = _PROMOTE_EVERY if int(wait_ms) < 0 else min(_PROMOTE_EVERY, int(wait_ms) / 1000)
        if int(moved) >= 100:
            wait = 0.0
        self._next_promote = now + wait
        return wait

    def _claim_if_due(self, now: float, max_items: int) -> list[Delivery]:
        if now < self._next_claim:
            return []
        self._next_claim = now + self._claim_idle_ms / 2000
        try:
            claimed, deleted = _CLAIM(
                self._client, self.stream, self.group, self.consumer, self._claim_idle_ms, max_items
            )
        except Exception as exc:
            if "NOGROUP" in str(exc):
                self._stream_lost()
                return []
            raise
        prune_consumers(self._client, self.stream, self.group, self.consumer, self._claim_idle_ms)
        if deleted:
            self._count("trimmed_unacked", int(deleted))
            log.error(
                "work queue %r: %d pending entries were deleted from the stream before being "
                "acknowledged (trimmed or XDEL by someone else); they are lost",
                self.name,
                deleted,
            )
        if claimed and len(claimed) == max_items:
            self._next_claim = now  # more may be waiting
        out: list[Delivery] = []
        for entry_id, flat, count in claimed:
            fields = dict(zip(flat[::2], flat[1::2], strict=False))
            delivery = self._delivery(entry_id, fields, int(count), now)
            if delivery is not None:
                out.append(delivery)
        self._count("redelivered", len(out))
        return out

    def _read(self, max_items: int, block: float) -> list[Delivery]:
        block_ms = int(block * 1000)
        acks = self._acks.take()
        accounted = False
        try:
            read_args = (self.group, self.consumer, {self.stream: ">"})
            read_options = {
                "count": max(max_items, self._prefetch),
                "block": block_ms if block_ms > 0 else None,
            }
            if acks:  # acknowledgements ride along with the read: no extra round trip
                with self._client.pipeline(transaction=False) as pipe:
                    self._ack_call(pipe, acks)
                    pipe.xreadgroup(*read_args, **read_options)
                    results = pipe.execute(raise_on_error=False)
            else:
                results = [self._client.xreadgroup(*read_args, **read_options)]
            if acks:
                accounted = True
                self._settled_along(acks, results[0])
            reply = results[-1]
            if isinstance(reply, Exception):
                raise reply
        except Exception as exc:
            if acks and not accounted:
                self._acks.failed(acks, exc)
            if "NOGROUP" in str(exc):
                self._stream_lost()
                return []
            if self._closed:
                raise TransportClosedError(f"work queue {self.name!r} is closed") from exc
            raise describe_error(exc, self._settings, f"reading work queue {self.name!r}") from exc
        out: list[Delivery] = []
        read_at = time.monotonic()
        for _stream, entries in reply or ():
            for entry_id, fields in entries:
                delivery = self._delivery(entry_id, fields, 1, read_at)
                if delivery is not None:
                    out.append(delivery)
        self._count("delivered", len(out))
        if len(out) > max_items:
            now = time.monotonic()
            with self._lock:
                self._buffer.extend((now, d) for d in out[max_items:])
            out = out[:max_items]
        return out

    def _take_buffered(self, max_items: int) -> list[Delivery]:
        """Prefetched deliveries, minus those held so long that another consumer may take them."""
        if not self._buffer:
            return []
        horizon = time.monotonic() - self._claim_idle_ms / 2000
        out: list[Delivery] = []
        expired = 0
        with self._lock:
            while self._buffer and len(out) < max_items:
                fetched_at, delivery = self._buffer.popleft()
                if fetched_at < horizon:
                    expired += 1  # still pending in Redis: XAUTOCLAIM hands it out again
                    continue
                out.append(delivery)
        if expired:
            self._count("prefetch_expired", expired)
        return out

    def _ack_call(self, client: Any, batch: list[tuple[Any, ...]]) -> Any:
        args: list[Any] = [self.stream, self.group]
        for entry_id, count in batch:
            args.append(entry_id)
            args.append(count)
        return client.evalsha(_ACK_MANY.sha, 0, *args)

    def _settled_along(self, acks: list[tuple[Any, ...]], result: Any) -> None:
        """Account for acks sent with a read; resend them if the server had lost the script."""
        if isinstance(result, Exception):
            if type(result).__name__ == "NoScriptError":
                self._reload_scripts()
                for ack in acks:
                    self._acks.submit(ack)
            else:
                self._acks.failed(acks, result)
            return
        self._acks_done(int(result), len(acks) - int(result))

    def _acks_done(self, done: int, stale: int) -> None:
        with self._lock:
            self.counters["acks_sent"] += done
            self.counters["stale_settles"] += stale

    def _reload_scripts(self) -> None:
        self._client.script_load(scripts.ACK_MANY)

    def _stream_lost(self) -> None:
        self._count("stream_lost")
        log.error(
            "work queue %r: the stream or its consumer group vanished (Redis restarted without "
            "persistence, or the key was deleted); items stored before are lost. Recreating it. "
            "Run Redis with appendonly yes to keep queued work",
            self.name,
        )
        self._create_group("0")

    def _delivery(
        self, entry_id: Any, fields: dict[Any, Any], count: int, held_since: float
    ) -> Delivery | None:
        """The delivery of one entry; ``held_since`` is when this consumer took it over.

        Its ``token`` is ``(entry id, delivery count, attempts of earlier rounds, held_since)``.
        """
        token_id = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        raw = fields.get(b"data")
        earlier = int(fields.get(b"attempts", b"0") or 0)
        attempt = earlier + count
        try:
            if raw is None:
                raise ProtocolError("stream entry has no 'data' field")
            message = self._codec.decode(raw)
        except ProtocolError as exc:
            self._count("malformed")
            log.warning(
                "work queue %r: malformed entry %s dead-lettered: %s", self.name, token_id, exc
            )
            _SETTLE(
                self._client, "dead", self.stream, self.group, token_id, count,
                raw if raw is not None else b"", str(attempt), f"malformed: {exc}", repr(time.time()),
            )  # fmt: skip
            return None
        if self._dedupe_ttl_ms is not None:
            fresh = self._client.set(
                self._seen_key(message.id), b"1", nx=True, px=self._dedupe_ttl_ms
            )
            if not fresh:
                self._count("duplicates_skipped")
                log.warning(
                    "work queue %r: message %s was already taken by a consumer; skipped as a "
                    "duplicate (dedupe_ttl)",
                    self.name,
                    message.id,
                )
                _SETTLE(self._client, "ack", self.stream, self.group, token_id, count)
                return None
        token = (token_id, count, earlier, held_since)
        return Delivery(message, attempt, self.name, token=token, backend=self)

    def _settle(self, mode: str, entry_id: str, count: int, *args: str | bytes) -> bool:
        """Run one settle script; return whether it took effect (``False``: stale, counted)."""
        try:
            done = _SETTLE(self._client, mode, self.stream, self.group, entry_id, count, *args)
        except Exception as exc:
            raise describe_error(
                exc, self._settings, f"{mode} on work queue {self.name!r}"
            ) from exc
        if not done:
            self._count("stale_settles")
            log.info(
                "work queue %r: %s of entry %s ignored: it was settled already or taken over by "
                "another consumer",
                self.name,
                mode,
                entry_id,
            )
            return False
        return True

    def _dead_letter(self, entry_id: Any, fields: dict[Any, Any]) -> DeadLetter:
        token = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        raw = fields.get(b"data", b"")
        reason = fields.get(b"reason", b"").decode(errors="replace")
        try:
            message = self._codec.decode(raw)
        except ProtocolError:
            message = Message(
                f"{self.name}.malformed",
                raw.decode(errors="replace"),
                {DEAD_LETTER_REASON_HEADER: reason},
            )
        return DeadLetter(
            message,
            reason,
            int(fields.get(b"attempts", b"0") or 0),
            float(fields.get(b"failed_at", b"0") or 0),
            token,
        )


def _strip_reason(data: bytes, codec: WireCodec) -> bytes:
    """The envelope without the dead-letter reason header (malformed data is kept as is)."""
    try:
        message = codec.decode(data)
    except ProtocolError:
        return data
    if DEAD_LETTER_REASON_HEADER not in message.headers:
        return data
    message.headers.pop(DEAD_LETTER_REASON_HEADER, None)
    return codec.encode(message)
