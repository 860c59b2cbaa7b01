"""Consuming from ``local://``: the reader thread woken by the doorbell, and the delivery thread.

The reader thread waits on this transport's doorbell (with a slow periodic check as a safety
net), then takes each local subscription's messages in batches. Callbacks marked
:func:`~eventforge.transport.nonblocking` run on the reader thread; the others run on the
delivery thread, one batch per subscription at a time, so a slow handler never keeps the
reader from waking a waiting request. A message of an unnamed subscription is removed when it
is taken; one of a shared or named subscription is leased and removed only after its callback
returned, so a consumer that dies mid-batch leaves the rest to the next consumer.
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
from eventforge.transport import Callback, Counter, is_nonblocking
from eventforge.wire import WireCodec

from ._hub import Hub
from ._publish import shown
from ._store import LocalStoreError, Store

__all__ = ["Attachment", "Reader"]

log = logging.getLogger("eventforge.transports.local")

BATCH = 256

Taken = list[tuple[int, Message | None]]


class Attachment:
    """One local consumer of a subscription: its callback and how it takes messages."""

    __slots__ = ("busy", "callback", "closed", "consumer", "inline", "leased", "sub")

    def __init__(self, consumer: str, sub: str, callback: Callback, leased: bool) -> None:
        self.consumer = consumer
        self.sub = sub
        self.callback = callback
        self.leased = leased  # shared or named: delete after the callback (at-least-once)
        self.inline = is_nonblocking(callback)
        self.busy = False
        self.closed = False


class Reader:
    """The consuming side of one transport: its attachments and its two threads."""

    def __init__(
        self,
        store: Store,
        hub: Hub,
        codec: WireCodec,
        settings: dict[str, Any],
        sweep: Callable[[], None],
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

    def claim(self, sub: str, limit: int, *, leased: bool) -> Taken:
        """Take up to ``limit`` messages of ``sub`` (leased ones stay until :meth:`_settle`)."""
        now = cutoff = time.time()
        with self._store.write() as conn:
            if leased:
                # A shared backlog is split among its listeners: each takes its share, so that
                # a burst is not swallowed by whichever member woke first.
                row = conn.execute(
                    "SELECT backlog, (SELECT COUNT(*) FROM attach WHERE sub = ?1) FROM subs "
                    "WHERE id = ?1",
                    (sub,),
                ).fetchone()
                if row is not None and row[1] > 1:
                    limit = max(1, min(limit, -(-row[0] // row[1])))
                elif row is not None:
                    # The only listener: a lease still held belongs to a consumer that left
                    # or died, so the backlog is taken in order without waiting for it.
                    cutoff = float("inf")
            rows = conn.execute(
                "SELECT i.seq, m.body FROM inbox i JOIN messages m ON m.seq = i.seq "
                "WHERE i.sub = ? AND i.lease <= ? ORDER BY i.seq LIMIT ?",
                (sub, cutoff, limit),
            ).fetchall()
            if not rows:
                return []
            first, last = rows[0][0], rows[-1][0]
            if leased:
                conn.execute(
                    "UPDATE inbox SET lease = ? WHERE sub = ? AND seq BETWEEN ? AND ? "
                    "AND lease <= ?",
                    (now + self.settings["lease"], sub, first, last, cutoff),
                )
            else:
                self._remove(conn, sub, rows)
        out: Taken = []
        for seq, body in rows:
            try:
                out.append((seq, self._codec.decode(body)))
            except EventforgeError as exc:
                self.decode_errors.bump()
                log.warning("skipped stored message %d of %r: %s", seq, shown(sub), exc)
                out.append((seq, None))
        return out

    def _remove(self, conn: sqlite3.Connection, sub: str, rows: list[Any]) -> None:
        seqs = [(row[0],) for row in rows]
        conn.executemany("DELETE FROM inbox WHERE sub = ? AND seq = ?", [(sub, s) for (s,) in seqs])
        conn.executemany(
            "DELETE FROM messages WHERE seq = ?1 AND NOT EXISTS "
            "(SELECT 1 FROM inbox WHERE seq = ?1)",
            seqs,
        )

    def _settle(self, sub: str, seqs: list[int]) -> None:
        with self._store.write() as conn:
            self._remove(conn, sub, [(s,) for s in seqs])

    def _drain(self, att: Attachment) -> int:
        """Hand one batch of ``att``'s messages to its callback; return how many."""
        taken = self.claim(att.sub, BATCH, leased=att.leased)
        if not taken:
            return 0
        if att.inline:
            self._run(att, taken)
        else:
            att.busy = True
            self._pending[att.consumer] = taken
            self._handoff.put(att)
        return len(taken)

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
        bell = self._hub.bell
        while True:
            bell.wait(self.settings["check_interval"])
            if self.closed:
                break
            self._hub.rang()
            try:
                busy = True
                while busy and not self.closed:
                    busy = False
                    for att in list(self.attachments.values()):
                        if not att.closed and not att.busy and self._drain(att) >= BATCH:
                            busy = True
                if self._hub.sweep_soon or time.monotonic() >= next_sweep:
                    self._hub.sweep_soon = False
                    next_sweep = time.monotonic() + self.settings["sweep_interval"]
                    self._sweep()
            except LocalStoreError as exc:
                log.error(
                    "local:// reader: %s; retrying in %ss", exc, self.settings["check_interval"]
                )
            except TransportClosedError:
                break

    def _deliver_loop(self) -> None:
        while True:
            att = self._handoff.get()
            if att is None:
                return
            taken = self._pending.pop(att.consumer, [])
            try:
                if not att.closed:
                    self._run(att, taken)
            except LocalStoreError as exc:
                log.error("local:// delivery: %s", exc)
            except TransportClosedError:
                return
            finally:
                att.busy = False
                self._hub.bell.ring(self._hub.bell.address)
