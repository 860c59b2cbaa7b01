"""Unnamed subscriptions read the shared message log from a cursor; this is how.

A read takes nothing away from anyone (no write lock). What an unnamed subscription has not
taken yet is its backlog, counted exactly in its owner's panel (``_panel``): publishers add
what they store for it, its reader adds what it takes. Its bound is kept by the publishers for
``refuse`` and ``drop_newest`` (a skipped message is listed in ``skips``) and by its reader for
``drop_oldest``: before each read it moves its cursor past the oldest messages it may no longer
keep. Both count and log every drop.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from typing import Any

from eventforge.message import Message
from eventforge.topics import topic_matches
from eventforge.transport import Callback, Counter, is_nonblocking
from eventforge.transports.local._panel import (
    CURSOR,
    PUT_B,
    PUT_N,
    SKIPS,
    SWEPT,
    TAKEN_B,
    TAKEN_N,
    base_of,
    over_bound,
)
from eventforge.transports.local._publish import DropLog, bounds
from eventforge.transports.local._store import GARBAGE, Store, describe

__all__ = ["Attachment", "LogReader", "Taken"]

log = logging.getLogger("eventforge.transports.local")

Taken = list[tuple[int, Message | None]]
_SCAN = 512


class Attachment:
    """One local consumer of a subscription: its callback and how it takes messages."""

    __slots__ = ("base", "busy", "callback", "closed", "consumer", "cursor", "dropped", "exact",
                 "inline", "leased", "limits", "lock", "log", "overflow", "pattern", "shared",
                 "skips", "skips_seen", "slot", "sub", "swept", "verified", "words")  # fmt: skip

    def __init__(
        self,
        consumer: str,
        sub: str,
        callback: Callback,
        pattern: str,
        cursor: int | None,
        *,
        slot: int | None = None,
        words: memoryview | None = None,
        limits: tuple[int | None, int | None] = (None, None),
        overflow: str = "drop_oldest",
    ) -> None:
        self.consumer = consumer
        self.sub = sub
        self.callback = callback
        self.pattern = pattern
        self.exact = "*" not in pattern
        self.log = cursor is not None  # unnamed: reads the message log from its cursor on
        self.cursor = cursor or 0
        self.leased = not self.log  # shared or named: removed after the callback returned
        self.inline = is_nonblocking(callback)
        self.busy = False
        self.closed = False
        self.shared = False  # a backlog with other listeners (as of the last claim)
        self.lock = threading.Lock()
        self.slot = slot
        self.base = base_of(slot) if slot is not None else 0
        self.words = words if slot is not None else None
        self.limits = limits
        self.overflow = overflow
        self.skips: set[int] = set()
        self.skips_seen = 0
        self.swept = 0  # the panel's SWEPT as of its last catch-up
        self.verified = 0.0  # when it last read the store rather than trusting the head word
        self.dropped = 0  # dropped by this reader and not yet recorded in the store

    def describe(self) -> str:
        return f"unnamed subscription {self.consumer!r} on {self.pattern!r}"


class LogReader:
    """Reads the log for the unnamed subscriptions of one transport, and keeps their bounds."""

    def __init__(self, store: Store, decode: Any, drops: DropLog, check: float = 2.0) -> None:
        self._store = store
        self._check = check
        self._decode = decode
        self._drops = drops
        self.dropped = 0  # messages its readers dropped (drop_oldest)
        self._dropped_lock = threading.Lock()
        self.skipped = Counter()
        self._gc_mark = 0
        self.dirty = False

    def read(self, att: Attachment, limit: int, *, first: bool = False) -> tuple[Taken, int]:
        """The messages after ``att``'s cursor that match its pattern; moves the cursor.

        Returns the matching messages and how many rows were read. With ``first``, only the
        first match is taken and the cursor stops there.
        """
        now = time.monotonic()
        if self._store.head() <= att.cursor and now < att.verified + self._check:
            # Nothing stored since its last read (publishers set the head word after their
            # commit); at least every check interval it reads anyway, in case a publisher
            # died between its commit and that word.
            return [], 0
        with att.lock:
            if att.closed:
                return [], 0
            conn = self._store.connection()
            before = att.cursor
            att.verified = now
            try:
                trims = att.words is not None and att.overflow == "drop_oldest"
                if trims and not self._trim(conn, att):
                    return [], 0
                matches, last, count = self._rows(conn, att, limit)
                if att.words is not None:
                    if att.words[att.base + SWEPT] != att.swept:
                        # The sweeper moved it on (and deleted what it skipped) while this
                        # read was on its way: dropped, not taken; flush() catches up.
                        self.dirty = True
                        return [], 0
                    if att.words[att.base + SKIPS] != att.skips_seen:
                        self._load_skips(conn, att)
            except sqlite3.Error as exc:
                raise describe(exc, self._store.directory) from exc
            if att.skips:
                matches = [r for r in matches if r[0] not in att.skips]
            if first and matches:
                matches = matches[:1]
                att.cursor = matches[0][0]
            elif last > att.cursor:
                att.cursor = last
            words = att.words
            if words is not None:
                base = att.base
                if matches:
                    words[base + TAKEN_N] += len(matches)
                    words[base + TAKEN_B] += sum(len(r[2]) for r in matches)
                words[base + CURSOR] = att.cursor
            moved = att.cursor != before
        self.dirty = self.dirty or moved
        return [(seq, self._decode(att.sub, seq, body)) for seq, _, body in matches], count

    def _rows(self, conn: sqlite3.Connection, att: Attachment, limit: int) -> tuple[Any, int, int]:
        """``(matching rows, the number the cursor may move to, how many rows count as read)``.

        The cursor of an exact topic moves to the newest message when every match up to it was
        read (one statement, so one snapshot: nothing committed in between is passed over);
        only the matches count as read, so messages of other topics never keep a reader busy.
        """
        if not att.exact:
            rows = conn.execute(
                "SELECT seq, topic, body FROM messages WHERE seq > ? ORDER BY seq LIMIT ?",
                (att.cursor, limit),
            ).fetchall()
            matches = [r for r in rows if topic_matches(att.pattern, r[1])]
            return matches, rows[-1][0] if rows else 0, len(rows)
        rows = conn.execute(
            "SELECT * FROM (SELECT seq, topic, body FROM messages WHERE seq > ?1 AND topic = ?2 "
            "ORDER BY seq LIMIT ?3) UNION ALL SELECT MAX(seq), NULL, NULL FROM messages",
            (att.cursor, att.pattern, limit),
        ).fetchall()
        matches = [r for r in rows if r[1] is not None]
        if len(matches) < limit:
            head = next((r[0] for r in rows if r[1] is None), None)
            return matches, head or 0, len(matches)
        return matches, matches[-1][0], len(matches)

    def _load_skips(self, conn: sqlite3.Connection, att: Attachment) -> None:
        assert att.words is not None
        att.skips_seen = att.words[att.base + SKIPS]
        att.skips.update(
            seq
            for (seq,) in conn.execute(
                "SELECT seq FROM skips WHERE sub = ? AND seq > ?", (att.sub, att.cursor)
            )
        )

    def _scan(self, conn: sqlite3.Connection, att: Attachment, after: int) -> list[Any]:
        """``(seq, size)`` of up to ``_SCAN`` matching messages after ``after``, and the last
        row read (matching or not) as ``(seq, None)``."""
        if att.exact:
            rows = conn.execute(
                "SELECT seq, topic, LENGTH(body) FROM messages WHERE seq > ? AND topic = ? "
                "ORDER BY seq LIMIT ?",
                (after, att.pattern, _SCAN),
            ).fetchall()
        else:
            rows = conn.execute(
                "SELECT seq, topic, LENGTH(body) FROM messages WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, _SCAN),
            ).fetchall()
        out = [
            (seq, size)
            for seq, topic, size in rows
            if seq not in att.skips and (att.exact or topic_matches(att.pattern, topic))
        ]
        if rows:
            out.append((rows[-1][0], None))
        return out

    def trim(self, att: Attachment) -> None:
        """Apply ``drop_oldest`` to ``att`` now (its handler may be busy with a batch)."""
        if not over_bound(att.words, att.base, *att.limits):
            return  # the common case, decided without the lock
        with att.lock:
            if att.closed or att.words is None or att.overflow != "drop_oldest":
                return
            try:
                self._trim(self._store.connection(), att)
            except sqlite3.Error as exc:
                raise describe(exc, self._store.directory) from exc

    def _trim(self, conn: sqlite3.Connection, att: Attachment) -> bool:
        """Move ``att``'s cursor past its oldest messages while its backlog is over a bound.

        ``False`` when the sweeper moved its cursor (its process was stopped): nothing is read
        until :meth:`flush` has caught up with it.
        """
        words, base = att.words, att.base
        assert words is not None
        max_n, max_b = att.limits
        over_n = words[base + PUT_N] - words[base + TAKEN_N] - max_n if max_n is not None else 0
        over_b = words[base + PUT_B] - words[base + TAKEN_B] - max_b if max_b is not None else 0
        if over_n <= 0 and over_b <= 0:
            return True
        if words[base + SWEPT] != att.swept:
            self.dirty = True
            return False
        dropped = dropped_bytes = 0
        while over_n > 0 or over_b > 0:
            found = self._scan(conn, att, att.cursor)
            if not found:
                break
            for seq, size in found:
                if size is None:
                    att.cursor = seq  # the last row scanned
                    continue
                att.cursor = seq
                dropped += 1
                dropped_bytes += size
                over_n -= 1
                over_b -= size
                if over_n <= 0 and over_b <= 0:
                    break
        words[base + TAKEN_N] += dropped
        words[base + TAKEN_B] += dropped_bytes
        words[base + CURSOR] = att.cursor
        self.dirty = True  # record the new position and the drops soon
        if dropped:
            att.dropped += dropped
            with self._dropped_lock:
                self.dropped += dropped
            self._drops.note(att.describe(), bounds(*att.limits), "oldest", dropped)
        return True

    def flush(self, atts: list[Attachment]) -> bool:
        """Record how far each unnamed subscription has read (so that what all of them read
        past can be deleted) and what it dropped; catch up with a cursor the sweeper moved.

        Tells whether a cursor was caught up with (its messages are to be read now)."""
        self.dirty = False
        caught_up = False
        if not atts:
            return caught_up
        with self._store.write() as conn:
            for att in atts:
                with att.lock:
                    if att.closed:
                        continue
                    row = conn.execute(
                        "UPDATE subs SET cursor = MAX(cursor, ?), dropped = dropped + ? "
                        "WHERE id = ? RETURNING cursor",
                        (att.cursor, att.dropped, att.sub),
                    ).fetchone()
                    att.dropped = 0
                    swept = att.words[att.base + SWEPT] if att.words is not None else 0
                    if row is not None and (row[0] > att.cursor or swept != att.swept):
                        self._resync(conn, att, max(row[0], att.cursor))
                        att.swept = swept
                        caught_up = True
                    if att.skips:
                        conn.execute(
                            "DELETE FROM skips WHERE sub = ? AND seq <= ?", (att.sub, att.cursor)
                        )
                        att.skips = {seq for seq in att.skips if seq > att.cursor}
            low = min(att.cursor for att in atts)
            conn.execute(
                f"DELETE FROM messages WHERE seq > ? AND seq <= ? AND {GARBAGE}",
                (self._gc_mark, low),
            )
            self._gc_mark = max(self._gc_mark, low)
        return caught_up

    def _resync(self, conn: sqlite3.Connection, att: Attachment, cursor: int) -> None:
        """The sweeper moved ``att``'s cursor while its process was stopped: take the new
        position and count its backlog afresh (inside a write: no publisher or sweeper runs
        meanwhile)."""
        att.cursor = cursor
        words, base = att.words, att.base
        self.skipped.bump()
        if words is None:
            log.warning("%s was stalled past its bound; it skipped messages", att.describe())
            return
        pending = pending_bytes = 0
        after = cursor
        while found := self._scan(conn, att, after):
            after = found[-1][0]
            for _, size in found:
                if size is not None:
                    pending += 1
                    pending_bytes += size
        skipped = words[base + PUT_N] - words[base + TAKEN_N] - pending
        words[base + TAKEN_N] = max(0, words[base + PUT_N] - pending)
        words[base + TAKEN_B] = max(0, words[base + PUT_B] - pending_bytes)
        words[base + CURSOR] = cursor
        log.warning(
            "%s was stalled past its bound (%s); it skipped its %d oldest messages",
            att.describe(),
            bounds(*att.limits),
            max(0, skipped),
        )
