"""Cleanup of a ``local://`` directory: what dead processes left behind, and stale data.

Any process may sweep (each transport does at start and every ``sweep_interval`` seconds);
the work is idempotent and runs in one write transaction, so two sweepers never disagree.

* A listener whose process is gone (no such pid, or a pid now used by a process with another
  start time) is removed, and so is its doorbell file.
* An unnamed subscription with no listener left is removed with its backlog.
* A named subscription with no listener for longer than its ``ttl`` is removed with its backlog.
* An unnamed subscription more than ``max_messages`` behind the newest message is moved up to
  that bound; its reader counts and logs what it skipped.
* Messages no backlog holds and every unnamed subscription has read past are deleted
  (normally their last consumer does it).
* Settled work-queue ids older than the dedupe window are forgotten.
* Expired schedule claims and task results are deleted.
* Files in ``bells/`` of dead processes are removed (a SIGKILLed process never unlinks its own).
* Free pages are returned to the file system (incremental vacuum) and the WAL is truncated
  when no reader holds it, so disk use follows what is stored.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from pathlib import Path

from eventforge.transports.local._bell import parse_bell
from eventforge.transports.local._store import GARBAGE, SETTLED, Store, process_alive

__all__ = ["sweep"]

log = logging.getLogger("eventforge.transports.local")


def _dead_listeners(conn: sqlite3.Connection) -> list[tuple[int, int, str]]:
    alive: dict[tuple[int, int], bool] = {}
    dead = []
    for pid, start, bell in conn.execute("SELECT DISTINCT pid, start, bell FROM attach"):
        key = (pid, start)
        if key not in alive:
            alive[key] = process_alive(pid, start)
        if not alive[key]:
            dead.append((pid, start, bell))
    return dead


def sweep(store: Store, *, dedupe_window: float, now: float | None = None) -> dict[str, int]:
    """Remove what is dead or expired; return how many of each were removed."""
    now = time.time() if now is None else now
    removed = {"listeners": 0, "subscriptions": 0, "expired": 0, "messages": 0, "files": 0,
               "lagging": 0}  # fmt: skip
    with store.write() as conn:
        for pid, start, bell in _dead_listeners(conn):
            cur = conn.execute(
                "DELETE FROM attach WHERE pid = ? AND start = ? AND bell = ?", (pid, start, bell)
            )
            removed["listeners"] += cur.rowcount
            with contextlib.suppress(OSError):
                os.unlink(bell if os.sep in bell else store.directory / "bells" / bell)
        # Named subscriptions that are listened to are active now (their TTL runs from the
        # moment the last listener left).
        conn.execute("UPDATE subs SET last_active = ? WHERE id IN (SELECT sub FROM attach)", (now,))
        conn.execute("DELETE FROM claims WHERE until <= ?", (now,))  # expired schedule claims
        conn.execute("DELETE FROM results WHERE until <= ?", (now,))  # expired task results
        gone = [
            row[0]
            for row in conn.execute(
                "SELECT id FROM subs WHERE durable = 0 AND id NOT IN (SELECT sub FROM attach)"
            )
        ]
        expired = [
            row[0]
            for row in conn.execute(
                "SELECT id FROM subs WHERE durable = 1 AND last_active + ttl < ? "
                "AND id NOT IN (SELECT sub FROM attach)",
                (now,),
            )
        ]
        for sub in gone + expired:
            drop_subscription(conn, sub)
        removed["subscriptions"] = len(gone)
        removed["expired"] = len(expired)
        for sub in expired:
            log.warning(
                "named subscription %r had no consumer for longer than its ttl; it was "
                "removed with its backlog",
                sub.removeprefix("d:"),
            )
        removed["lagging"] = _bound_readers(conn)
        removed["messages"] = conn.execute(f"DELETE FROM messages WHERE {GARBAGE}").rowcount
        conn.execute(
            "DELETE FROM work WHERE state = ? AND avail < ?", (SETTLED, now - dedupe_window)
        )
        if removed["listeners"] or gone or expired:
            store.bump_routes(conn)
    removed["files"] = _orphan_files(store.directory / "bells")
    _compact(store)
    return removed


def _bound_readers(conn: sqlite3.Connection) -> int:
    """Move an unnamed subscription that lags more than its ``max_messages`` behind the newest
    message up to that bound (its reader counts and logs the skipped messages)."""
    head = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM messages").fetchone()[0]
    return conn.execute(
        "UPDATE subs SET dropped = dropped + (? - max_messages - cursor), cursor = ? - max_messages "
        "WHERE id >= 'u:' AND id < 'u;' AND max_messages IS NOT NULL AND cursor < ? - max_messages",
        (head, head, head),
    ).rowcount


def reap(conn: sqlite3.Connection, sub: str) -> int:
    """Remove the listeners of ``sub`` whose processes are gone (inside a write)."""
    dead = [
        (pid, start)
        for pid, start in conn.execute(
            "SELECT DISTINCT pid, start FROM attach WHERE sub = ?", (sub,)
        ).fetchall()
        if not process_alive(pid, start)
    ]
    for pid, start in dead:
        conn.execute(
            "DELETE FROM attach WHERE sub = ? AND pid = ? AND start = ?", (sub, pid, start)
        )
    return len(dead)


def drop_subscription(conn: sqlite3.Connection, sub: str) -> None:
    """Delete a subscription and its backlog (inside a write; messages are swept later)."""
    conn.execute("DELETE FROM inbox WHERE sub = ?", (sub,))
    conn.execute("DELETE FROM subs WHERE id = ?", (sub,))


def _orphan_files(bells: Path) -> int:
    count = 0
    with contextlib.suppress(OSError):
        for entry in os.scandir(bells):
            owner = parse_bell(entry.name)
            if owner is None or not process_alive(*owner):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    count += 1
    return count


def _compact(store: Store) -> None:
    conn = store.connection()
    try:
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        if free > 256 and free * 4 > pages:
            conn.executescript("PRAGMA incremental_vacuum;")  # execute() frees one page per step
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.Error as exc:
        log.debug("compacting %s failed: %s", store.path, exc)
