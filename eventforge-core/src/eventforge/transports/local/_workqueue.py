"""The durable work-queue backend of ``local://``: items live in the shared SQLite store.

An item is a row of ``work``. A fetch leases it: it stays in the table with a token and an
expiry (``avail``), and only an ack, nack or dead-letter carrying that token settles it. When a
consumer dies (or hangs) its lease runs out and the next fetch, in any process, takes the item
again with ``attempt + 1``; an item whose lease ran out ``max_attempts`` times is dead-lettered
instead ("delivered N times without being settled"). Settled ids are remembered for
``dedupe_window`` seconds, so putting the same message id again stores nothing.

An ack with more than half its lease left is buffered and committed with the consumer's next
fetch (one transaction takes the next item and settles the last), or within ``ACK_DELAY``
seconds, or by ``stats``/``close``; a consumer that dies in between gets the item delivered
again after its lease, as any at-least-once delivery may be.
"""

from __future__ import annotations

import itertools
import logging
import random
import sqlite3
import threading
import time
from fcntl import LOCK_EX, LOCK_UN, flock
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
from eventforge.transports.local._store import DEAD, PENDING, SETTLED, describe
from eventforge.wire import WireCodec

__all__ = ["ACK_DELAY", "LocalWorkQueueBackend"]

log = logging.getLogger("eventforge.transports.local")

ACK_DELAY = 0.05
_PUT = "INSERT OR IGNORE INTO work(queue, msg_id, body, avail) VALUES (?, ?, ?, ?)"
_ACK = "UPDATE work SET state = ?, body = NULL, token = 0, avail = ? WHERE id = ? AND token = ? "
_DUE = "SELECT EXISTS(SELECT 1 FROM work WHERE queue = ? AND state = ? AND avail <= ?)"


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
        self._acks: list[tuple[int, int]] = []  # (item id, token) acked, not yet committed
        self._acks_lock = threading.Lock()
        self._flusher: threading.Thread | None = None
        self._closing = threading.Event()
        self._next_expiry = 0.0
        self._turn = itertools.count()
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
        if len(rows) == 1:
            stored, bells = self._put_one(rows[0])
        else:
            with self._store.write() as conn:
                stored = sum(conn.execute(_PUT, row).rowcount for row in rows)
                bells = self._hub.routes(conn).work_bells.get(self.name, [])
        self._count("put", stored)
        self._count("duplicates", len(rows) - stored)
        self._wake(bells)

    def _wake(self, bells: list[str]) -> None:
        """Wake one idle consumer of this queue (they compete for its items)."""
        if len(bells) == 1:
            self._hub.ring(bells)
        elif bells:
            self._hub.ring_one(bells, next(self._turn))

    def _put_one(self, row: tuple[Any, ...]) -> tuple[int, list[str]]:
        """One item: one autocommit statement under the write lock (no BEGIN / COMMIT)."""
        conn, lock = self._store.handles()
        flock(lock, LOCK_EX)
        try:
            bells = self._hub.routes(conn).work_bells.get(self.name, [])
            return conn.execute(_PUT, row).rowcount, bells
        except sqlite3.Error as exc:
            raise describe(exc, self._store.directory) from exc
        finally:
            flock(lock, LOCK_UN)

    # -- consumer ---------------------------------------------------------------------------

    def fetch(self, max_items: int = 1, timeout: float | None = None) -> list[Delivery]:
        self._check_open()
        deadline = None if timeout is None else time.monotonic() + timeout
        armed = False
        while True:
            generation = self._hub.generation()
            # A read first: the lease (a write) is taken only when something is due.
            if self._acks or self._ready():
                out = self._take(max_items)
                if out:
                    return out
            self._check_open()
            if not self._listening:
                self._listen()
                continue  # an item may have come before the bell was registered
            if not armed:
                # Arm, then look once more before sleeping: an item put after the arming rings.
                self._hub.bell.arm()
                armed = True
                continue
            armed = False
            wait = self._check_interval
            next_at = self._next_due()
            if next_at is not None:
                wait = min(wait, max(0.0, next_at - time.time()) + 0.001)
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                wait = min(wait, remaining)
            self._hub.wait(generation, wait)

    def _ready(self) -> bool:
        """Whether an item is due now (a read: no lock)."""
        rows = self._store.read(_DUE, (self.name, PENDING, time.time()))
        return bool(rows[0][0])

    def _next_due(self) -> float | None:
        rows = self._store.read(
            "SELECT MIN(avail) FROM work WHERE queue = ? AND state = ?", (self.name, PENDING)
        )
        return rows[0][0] if rows else None

    def _listen(self) -> None:
        with self._store.write() as conn:
            self._hub.attach(conn, WORK_PREFIX + self.name, self._consumer)
        self._listening = True

    def _take(self, max_items: int) -> list[Delivery]:
        now = time.time()
        token = next(self._tokens)
        acks = self._take_acks()
        try:
            with self._store.write() as conn:
                settled = self._settle_acks(conn, acks, now)
                rows = conn.execute(
                    "UPDATE work SET token = ?, attempts = attempts + 1, avail = ? WHERE id IN "
                    "(SELECT id FROM work WHERE queue = ? AND state = ? AND avail <= ? "
                    "AND (token = 0 OR attempts < ?) ORDER BY id LIMIT ?) "
                    "RETURNING id, body, attempts",
                    (token, now + self.visibility_timeout, self.name, PENDING, now,
                     self.policy.max_attempts, max_items),
                ).fetchall()  # fmt: skip
                expired = 0
                if not rows or now >= self._next_expiry:
                    # Leases that ran out for the last allowed time: dead-lettered (looked for
                    # when nothing was taken or a few times per lease; never taken again).
                    self._next_expiry = now + min(1.0, self.visibility_timeout / 4)
                    expired = conn.execute(
                        "UPDATE work SET state = ?, token = 0, failed_at = ?, "
                        "reason = 'delivered ' || attempts || ' times without being settled "
                        "(max_attempts=' || ? || '): its consumers crashed or exceeded the "
                        "visibility timeout (visibility_timeout)' WHERE queue = ? AND "
                        "token != 0 AND avail <= ? AND state = ? AND attempts >= ?",
                        (DEAD, now, self.policy.max_attempts, self.name, now, PENDING,
                         self.policy.max_attempts),
                    ).rowcount  # fmt: skip
        except BaseException:
            self._give_back(acks)  # not committed: they go with the next attempt
            raise
        self._count("stale_settles", len(acks) - settled)
        if expired:
            self._count("dead_lettered", expired)
        rows.sort()
        due = time.monotonic() + self.visibility_timeout
        out = []
        for item_id, body, attempts in rows:
            message = self._codec.decode(body)
            message.headers[ATTEMPT_HEADER] = attempts
            out.append(Delivery(message, attempts, self.name, (item_id, token, due), self))
        self._count("delivered", len(out))
        return out

    # -- buffered acks ------------------------------------------------------------------------

    def _take_acks(self) -> list[tuple[int, int]]:
        with self._acks_lock:
            acks, self._acks = self._acks, []
        return acks

    def _give_back(self, acks: list[tuple[int, int]]) -> None:
        if acks:
            with self._acks_lock:
                self._acks[:0] = acks

    def _settle_acks(
        self, conn: sqlite3.Connection, acks: list[tuple[int, int]], now: float
    ) -> int:
        """Commit buffered acks (inside a write); return how many took effect."""
        done = 0
        for item_id, token in acks:
            done += conn.execute(
                _ACK + "AND state = ?", (SETTLED, now, item_id, token, PENDING)
            ).rowcount
        return done

    def flush(self) -> None:
        """Commit the buffered acks now (``stats`` and ``close`` do it too)."""
        acks = self._take_acks()
        if not acks:
            return
        try:
            with self._store.write() as conn:
                settled = self._settle_acks(conn, acks, time.time())
        except Exception:
            self._give_back(acks)
            log.warning(
                "work queue %r: committing %d buffered acks failed; retried with the next "
                "fetch (if this process ends first, those items are delivered again after "
                "their lease)",
                self.name,
                len(acks),
                exc_info=True,
            )
            return
        self._count("stale_settles", len(acks) - settled)

    def _flush_soon(self) -> None:
        self._closing.wait(ACK_DELAY)
        self.flush()

    def _settle(
        self, delivery: Delivery, sql: str, params: tuple[Any, ...], *, wake: bool = True
    ) -> bool:
        item_id, token, _ = delivery.token
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
        self._wake(bells)
        return True

    def ack(self, delivery: Delivery) -> bool | None:
        item_id, token, due = delivery.token
        if time.monotonic() < due - self.visibility_timeout / 2:
            # Half its lease or more left: buffered, committed with the next fetch.
            with self._acks_lock:
                self._acks.append((item_id, token))
                if self._flusher is None or not self._flusher.is_alive():
                    self._flusher = threading.Thread(
                        target=self._flush_soon, name=f"eventforge-local-acks-{self.name}",
                        daemon=True,
                    )  # fmt: skip
                    self._flusher.start()
            self._count("acked")
            return None
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
        item_id, token, _ = delivery.token
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
        self._wake(bells)
        return len(chosen)

    # -- introspection and lifecycle --------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        self.flush()
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
        self._closing.set()
        try:
            self.flush()
        except Exception:  # the store may be closing with the transport
            pass
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
