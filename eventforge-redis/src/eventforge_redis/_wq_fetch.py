"""The consuming side of a Redis work queue: read, take over, promote delayed items, prefetch.

``fetch`` first hands out prefetched entries, then, each round: moves due delayed items into
the stream (at most every 50 ms), takes over entries whose consumer died (``XAUTOCLAIM``
through a script, every half ``claim_idle``), then reads new entries with ``XREADGROUP ...
BLOCK``, the block always shorter than the read's socket timeout, so a blocked read never
fails spuriously and a paused server is noticed. Queued acknowledgements ride along with the
read in one pipeline. The attempt number of an entry is its delivery count plus the attempts
of earlier rounds (kept in the entry by a nack).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

from eventforge.errors import ProtocolError, TransportClosedError
from eventforge.transport import Delivery, WorkQueueBackend, malformed_item

from . import _wq_scripts as scripts
from ._connect import describe_error
from ._groups import prune_consumers
from ._settler import Settler
from ._wq_stream import SETTLE, StreamQueue

__all__ = ["Fetcher"]

log = logging.getLogger("eventforge.transports.redis")

_PROMOTE_EVERY = 0.05
"""How often an idle consumer moves due delayed items into the stream: a delay's precision."""

_PROMOTE = scripts.Script(scripts.PROMOTE)
_CLAIM = scripts.Script(scripts.CLAIM)


class Fetcher:
    """Hands out deliveries of one queue; ``backend`` is what each delivery settles through."""

    def __init__(
        self,
        queue: StreamQueue,
        backend: WorkQueueBackend,
        acks: Settler,
        *,
        block: float,
        prefetch: int,
    ) -> None:
        self._queue = queue
        self._backend = backend
        self._acks = acks
        self._block = block
        self._prefetch = max(1, int(prefetch))
        self._lock = threading.Lock()
        self._buffer: deque[tuple[float, Delivery]] = deque()
        self._next_claim = 0.0
        self._next_promote = 0.0
        self.closed = False

    def fetch(self, max_items: int, timeout: float | None) -> list[Delivery]:
        """Up to ``max_items`` deliveries: prefetched ones, then reclaimed ones, then new ones."""
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
            if self.closed:
                raise TransportClosedError(f"work queue {self._queue.name!r} is closed")

    def buffered(self) -> int:
        """Prefetched deliveries not handed out yet."""
        with self._lock:
            return len(self._buffer)

    def take_all(self) -> list[Delivery]:
        """Every prefetched delivery (on close: they are given back)."""
        with self._lock:
            held = [d for _, d in self._buffer]
            self._buffer.clear()
        return held

    # -- rounds ------------------------------------------------------------------------------------

    def _promote_if_due(self, now: float) -> float | None:
        if now < self._next_promote:
            return max(0.0, self._next_promote - now)
        moved, wait_ms = _PROMOTE(self._queue.client, self._queue.stream, 100)
        wait = _PROMOTE_EVERY if int(wait_ms) < 0 else min(_PROMOTE_EVERY, int(wait_ms) / 1000)
        if int(moved) >= 100:
            wait = 0.0
        self._next_promote = now + wait
        return wait

    def _claim_if_due(self, now: float, max_items: int) -> list[Delivery]:
        if now < self._next_claim:
            return []
        q = self._queue
        self._next_claim = now + q.claim_idle_ms / 2000
        try:
            claimed, deleted = _CLAIM(
                q.client, q.stream, q.group, q.consumer, q.claim_idle_ms, max_items
            )
        except Exception as exc:
            if "NOGROUP" in str(exc):
                q.stream_lost()
                return []
            raise
        prune_consumers(q.client, q.stream, q.group, q.consumer, q.claim_idle_ms)
        if deleted:
            q.count("trimmed_unacked", int(deleted))
            log.error(
                "work queue %r: %d pending entries were deleted from the stream before being "
                "acknowledged (trimmed or XDEL by someone else); they are lost",
                q.name,
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
        q.count("redelivered", len(out))
        return out

    def _read(self, max_items: int, block: float) -> list[Delivery]:
        q = self._queue
        block_ms = int(block * 1000)
        acks = self._acks.take()
        accounted = False
        try:
            read_args = (q.group, q.consumer, {q.stream: ">"})
            read_options = {
                "count": max(max_items, self._prefetch),
                "block": block_ms if block_ms > 0 else None,
            }
            if acks:  # acknowledgements ride along with the read: no extra round trip
                with q.client.pipeline(transaction=False) as pipe:
                    q.ack_many(pipe, acks)
                    pipe.xreadgroup(*read_args, **read_options)
                    results = pipe.execute(raise_on_error=False)
            else:
                results = [q.client.xreadgroup(*read_args, **read_options)]
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
                q.stream_lost()
                return []
            if self.closed:
                raise TransportClosedError(f"work queue {q.name!r} is closed") from exc
            raise describe_error(exc, q.settings, f"reading work queue {q.name!r}") from exc
        out: list[Delivery] = []
        read_at = time.monotonic()
        for _stream, entries in reply or ():
            for entry_id, fields in entries:
                delivery = self._delivery(entry_id, fields, 1, read_at)
                if delivery is not None:
                    out.append(delivery)
        q.count("delivered", len(out))
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
        horizon = time.monotonic() - self._queue.claim_idle_ms / 2000
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
            self._queue.count("prefetch_expired", expired)
        return out

    def _settled_along(self, acks: list[tuple[Any, ...]], result: Any) -> None:
        """Account for acks sent with a read; resend them if the server had lost the script."""
        if isinstance(result, Exception):
            if type(result).__name__ == "NoScriptError":
                self._queue.reload_scripts()
                for ack in acks:
                    self._acks.submit(ack)
            else:
                self._acks.failed(acks, result)
            return
        self._queue.acks_done(int(result), len(acks) - int(result))

    def _delivery(
        self, entry_id: Any, fields: dict[Any, Any], count: int, held_since: float
    ) -> Delivery | None:
        """The delivery of one entry; ``held_since`` is when this consumer took it over.

        Its ``token`` is ``(entry id, delivery count, attempts of earlier rounds, held_since)``.
        """
        q = self._queue
        token_id = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        raw = fields.get(b"data")
        earlier = int(fields.get(b"attempts", b"0") or 0)
        attempt = earlier + count
        try:
            if raw is None:
                raise ProtocolError("stream entry has no 'data' field")
            message = q.codec.decode(raw)
        except ProtocolError as exc:
            q.count("malformed")
            log.warning(
                "work queue %r: malformed entry %s dead-lettered: %s", q.name, token_id, exc
            )
            SETTLE(
                q.client, "dead", q.stream, q.group, token_id, count,
                raw if raw is not None else b"", str(attempt), malformed_item(q.name, raw or b"", exc)[1],
                repr(time.time()),
            )  # fmt: skip
            return None
        if q.dedupe_ttl_ms is not None:
            fresh = q.client.set(q.seen_key(message.id), b"1", nx=True, px=q.dedupe_ttl_ms)
            if not fresh:
                q.count("duplicates_skipped")
                log.warning(
                    "work queue %r: message %s was already taken by a consumer; skipped as a "
                    "duplicate (dedupe_ttl)",
                    q.name,
                    message.id,
                )
                SETTLE(q.client, "ack", q.stream, q.group, token_id, count)
                return None
        token = (token_id, count, earlier, held_since)
        return Delivery(message, attempt, q.name, token=token, backend=self._backend)
