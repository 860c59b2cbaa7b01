"""Publishing to ``local://``: one transaction stores a message and its deliveries."""

from __future__ import annotations

import logging
import sqlite3

from eventforge.errors import EventforgeError
from eventforge.message import Message
from eventforge.topics import validate_topic
from eventforge.transport import Counter
from eventforge.transports.local._hub import Hub, Route
from eventforge.transports.local._store import GARBAGE, Store
from eventforge.wire import WireCodec

__all__ = ["BacklogFull", "Publisher", "shown"]

log = logging.getLogger("eventforge.transports.local")


class BacklogFull(EventforgeError):
    """A subscription with ``overflow="refuse"`` holds its maximum; nothing was published."""

    def __init__(self, subscription: str, backlog: int, size: int) -> None:
        super().__init__(
            f"subscription {subscription!r} holds {backlog} messages ({size} bytes), its bound, "
            "and refuses more; the message was not published to anyone. Start or speed up its "
            "consumer, or raise its max_messages / max_bytes"
        )
        self.subscription = subscription


class Publisher:
    """Stores messages for the subscriptions that match them and rings their consumers.

    The message is stored once, with one inbox row per subscription, in one transaction: a
    publisher killed half-way leaves all of it or none. A subscription at its backlog bound
    applies its overflow policy; every drop is counted (``dropped`` in the store and in
    :attr:`dropped`) and logged.
    """

    def __init__(self, store: Store, hub: Hub, codec: WireCodec) -> None:
        self._store = store
        self._hub = hub
        self._codec = codec
        self.sent = Counter()
        self.unroutable = Counter()
        self.dropped = Counter()

    def publish(self, message: Message) -> int:
        """Store ``message``; return how many subscriptions stored it."""
        validate_topic(message.topic)
        body = self._codec.encode(message)
        size = len(body)
        store = self._store
        bells: list[str] = []
        stored = 0
        with store.write() as conn:
            routes = self._hub.routes(conn)
            targets = routes.index.match(message.topic)
            if targets:
                seq = conn.execute(
                    "INSERT INTO messages(topic, body) VALUES (?, ?)", (message.topic, body)
                ).lastrowid
                for route in targets:
                    if route.log or self._enqueue(conn, route, seq, size):
                        stored += 1
                        bells.extend(route.bells)
                if not stored:
                    conn.execute("DELETE FROM messages WHERE seq = ?", (seq,))
        self.sent.bump()
        if not targets:
            self.unroutable.bump()
        if bells:
            self._hub.ring(bells if len(bells) < 2 else list(dict.fromkeys(bells)))
        return stored

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
        count = self.dropped.bump()
        if count & (count - 1) == 0:  # the 1st, 2nd, 4th, 8th, ... drop of this publisher
            log.warning(
                "subscription %r is at its bound (max_messages=%s, max_bytes=%s); dropped the "
                "%s message (%d dropped by this publisher so far)",
                shown(route.sub),
                route.max_messages,
                route.max_bytes,
                which,
                count + 1,
            )

    # -- subscribing -----------------------------------------------------------------------


def _fits(route: Route, backlog: int, size: int) -> bool:
    return (route.max_messages is None or backlog <= route.max_messages) and (
        route.max_bytes is None or size <= route.max_bytes
    )


def shown(sub: str) -> str:
    """A subscription id as users name it (``d:billing`` -> ``billing``)."""
    return sub[2:] if sub.startswith("d:") else sub
