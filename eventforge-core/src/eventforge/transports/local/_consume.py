"""Consuming from ``local://``: two worker threads woken by the doorbell.

Both workers wait on this transport's doorbell (with a slow periodic check as a safety net);
where the system offers exclusive wake-ups (epoll on Linux) a ring wakes one of them. The one
that wakes takes each local subscription's messages in batches and runs the callbacks itself,
so a message costs no hand-off between threads. Two rules keep a slow handler from holding up
what must not wait: a subscription is delivered by one worker at a time (in order), and only
one worker at a time runs callbacks that may block (not marked
:func:`~eventforge.transport.nonblocking`); while it does, the other worker stays free for
replies to requests, other nonblocking callbacks, waiting receivers and work queues, and for
keeping the busy subscription's backlog bounded.

An unnamed subscription reads the message log from its cursor (a plain read: it takes nothing
away from anyone); a message of a shared or named subscription is leased and removed from its
backlog only after its callback returned, so a consumer that dies mid-batch leaves the rest to
the next consumer.
"""

from __future__ import annotations

import itertools
import logging
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
        self.cursors = LogReader(store, self._decode, drops, settings["check_interval"])
        self._claims = threading.Lock()  # guards every att.busy and _blocking
        self._blocking: Attachment | None = None  # whose may-block callbacks run now
        self._chores = threading.Lock()  # one worker at a time records cursors and sweeps
        self._turn = itertools.count().__next__  # whose turn among peers to be woken
        self._next_flush = 0.0
        self._next_sweep = time.monotonic() + settings["sweep_interval"]
        self._threads = [
            threading.Thread(target=self._work, name=f"eventforge-local-{n}", daemon=True)
            for n in (1, 2)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """End both workers (after the batches in hand)."""
        self.closed = True
        self._hub.rang()
        self._hub.bell.interrupt()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(5.0)

    def claim(self, sub: str, limit: int, att: Attachment | None = None) -> Taken:
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
            if att is not None:
                att.shared = row is not None and row[1] > 1
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
            peers: list[str] = []
            if row is not None and row[1] > 1 and row[0] > len(rows):
                # More than our share waits: wake an idle listener for the rest.
                route = self._hub.routes(conn).by_sub.get(sub)
                own = self._hub.bell.address
                peers = [bell for bell in route.bells if bell != own] if route else []
        if peers:
            self._hub.ring_one(peers, self._turn())
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
        taken = self.claim(att.sub, BATCH, att)
        return taken, len(taken)

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

    # -- the workers ------------------------------------------------------------------------

    def _work(self) -> None:
        bell = self._hub.bell
        waiter = bell.waiter()
        armed = False
        try:
            while not self.closed:
                self._hub.rang()
                try:
                    found = self._pass()
                    found += self._chores_due()
                except LocalStoreError as exc:
                    found = 0
                    log.error(
                        "local:// reader: %s; retrying in %ss", exc, self.settings["check_interval"]
                    )
                except TransportClosedError:
                    break
                if found:
                    armed = False  # busy: publishers need not ring while it keeps looking
                    continue
                if not armed and self._wanted():
                    # Arm, then look once more before sleeping: a message committed before
                    # the arming is found by that look; one committed after it rings the bell.
                    bell.arm()
                    armed = True
                    continue
                # While a cursor is unrecorded the wait is short, so that it is recorded soon.
                waiter.wait(
                    _FLUSH_INTERVAL if self.cursors.dirty else self.settings["check_interval"]
                )
                armed = False
        finally:
            waiter.close()

    def _wanted(self) -> bool:
        """Whether a worker about to sleep should be rung for the next message: yes unless
        every subscription is being delivered by the other worker (which looks again when it
        is done) and no thread waits for a ring (a receive, a work-queue fetch)."""
        if self._hub.waiters:
            return True
        blocking = self._blocking
        return any(
            not att.busy and (att.inline or blocking is None)
            for att in list(self.attachments.values())
        )

    def _pass(self) -> int:
        """Deliver what waits for each subscription this worker may take; return how many
        rows were read."""
        found = 0
        for att in list(self.attachments.values()):
            if att.closed:
                continue
            with self._claims:
                free = not att.busy and (att.inline or self._blocking is None)
                if free:
                    att.busy = True
                    if not att.inline:
                        self._blocking = att
            if not free:
                if att.busy and att.log and att.overflow == "drop_oldest":
                    self.cursors.trim(att)  # its handler is busy: keep its backlog bounded
                continue
            try:
                found += self._deliver(att)
            finally:
                with self._claims:
                    att.busy = False
                    if self._blocking is att:
                        self._blocking = None
        return found

    def _deliver(self, att: Attachment) -> int:
        """Run ``att``'s callback on its messages while there are any (a stream costs no
        wake-up per batch); return how many rows were read."""
        taken, read = self._take(att)
        while taken and not att.closed and not self.closed:
            self._run(att, taken)
            if att.shared:
                break  # one share per pass: the other listeners take theirs meanwhile
            taken, count = self._take(att)
            read += count
        return read

    def _chores_due(self) -> int:
        """Record cursors and sweep when due (one worker at a time); 1 when a cursor moved by
        the sweeper is to be read from now."""
        if not self._chores.acquire(blocking=False):
            return 0
        try:
            found = 0
            now = time.monotonic()
            if now >= self._next_flush:
                self._next_flush = now + _FLUSH_INTERVAL
                if self.flush_cursors():
                    found = 1
            if self._hub.sweep_soon or now >= self._next_sweep:
                self._hub.sweep_soon = False
                self._next_sweep = now + self.settings["sweep_interval"]
                self._sweep()
            return found
        finally:
            self._chores.release()
