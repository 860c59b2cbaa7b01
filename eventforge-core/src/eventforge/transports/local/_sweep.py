"""Cleanup of a ``local://`` directory: what dead processes left behind, and stale data.

Any process may sweep (each transport does at start and every ``sweep_interval`` seconds);
the work is idempotent and runs in one write transaction, so two sweepers never disagree.

* A listener whose process is gone (no such pid, or a pid now used by a process with another
  start time) is removed, and so is its doorbell file.
* An unnamed subscription with no listener left is removed with its backlog.
* A named subscription with no listener for longer than its ``ttl`` is removed with its backlog.
* An unnamed ``drop_oldest`` subscription over its bound whose reader has not moved since the
  previous sweep (its process is stopped or stuck) is moved past its oldest messages, down to
  its bound; its reader counts its backlog afresh and logs what it skipped when it resumes.
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
from collections.abc import Callable
from pathlib import Path

from eventforge.topics import topic_matches
from eventforge.transports.local._bell import parse_bell
from eventforge.transports.local._panel import (
    CURSOR,
    PUT_B,
    PUT_N,
    SWEPT,
    TAKEN_B,
    TAKEN_N,
    Panel,
    base_of,
)
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


def sweep(
    store: Store,
    *,
    dedupe_window: float,
    now: float | None = None,
    panels: Callable[[str], Panel | None] | None = None,
    stalled: dict[str, int] | None = None,
) -> dict[str, int]:
    """Remove what is dead or expired; return how many of each were removed.

    ``panels`` maps a bell to its panel and ``stalled`` remembers, from one sweep to the next,
    where the readers of unnamed subscriptions over their bound stood (both from the sweeping
    transport); without them no reader is moved.
    """
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
        if panels is not None and stalled is not None:
            removed["lagging"] = _bound_stalled(conn, panels, stalled)
        removed["messages"] = conn.execute(f"DELETE FROM messages WHERE {GARBAGE}").rowcount
        conn.execute(
            "DELETE FROM work WHERE state = ? AND avail < ?", (SETTLED, now - dedupe_window)
        )
        if removed["listeners"] or gone or expired:
            store.bump_routes(conn)
    removed["files"] = _orphan_files(store.directory / "bells")
    _compact(store)
    return removed


def _bound_stalled(
    conn: sqlite3.Connection, panels: Callable[[str], Panel | None], stalled: dict[str, int]
) -> int:
    """Move each unnamed ``drop_oldest`` subscription whose backlog is over its bound and whose
    reader did not move since the previous sweep past its oldest messages, down to its bound.

    A reader that runs keeps its own bound (it drops before each read); this is for one whose
    process is stopped, so that the store does not grow without end meanwhile.
    """
    moved = 0
    rows = conn.execute(
        "SELECT s.id, s.pattern, s.max_messages, s.max_bytes, s.cursor, s.slot, a.bell "
        "FROM subs s JOIN attach a ON a.sub = s.id WHERE s.id >= 'u:' AND s.id < 'u;' "
        "AND s.overflow = 'drop_oldest' AND s.slot IS NOT NULL"
    ).fetchall()
    for sub, pattern, max_n, max_b, cursor, slot, bell in rows:
        panel = panels(bell)
        if panel is None or not panel.reach(slot):
            continue
        words, base = panel.words, base_of(slot)
        over_n = words[base + PUT_N] - words[base + TAKEN_N] - max_n if max_n is not None else 0
        over_b = words[base + PUT_B] - words[base + TAKEN_B] - max_b if max_b is not None else 0
        live = max(cursor, words[base + CURSOR])
        if (over_n <= 0 and over_b <= 0) or stalled.get(sub) != live:
            stalled[sub] = live  # over its bound now: moved at the next sweep if still stuck
            if over_n <= 0 and over_b <= 0:
                del stalled[sub]
            continue
        del stalled[sub]
        dropped = 0
        while over_n > 0 or over_b > 0:
            batch = conn.execute(
                "SELECT seq, topic, LENGTH(body) FROM messages WHERE seq > ? ORDER BY seq LIMIT 512",
                (live,),
            ).fetchall()
            if not batch:
                break
            for seq, topic, size in batch:
                live = seq
                if topic_matches(pattern, topic):
                    dropped += 1
                    over_n -= 1
                    over_b -= size
                    if over_n <= 0 and over_b <= 0:
                        break
        conn.execute(
            "UPDATE subs SET cursor = ?, dropped = dropped + ? WHERE id = ?", (live, dropped, sub)
        )
        # Before the commit: a read of its reader that sees what this deletes sees this too.
        words[base + SWEPT] += 1
        moved += 1
    return moved


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
    conn.execute("DELETE FROM skips WHERE sub = ?", (sub,))
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
    # Under the write lock: a publisher stores a message with one autocommit statement,
    # which must not find the WAL reset under its snapshot.
    try:
        with store.exclusive() as conn:
            free = conn.execute("PRAGMA freelist_count").fetchone()[0]
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            if free > 256 and free * 4 > pages:
                conn.executescript("PRAGMA incremental_vacuum;")  # execute() frees a page a step
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.Error as exc:
        log.debug("compacting %s failed: %s", store.path, exc)
