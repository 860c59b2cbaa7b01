"""The in-process work-queue backend: items live in this process's memory.

At-least-once inside the process: a fetched item stays *in flight* until it is acked, nacked or
dead-lettered; if none of that happens within ``visibility_timeout`` seconds (the consumer thread
died or hung), the item becomes ready again and is redelivered with ``attempt + 1``. A late ack
of a redelivered item is ignored, reported (``False``) and counted (``stale_settles``). Each
delivery hands out its own copy of the message (own headers; the payload is shared), so a stale
consumer never sees a later delivery's headers. Nothing survives the process.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from typing import Any

from eventforge.errors import EventforgeError, TransportClosedError
from eventforge.message import Message
from eventforge.transport import (
    ATTEMPT_HEADER,
    NOT_BEFORE_HEADER,
    DeadLetter,
    Delivery,
    WorkQueueBackend,
    for_replay,
)

__all__ = ["MemoryWorkQueueBackend", "WorkQueueFull"]

_now = time.monotonic


class WorkQueueFull(EventforgeError):
    """``put`` found the queue at ``max_size`` pending items; nothing was stored."""

    def __init__(self, name: str, max_size: int) -> None:
        super().__init__(
            f"work queue {name!r} holds max_size={max_size} pending items; the item was not "
            "stored. Add consumers, retry later, or raise max_size"
        )
        self.name = name
        self.max_size = max_size


class _Item:
    __slots__ = ("attempts", "message")

    def __init__(self, message: Message, attempts: int = 0) -> None:
        self.message = message
        self.attempts = attempts  # deliveries so far


def _own_copy(item: _Item) -> Message:
    """The message of one delivery: a copy of the stored one with its own headers dict.

    Each delivery gets its own, so a consumer whose lease ran out never sees a later
    delivery's attempt count (or dead-letter reason) appear in the message it still holds.
    The copy is shallow: the payload object is shared by every delivery of the item (on the
    memory transport payloads are handed over by reference, never copied).
    """
    message = item.message
    headers = dict(message.headers)
    headers[ATTEMPT_HEADER] = item.attempts
    return Message(
        message.topic,
        message.payload,
        headers,
        id=message.id,
        timestamp=message.timestamp,
        reply_to=message.reply_to,
        correlation_id=message.correlation_id,
    )


class MemoryWorkQueueBackend(WorkQueueBackend):
    """Ready deque + delay heap + in-flight leases, under one condition variable."""

    durable = False
    delays = True
    lease_setting = "visibility_timeout"

    def __init__(
        self,
        name: str = "default",
        *,
        visibility_timeout: float = 300.0,
        max_size: int | None = 100_000,
        max_dead_letters: int = 10_000,
    ) -> None:
        if visibility_timeout <= 0:
            raise ValueError(f"visibility_timeout must be > 0, got {visibility_timeout}")
        self.name = name
        self.visibility_timeout = visibility_timeout
        self.max_size = max_size
        self.max_dead_letters = max_dead_letters
        self._cond = threading.Condition()
        self._ready: deque[_Item] = deque()
        self._delayed: list[tuple[float, int, _Item]] = []
        self._leases: dict[int, tuple[_Item, float]] = {}
        # (expiry, token) for every lease; entries of settled or extended leases go stale and
        # are skipped, and the heap is rebuilt when stale entries outnumber live ones.
        self._expiries: list[tuple[float, int]] = []
        self._dead: dict[int, DeadLetter] = {}
        self._seq = itertools.count(1)
        self._closed = False
        self._counts = {
            "put": 0,
            "delivered": 0,
            "acked": 0,
            "nacked": 0,
            "dead_lettered": 0,
            "expired": 0,
            "stale_settles": 0,
            "dead_letters_dropped": 0,
            "replayed": 0,
        }

    # -- producer ---------------------------------------------------------------------------

    def put(self, message: Message) -> None:
        with self._cond:
            self._check_open()
            if self.max_size is not None and self._pending() >= self.max_size:
                raise WorkQueueFull(self.name, self.max_size)
            due = message.headers.get(NOT_BEFORE_HEADER)
            wait = float(due) - time.time() if isinstance(due, (int, float)) else 0.0
            if wait > 0:
                heapq.heappush(self._delayed, (_now() + wait, next(self._seq), _Item(message)))
            else:
                self._ready.append(_Item(message))
            self._counts["put"] += 1
            self._cond.notify()

    # -- consumer ---------------------------------------------------------------------------

    def fetch(self, max_items: int = 1, timeout: float | None = None) -> list[Delivery]:
        deadline = None if timeout is None else _now() + timeout
        with self._cond:
            while True:
                self._check_open()
                now = _now()
                self._promote(now)
                if self._ready:
                    return self._deliver(max_items, now)
                wait = self._next_event(now)
                if deadline is not None:
                    remaining = deadline - now
                    if remaining <= 0:
                        return []
                    wait = remaining if wait is None else min(wait, remaining)
                self._cond.wait(wait)

    def _deliver(self, max_items: int, now: float) -> list[Delivery]:
        out: list[Delivery] = []
        while self._ready and len(out) < max_items:
            item = self._ready.popleft()
            item.attempts += 1
            token = next(self._seq)
            until = now + self.visibility_timeout
            self._leases[token] = (item, until)
            heapq.heappush(self._expiries, (until, token))
            out.append(Delivery(_own_copy(item), item.attempts, self.name, token, self))
        self._counts["delivered"] += len(out)
        return out

    def _promote(self, now: float) -> None:
        """Move due delayed items and expired leases back to ready."""
        delayed = self._delayed
        while delayed and delayed[0][0] <= now:
            self._ready.append(heapq.heappop(delayed)[2])
        expiries = self._expiries
        while expiries and expiries[0][0] <= now:
            _, token = heapq.heappop(expiries)
            lease = self._leases.get(token)
            if lease is not None and lease[1] <= now:
                del self._leases[token]
                self._ready.append(lease[0])
                self._counts["expired"] += 1
        if len(expiries) > 2 * len(self._leases) + 1024:
            self._expiries = [(until, t) for t, (_, until) in self._leases.items()]
            heapq.heapify(self._expiries)

    def _next_event(self, now: float) -> float | None:
        times = [self._delayed[0][0]] if self._delayed else []
        if self._expiries:
            times.append(self._expiries[0][0])
        return max(0.0, min(times) - now) if times else None

    def _settle(self, delivery: Delivery) -> _Item | None:
        lease = self._leases.pop(delivery.token, None)
        if lease is None:
            # Redelivered after its visibility timeout, or settled twice: already someone else's.
            self._counts["stale_settles"] += 1
            return None
        return lease[0]

    def ack(self, delivery: Delivery) -> bool:
        with self._cond:
            if self._settle(delivery) is None:
                return False
            self._counts["acked"] += 1
            self._cond.notify_all()
            return True

    def nack(self, delivery: Delivery, *, delay: float = 0.0) -> bool:
        with self._cond:
            item = self._settle(delivery)
            if item is None:
                return False
            # What the consumer wrote into its headers travels with the retry (as on the
            # durable backends, which store the nacked message again).
            item.message = delivery.message
            self._counts["nacked"] += 1
            if delay > 0:
                heapq.heappush(self._delayed, (_now() + delay, next(self._seq), item))
            else:
                self._ready.append(item)
            self._cond.notify_all()
            return True

    def touch(self, delivery: Delivery) -> None:
        with self._cond:
            lease = self._leases.get(delivery.token)
            if lease is not None:
                until = _now() + self.visibility_timeout
                self._leases[delivery.token] = (lease[0], until)
                heapq.heappush(self._expiries, (until, delivery.token))

    # -- dead letters -----------------------------------------------------------------------

    def dead_letter(self, delivery: Delivery, reason: str) -> bool:
        with self._cond:
            item = self._settle(delivery)
            if item is None:
                return False
            token = next(self._seq)
            # The delivery's own message: it carries the dead-letter reason header.
            self._dead[token] = DeadLetter(delivery.message, reason, item.attempts, token=token)
            self._counts["dead_lettered"] += 1
            while len(self._dead) > self.max_dead_letters:
                del self._dead[next(iter(self._dead))]
                self._counts["dead_letters_dropped"] += 1
            self._cond.notify_all()
            return True

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        with self._cond:
            return list(itertools.islice(self._dead.values(), limit))

    def replay(self, tokens: list[Any] | None = None) -> int:
        with self._cond:
            chosen = list(self._dead) if tokens is None else [t for t in tokens if t in self._dead]
            for token in chosen:
                letter = self._dead.pop(token)
                self._ready.append(_Item(for_replay(letter.message)))
            self._counts["replayed"] += len(chosen)
            if chosen:
                self._cond.notify_all()
            return len(chosen)

    # -- introspection and lifecycle --------------------------------------------------------

    def _pending(self) -> int:
        return len(self._ready) + len(self._delayed)

    def stats(self) -> dict[str, Any]:
        with self._cond:
            self._promote(_now())
            return {
                "pending": self._pending(),
                "ready": len(self._ready),
                "delayed": len(self._delayed),
                "in_flight": len(self._leases),
                "dead_letters": len(self._dead),
                **self._counts,
            }

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _check_open(self) -> None:
        if self._closed:
            raise TransportClosedError(f"work queue {self.name!r} is closed")
