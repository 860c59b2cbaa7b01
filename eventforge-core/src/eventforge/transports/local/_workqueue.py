"""The durable work-queue backend of ``local://``: items live in the shared SQLite store.

An item is a row of ``work``. A fetch leases it: it stays in the table with a token and an
expiry (``avail``), and only an ack, nack or dead-letter carrying that token settles it. When a
consumer dies (or hangs) its lease runs out and the next fetch, in any process, takes the item
again with ``attempt + 1``; an item whose lease ran out ``max_attempts`` times is dead-lettered
instead ("delivered N times without being settled"). Settled ids are remembered for
``dedupe_window`` seconds, so putting the same message id again stores nothing.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from typing import Any

from eventforge.errors import TransportClosedError
from eventforge.message import Message
from eventforge.transport import (
    ATTEMPT_HEADER,
    DEAD_LETTER_REASON_HEADER,
    NOT_BEFORE_HEADER,
    DeadLetter,
    Delivery,
    RetryPolicy,
    WorkQueueBackend,
    for_replay,
)
from eventforge.transports.local._hub import WORK_PREFIX, Hub
from eventforge.transports.local._store import DEAD, PENDING, SETTLED
from eventforge.wire import WireCodec

__all__ = ["LocalWorkQueueBackend"]


class LocalWorkQueueBackend(WorkQueueBackend):
    """One named work queue in a ``local://`` store (thread- and process-safe)."""

    durable = True
    delays = True

    def __init__(
        self,
        hub: Hub,
        codec: WireCodec,
        name: str,
        policy: RetryPolicy,
        *,
        visibility_timeout: float = 30.0,
        check_interval: float = 2.0,
    ) -> None:
        self.name = name
        self.policy = policy
        self.visibility_timeout = visibility_timeout
        self._hub = hub
        self._store = hub.store
        self._codec = codec
        self._check_interval = check_interval
        self._consumer = hub.new_consumer()
        self._listening = False
        self._closed = False
        self._lock = threading.Lock()
        self._tokens = itertools.count(random.getrandbits(40) << 20)
        self._counts = dict.fromkeys(
            ("put", "duplicates", "delivered", "acked", "nacked", "dead_lettered",
             "stale_settles", "replayed"), 0,
        )  # fmt: skip

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    # -- producer ---------------------------------------------------------------------------

    def put(self, message: Message) -> None:
        self.put_many([message])

    def put_many(self, messages: list[Message]) -> None:
        self._check_open()
        now = time.time()
        rows = [(self.name, m.id, self._codec.encode(m), _due(m, now)) for m in messages]
        with self._store.write() as conn:
            stored = 0
            for row in rows:
                stored += conn.execute(
                    "INSERT OR IGNORE INTO work(queue, msg_id, body, avail) VALUES (?, ?, ?, ?)",
                    row,
                ).rowcount
            bells = self._hub.routes(conn).work_bells.get(self.name, [])
        self._count("put", stored)
        self._count("duplicates", len(rows) - stored)
        self._hub.ring(bells)

    # -- consumer ---------------------------------------------------------------------------

    def fetch(self, max_items: int = 1, timeout: float | None = None) -> list[Delivery]:
        self._check_open()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            generation = self._hub.generation()
            out, next_at = self._take(max_items)
            if out:
                return out
            self._check_open()
            if not self._listening:
                self._listen()
                continue  # an item may have come before the bell was registered
            wait = self._check_interval
            if next_at is not None:
                wait = min(wait, max(0.0, next_at - time.time()) + 0.001)
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                wait = min(wait, remaining)
            self._hub.wait(generation, wait)

    def _listen(self) -> None:
        with self._store.write() as conn:
            self._hub.attach(conn, WORK_PREFIX + self.name, self._consumer)
        self._listening = True

    def _take(self, max_items: int) -> tuple[list[Delivery], float | None]:
        now = time.time()
        token = next(self._tokens)
        with self._store.write() as conn:
            # Leases that ran out for the last allowed time: dead-letter instead of redelivering.
            expired = conn.execute(
                "UPDATE work SET state = ?, token = 0, failed_at = ?, "
                "reason = 'delivered ' || attempts || ' times without being settled "
                "(max_attempts=' || ? || '): its consumers crashed or exceeded the visibility "
                "timeout (visibility_timeout)' "
                "WHERE queue = ? AND token != 0 AND avail <= ? AND state = ? AND attempts >= ?",
                (
                    DEAD,
                    now,
                    self.policy.max_attempts,
                    self.name,
                    now,
                    PENDING,
                    self.policy.max_attempts,
                ),
            ).rowcount
            rows = conn.execute(
                "UPDATE work SET token = ?, attempts = attempts + 1, avail = ? WHERE id IN "
                "(SELECT id FROM work WHERE queue = ? AND state = ? AND avail <= ? "
                "ORDER BY id LIMIT ?) RETURNING id, body, attempts",
                (token, now + self.visibility_timeout, self.name, PENDING, now, max_items),
            ).fetchall()
            next_at = None
            if not rows:
                row = conn.execute(
                    "SELECT MIN(avail) FROM work WHERE queue = ? AND state = ?",
                    (self.name, PENDING),
                ).fetchone()
                next_at = row[0]
        if expired:
            self._count("dead_lettered", expired)
        rows.sort()
        out = []
        for item_id, body, attempts in rows:
            message = self._codec.decode(body)
            message.headers[ATTEMPT_HEADER] = attempts
            out.append(Delivery(message, attempts, self.name, (item_id, token), self))
        self._count("delivered", len(out))
        return out, next_at

    def _settle(
        self, delivery: Delivery, sql: str, params: tuple[Any, ...], *, wake: bool = True
    ) -> bool:
        item_id, token = delivery.token
        with self._store.write() as conn:
            done = conn.execute(
                sql + " WHERE id = ? AND token = ? AND state = ?",
                (*params, item_id, token, PENDING),
            ).rowcount
            wake = wake and done > 0
            bells = self._hub.routes(conn).work_bells.get(self.name, []) if wake else []
        if not done:
            self._count("stale_settles")
            return False
        self._hub.ring(bells)
        return True

    def ack(self, delivery: Delivery) -> bool:
        done = self._settle(
            delivery, "UPDATE work SET state = ?, body = NULL, token = 0, avail = ?",
            (SETTLED, time.time()), wake=False,  # nothing became available
        )  # fmt: skip
        if done:
            self._count("acked")
        return done

    def nack(self, delivery: Delivery, *, delay: float = 0.0) -> bool:
        body = self._codec.encode(delivery.message)
        done = self._settle(
            delivery, "UPDATE work SET token = 0, avail = ?, body = ?",
            (time.time() + max(0.0, delay), body),
        )  # fmt: skip
        if done:
            self._count("nacked")
        return done

    def touch(self, delivery: Delivery) -> None:
        item_id, token = delivery.token
        with self._store.write() as conn:
            conn.execute(
                "UPDATE work SET avail = ? WHERE id = ? AND token = ? AND state = ?",
                (time.time() + self.visibility_timeout, item_id, token, PENDING),
            )

    # -- dead letters -----------------------------------------------------------------------

    def dead_letter(self, delivery: Delivery, reason: str) -> bool:
        body = self._codec.encode(delivery.message)
        done = self._settle(
            delivery, "UPDATE work SET state = ?, token = 0, reason = ?, failed_at = ?, body = ?",
            (DEAD, reason, time.time(), body),
        )  # fmt: skip
        if done:
            self._count("dead_lettered")
        return done

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        rows = self._store.read(
            "SELECT id, body, reason, attempts, failed_at FROM work WHERE queue = ? AND state = ? "
            "ORDER BY failed_at, id LIMIT ?",
            (self.name, DEAD, limit),
        )
        out = []
        for item_id, body, reason, attempts, failed_at in rows:
            message = self._codec.decode(body)
            message.headers.setdefault(DEAD_LETTER_REASON_HEADER, reason)
            out.append(
                DeadLetter(message, str(reason), int(attempts), float(failed_at), token=item_id)
            )
        return out

    def replay(self, tokens: list[Any] | None = None) -> int:
        now = time.time()
        with self._store.write() as conn:
            rows = conn.execute(
                "SELECT id, body FROM work WHERE queue = ? AND state = ?", (self.name, DEAD)
            ).fetchall()
            chosen = rows if tokens is None else [r for r in rows if r[0] in set(tokens)]
            for item_id, body in chosen:
                message = for_replay(self._codec.decode(body))
                conn.execute(
                    "UPDATE work SET state = ?, attempts = 0, token = 0, avail = ?, reason = NULL, "
                    "failed_at = NULL, body = ? WHERE id = ?",
                    (PENDING, now, self._codec.encode(message), item_id),
                )
            bells = self._hub.routes(conn).work_bells.get(self.name, []) if chosen else []
        self._count("replayed", len(chosen))
        self._hub.ring(bells)
        return len(chosen)

    # -- introspection and lifecycle --------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        now = time.time()
        (ready, delayed, in_flight, dead), *_ = self._store.read(
            "SELECT "
            "COALESCE(SUM(state = ?1 AND token = 0 AND avail <= ?2), 0), "
            "COALESCE(SUM(state = ?1 AND token = 0 AND avail > ?2), 0), "
            "COALESCE(SUM(state = ?1 AND token != 0), 0), "
            "COALESCE(SUM(state = ?3), 0) FROM work WHERE queue = ?4",
            (PENDING, now, DEAD, self.name),
        )
        with self._lock:
            counts = dict(self._counts)
        return {
            "pending": int(ready) + int(delayed),
            "ready": ready,
            "delayed": delayed,
            "in_flight": in_flight,
            "dead_letters": dead,
            **counts,
        }

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._listening:
            try:
                with self._store.write() as conn:
                    self._hub.detach(conn, self._consumer)
            except Exception:  # the store may be closing with the transport
                pass

    def _check_open(self) -> None:
        if self._closed:
            raise TransportClosedError(f"work queue {self.name!r} is closed")


def _due(message: Message, now: float) -> float:
    """When a new item becomes available: its ``not_before`` header, else now."""
    due = message.headers.get(NOT_BEFORE_HEADER)
    if isinstance(due, (int, float)) and not isinstance(due, bool) and due > now:
        return float(due)
    return now
