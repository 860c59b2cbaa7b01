"""Publishing to ``local://``: one transaction stores a message and its deliveries."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from fcntl import LOCK_EX, LOCK_UN, flock

from eventforge.errors import EventforgeError
from eventforge.message import Message
from eventforge.topics import validate_topic
from eventforge.transport import Counter
from eventforge.transports.local._hub import Hub, Route
from eventforge.transports.local._panel import PUT_B, PUT_N, SKIPS, TAKEN_B, TAKEN_N, over_bound
from eventforge.transports.local._store import GARBAGE, INSERT_MESSAGE, Store, describe
from eventforge.wire import WireCodec

__all__ = ["BacklogFull", "DropLog", "Publisher", "shown"]

log = logging.getLogger("eventforge.transports.local")

DROP_LOG_PERIOD = 10.0


class BacklogFull(EventforgeError):
    """A subscription with ``overflow="refuse"`` holds its maximum; nothing was published.

    ``subscription`` is its name (named and group subscriptions) or the id ``subscribe``
    returned (unnamed ones).
    """

    def __init__(
        self, subscription: str, backlog: int, size: int, *, described: str | None = None
    ) -> None:
        super().__init__(
            f"{described or f'subscription {subscription!r}'} holds {backlog} messages "
            f"({size} bytes), its bound, and refuses more; the message was not published to "
            "anyone. Start or speed up its consumer, or raise its max_messages / max_bytes"
        )
        self.subscription = subscription


class DropLog:
    """Logs the drops of each subscription: the first at once, then at most one line per
    period with the number dropped since the line before, so a flood does not flood the log."""

    def __init__(self, period: float = DROP_LOG_PERIOD) -> None:
        self.period = period
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._since: dict[str, int] = {}

    def note(self, label: str, bounds: str, which: str, count: int = 1) -> None:
        now = time.monotonic()
        with self._lock:
            since = self._since.get(label, 0) + count
            last = self._last.get(label)
            if last is not None and now - last < self.period:
                self._since[label] = since
                return
            self._last[label] = now
            self._since[label] = 0
        log.warning(
            "%s is at its bound (%s); dropped %d %s message(s)%s",
            label,
            bounds,
            since,
            which,
            "" if last is None else f" in the last {now - last:.0f}s",
        )


class Publisher:
    """Stores messages for the subscriptions that match them and rings their consumers.

    The message is stored once, with one inbox row per named or group subscription, in one
    transaction: a publisher killed half-way leaves all of it or none. An unnamed subscription
    reads the message from the shared log; its owner's panel counts it into its backlog. A
    subscription at its backlog bound applies its overflow policy; every drop is counted
    (``dropped`` in the store and in :attr:`dropped`) and logged.
    """

    def __init__(self, store: Store, hub: Hub, codec: WireCodec, drops: DropLog) -> None:
        self._store = store
        self._hub = hub
        self._codec = codec
        self._drops = drops
        self.sent = Counter()
        self.unroutable = Counter()
        self.dropped = Counter()
        self._topics: set[str] = set()  # topics known to be valid

    def publish(self, message: Message) -> int:
        """Store ``message``; return how many subscriptions stored it."""
        topic = message.topic
        if topic not in self._topics:
            validate_topic(topic)
            if len(self._topics) < 4096:
                self._topics.add(topic)
        body = self._codec.encode(message)
        conn, lock = self._store.handles()
        flock(lock, LOCK_EX)
        try:
            targets = self._hub.routes(conn).index.match(topic)
            if not targets:
                took: Sequence[Route] = ()
            elif self._fast(targets, len(body)):
                took = self._append(conn, topic, body, targets)
            else:
                took = self._transact(conn, topic, body, targets)
        finally:
            flock(lock, LOCK_UN)
        self.sent.bump()
        if not targets:
            self.unroutable.bump()
        elif took:
            # An unnamed drop_oldest subscription over its bound is rung even if its worker is
            # not waiting for a ring (its handler is busy): the other worker trims it.
            force = False
            for route in took:
                if route.log and route.overflow == "drop_oldest":
                    limits = route.max_messages, route.max_bytes
                    force = force or over_bound(route.counters, route.base, *limits)
            bells: list[str] = []
            for route in took:
                if route.log or len(route.bells) < 2:
                    bells.extend(route.bells)
                else:  # listeners competing for one backlog: one idle one is enough
                    self._hub.ring_one(route.bells, next(route.turn))
            if bells:
                self._hub.ring(bells if len(bells) < 2 else list(dict.fromkeys(bells)), force=force)
        return len(took)

    def _fast(self, targets: Sequence[Route], size: int) -> bool:
        """Whether only unnamed subscriptions take the message, all within their bounds
        (then one statement stores it: no backlog rows, nothing to drop or refuse)."""
        counters = self._hub.counters
        for route in targets:
            if not route.log:
                return False
            words = route.counters if route.counters is not None else counters(route)
            if words is None or route.overflow == "drop_oldest":
                continue
            base = route.base
            if not _fits(
                route,
                words[base + PUT_N] - words[base + TAKEN_N] + 1,
                words[base + PUT_B] - words[base + TAKEN_B] + size,
            ):
                return False
        return True

    def _append(
        self, conn: sqlite3.Connection, topic: str, body: bytes, targets: Sequence[Route]
    ) -> Sequence[Route]:
        """Store a message that only unnamed subscriptions take: one autocommit statement.

        Their backlogs are counted first (a publisher that dies before the commit leaves them
        one too high, never too low) and uncounted if the statement fails.
        """
        counted = [route for route in targets if route.counters is not None]
        _bump(counted, len(body), 1)
        try:
            self._store.set_head(conn.execute(INSERT_MESSAGE, (topic, body)).lastrowid or 0)
        except BaseException as exc:
            _bump(counted, len(body), -1)
            if isinstance(exc, sqlite3.Error):
                raise describe(exc, self._store.directory) from exc
            raise
        return targets

    def _transact(
        self, conn: sqlite3.Connection, topic: str, body: bytes, targets: Sequence[Route]
    ) -> list[Route]:
        """Store a message and its backlog rows in one transaction, applying every policy;
        return the subscriptions that took it."""
        size = len(body)
        stored: list[Route] = []
        counted: list[Route] = []
        skipped: list[Route] = []
        applied = False
        try:
            conn.execute("BEGIN IMMEDIATE")
            seq: int = conn.execute(INSERT_MESSAGE, (topic, body)).lastrowid  # type: ignore[assignment]
            for route in targets:
                if route.log:
                    took = self._admit(conn, route, seq, size, counted, skipped)
                else:
                    took = self._enqueue(conn, route, seq, size)
                if took:
                    stored.append(route)
            if not stored:
                conn.execute("DELETE FROM messages WHERE seq = ?", (seq,))
            # Counted before the commit: a publisher that dies in between leaves a backlog
            # counted one too high, never one too low.
            _bump(counted, size, 1)
            for route in skipped:
                route.counters[route.base + SKIPS] += 1  # type: ignore[index]
            applied = True
            conn.execute("COMMIT")
            if stored:
                self._store.set_head(seq)
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if applied:
                _bump(counted, size, -1)
            if isinstance(exc, sqlite3.Error):
                raise describe(exc, self._store.directory) from exc
            raise
        return stored

    def _admit(
        self,
        conn: sqlite3.Connection,
        route: Route,
        seq: int,
        size: int,
        counted: list[Route],
        skipped: list[Route],
    ) -> bool:
        """Whether the unnamed subscription ``route`` gets message ``seq`` (from the log).

        ``drop_oldest`` is applied by its reader, which takes the oldest out of its backlog;
        ``refuse`` and ``drop_newest`` are applied here, against the panel's exact count.
        """
        words = self._hub.counters(route)
        if words is None:
            return True  # no panel to count in (an owner of an older version): unbounded
        base = route.base
        if route.overflow != "drop_oldest":
            backlog = words[base + PUT_N] - words[base + TAKEN_N]
            backlog_bytes = words[base + PUT_B] - words[base + TAKEN_B]
            if not _fits(route, backlog + 1, backlog_bytes + size):
                if route.overflow == "refuse":
                    self.dropped.bump()
                    raise BacklogFull(
                        route.sub[2:], backlog, backlog_bytes, described=route.describe()
                    )
                conn.execute("INSERT OR IGNORE INTO skips VALUES (?, ?)", (route.sub, seq))
                conn.execute("UPDATE subs SET dropped = dropped + 1 WHERE id = ?", (route.sub,))
                skipped.append(route)
                self._note_drop(route, "newest")
                return False
        counted.append(route)
        return True

    def _enqueue(self, conn: sqlite3.Connection, route: Route, seq: int | None, size: int) -> bool:
        if route.max_messages is not None or route.max_bytes is not None:
            backlog, backlog_bytes = conn.execute(
                "SELECT backlog, backlog_bytes FROM subs WHERE id = ?", (route.sub,)
            ).fetchone()
            if not _fits(route, backlog + 1, backlog_bytes + size):
                if route.overflow == "refuse":
                    self.dropped.bump()
                    raise BacklogFull(shown(route.sub), backlog, backlog_bytes)
                if route.overflow == "drop_newest":
                    conn.execute("UPDATE subs SET dropped = dropped + 1 WHERE id = ?", (route.sub,))
                    self._note_drop(route, "newest")
                    return False
                while backlog and not _fits(route, backlog + 1, backlog_bytes + size):
                    oldest = conn.execute(
                        "DELETE FROM inbox WHERE sub = ? AND seq = "
                        "(SELECT MIN(seq) FROM inbox WHERE sub = ?) RETURNING seq, size",
                        (route.sub, route.sub),
                    ).fetchone()
                    conn.execute(f"DELETE FROM messages WHERE seq = ? AND {GARBAGE}", (oldest[0],))
                    backlog -= 1
                    backlog_bytes -= oldest[1]
                    conn.execute("UPDATE subs SET dropped = dropped + 1 WHERE id = ?", (route.sub,))
                    self._note_drop(route, "oldest")
        conn.execute("INSERT INTO inbox(sub, seq, size) VALUES (?, ?, ?)", (route.sub, seq, size))
        return True

    def _note_drop(self, route: Route, which: str) -> None:
        self.dropped.bump()
        self._drops.note(route.describe(), bounds(route.max_messages, route.max_bytes), which)


def _bump(routes: list[Route], size: int, sign: int) -> None:
    for route in routes:
        words = route.counters
        assert words is not None
        words[route.base + PUT_N] += sign
        words[route.base + PUT_B] += sign * size


def _fits(route: Route, backlog: int, size: int) -> bool:
    return (route.max_messages is None or backlog <= route.max_messages) and (
        route.max_bytes is None or size <= route.max_bytes
    )


def bounds(max_messages: int | None, max_bytes: int | None) -> str:
    """``max_messages=..., max_bytes=...`` for a log line."""
    return f"max_messages={max_messages}, max_bytes={max_bytes}"


def shown(sub: str) -> str:
    """A subscription id as users name it (``d:billing`` -> ``billing``)."""
    return sub[2:] if sub.startswith("d:") else sub
