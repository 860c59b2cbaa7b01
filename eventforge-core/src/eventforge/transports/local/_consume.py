"""Consuming from ``local://``: the reader thread woken by the doorbell, and the delivery thread.

The reader thread waits on this transport's doorbell (with a slow periodic check as a safety
net), then takes each local subscription's messages in batches. Callbacks marked
:func:`~eventforge.transport.nonblocking` run on the reader thread; the others run on the
delivery thread, one batch per subscription at a time, so a slow handler never keeps the
reader from waking a waiting request. An unnamed subscription reads the message log from its
cursor (a plain read: it takes nothing away from anyone); a message of a shared or named
subscription is leased and removed from its backlog only after its callback returned, so a
consumer that dies mid-batch leaves the rest to the next consumer.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from eventforge.errors import EventforgeError, TransportClosedError
from eventforge.message import Message
from eventforge.transport import Counter
from eventforge.transports.local._cursor import Attachment, LogReader, Taken
from eventforge.transports.local._hub import Hub
from eventforge.transports.local._publish import DropLog, shown
from eventforge.transports.local._store import GARBAGE, LocalStoreError, Store
from eventforge.wire import WireCodec

__all__ = ["Reader"]

log = logging.getLogger("eventforge.transports.local")

BATCH = 256
_FLUSH_INTERVAL = 0.25


class Reader:
    """The consuming side of one transport: its attachments and its two threads."""

    def __init__(
        self,
        store: Store,
        hub: Hub,
        codec: WireCodec,
        settings: dict[str, Any],
        sweep: Callable[[], None],
        drops: DropLog,
    ) -> None:
        self._store = store
        self._hub = hub
        self._codec = codec
        self.settings = settings
        self._sweep = sweep
        self.attachments: dict[str, Attachment] = {}
        self.lock = threading.Lock()
        self.closed = False
        self.delivered = Counter()
        self.callback_errors = Counter()
        self.decode_errors = Counter()
        self.cursors = LogReader(store, self._decode, drops)
        self._handoff: queue.SimpleQueue[Attachment | None] = queue.SimpleQueue()
        self._pending: dict[str, Taken] = {}
        self._threads = [
            threading.Thread(target=self._read_loop, name="eventforge-local-reader", daemon=True),
            threading.Thread(
                target=self._deliver_loop, name="eventforge-local-delivery", daemon=True
            ),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """End both threads (after the batch in hand)."""
        self.closed = True
        self._hub.rang()
        self._hub.bell.interrupt()
        self._handoff.put(None)
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(5.0)

    def claim(self, sub: str, limit: int) -> Taken:
        """Lease up to ``limit`` messages of a backlog; they stay until :meth:`_settle`.

        A lease that runs out (its consumer died or hung) makes the message available again.
        """
        now = cutoff = time.time()
        with self._store.write() as conn:
            row = conn.execute(
                "SELECT backlog, (SELECT COUNT(*) FROM attach WHERE sub = ?1) FROM subs "
                "WHERE id = ?1",
                (sub,),
            ).fetchone()
            if row is not None and row[1] > 1:
                # A shared backlog is split among its listeners: each takes its share, so
                # that a burst is not swallowed by whichever member woke first.
                limit = max(1, min(limit, -(-row[0] // row[1])))
            elif row is not None:
                # The only listener: a lease still held belongs to a consumer that left or
                # died, so the backlog is taken in order without waiting for it.
                cutoff = float("inf")
            rows = conn.execute(
                "SELECT i.seq, m.body FROM inbox i JOIN messages m ON m.seq = i.seq "
                "WHERE i.sub = ? AND i.lease <= ? ORDER BY i.seq LIMIT ?",
                (sub, cutoff, limit),
            ).fetchall()
            if not rows:
                return []
            conn.execute(
                "UPDATE inbox SET lease = ? WHERE sub = ? AND seq BETWEEN ? AND ? AND lease <= ?",
                (now + self.settings["lease"], sub, rows[0][0], rows[-1][0], cutoff),
            )
        return [(seq, self._decode(sub, seq, body)) for seq, body in rows]

    def _remove(self, conn: sqlite3.Connection, sub: str, rows: list[Any]) -> None:
        seqs = [(row[0],) for row in rows]
        conn.executemany("DELETE FROM inbox WHERE sub = ? AND seq = ?", [(sub, s) for (s,) in seqs])
        conn.executemany(f"DELETE FROM messages WHERE seq = ? AND {GARBAGE}", seqs)

    def _settle(self, sub: str, seqs: list[int]) -> None:
        with self._store.write() as conn:
            self._remove(conn, sub, [(s,) for s in seqs])

    def read_log(self, att: Attachment, limit: int, *, first: bool = False) -> tuple[Taken, int]:
        """The messages after an unnamed subscription's cursor (see :class:`LogReader`)."""
        return self.cursors.read(att, limit, first=first)

    def flush_cursors(self) -> bool:
        """Record the cursors of this transport's unnamed subscriptions (see :class:`LogReader`)."""
        return self.cursors.flush(
            [att for att in list(self.attachments.values()) if att.log and not att.closed]
        )

    def _decode(self, sub: str, seq: int, body: bytes) -> Message | None:
        try:
            return self._codec.decode(body)
        except EventforgeError as exc:
            self.decode_errors.bump()
            log.warning("skipped stored message %d of %r: %s", seq, shown(sub), exc)
            return None

    def _take(self, att: Attachment) -> tuple[Taken, int]:
        """The next batch of ``att``'s messages and how many rows were read."""
        if att.log:
            return self.read_log(att, BATCH)
        taken = self.claim(att.sub, BATCH)
        return taken, len(taken)

    def _drain(self, att: Attachment) -> int:
        """Hand one batch of ``att``'s messages to its callback; return how many were read."""
        taken, count = self._take(att)
        if not taken:
            return count
        if att.inline:
            self._run(att, taken)
        else:
            att.busy = True
            self._pending[att.consumer] = taken
            self._handoff.put(att)
        return count

    def _run(self, att: Attachment, taken: Taken) -> None:
        callback = att.callback
        for _, message in taken:
            if message is None:
                continue
            try:
                callback(message)
            except Exception:
                self.callback_errors.bump()
                log.exception("subscription callback raised for topic %r", message.topic)
            self.delivered.bump()
        if att.leased and not self.closed:
            self._settle(att.sub, [seq for seq, _ in taken])

    def _read_loop(self) -> None:
        next_sweep = time.monotonic() + self.settings["sweep_interval"]
        next_flush = 0.0
        bell = self._hub.bell
        while not self.closed:
            # Arm first, then look: a message committed before the arming is found by this
            # look; one committed after it rings the bell.
            bell.arm()
            self._hub.rang()
            found = 0
            try:
                for att in list(self.attachments.values()):
                    if att.closed:
                        continue
                    if not att.busy:
                        found += self._drain(att)
                    elif att.log and att.overflow == "drop_oldest":
                        self.cursors.trim(att)  # its handler is busy: keep its backlog bounded
                if time.monotonic() >= next_flush:
                    next_flush = time.monotonic() + _FLUSH_INTERVAL
                    if self.flush_cursors():
                        found += 1  # a cursor moved by the sweeper: read from there now
                if self._hub.sweep_soon or time.monotonic() >= next_sweep:
                    self._hub.sweep_soon = False
                    next_sweep = time.monotonic() + self.settings["sweep_interval"]
                    self._sweep()
            except LocalStoreError as exc:
                found = 0
                log.error(
                    "local:// reader: %s; retrying in %ss", exc, self.settings["check_interval"]
                )
            except TransportClosedError:
                break
            if not found:
                # While a cursor is unrecorded the wait is short, so that it is recorded soon.
                bell.wait(
                    _FLUSH_INTERVAL if self.cursors.dirty else self.settings["check_interval"]
                )

    def _deliver_loop(self) -> None:
        while True:
            att = self._handoff.get()
            if att is None:
                return
            taken = self._pending.pop(att.consumer, [])
            try:
                # Keep taking this subscription's messages here while there are any: a
                # stream then costs no hand-off per batch.
                while taken and not att.closed and not self.closed:
                    self._run(att, taken)
                    taken = self._take(att)[0]
            except LocalStoreError as exc:
                log.error("local:// delivery: %s", exc)
            except TransportClosedError:
                return
            finally:
                att.busy = False
                # Freed, then a look: what was committed before it is rung for here, what comes
                # after it rings the (armed) reader, which now takes this subscription again.
                if self._pending_for(att):
                    self._hub.bell.ring(self._hub.bell.address)

    def _pending_for(self, att: Attachment) -> bool:
        """Whether ``att`` may have messages waiting (a read; on doubt, yes)."""
        try:
            conn = self._store.connection()
            if not att.log:
                row = conn.execute("SELECT 1 FROM inbox WHERE sub = ? LIMIT 1", (att.sub,))
            elif "*" in att.pattern:
                row = conn.execute("SELECT 1 FROM messages WHERE seq > ? LIMIT 1", (att.cursor,))
            else:
                row = conn.execute(
                    "SELECT 1 FROM messages WHERE seq > ? AND topic = ? LIMIT 1",
                    (att.cursor, att.pattern),
                )
            return row.fetchone() is not None
        except (sqlite3.Error, TransportClosedError, LocalStoreError):
            return True
