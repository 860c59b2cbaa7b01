"""What one ``local://`` transport shares with its work queues: the store, the doorbell, the
routing table and the wake-up condition its waiting threads block on."""

from __future__ import annotations

import itertools
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from eventforge.topics import TopicIndex
from eventforge.transports.local._bell import Doorbell, parse_bell
from eventforge.transports.local._panel import Slots, base_of
from eventforge.transports.local._store import Store

__all__ = ["Hub", "Route", "Routes"]

log = logging.getLogger("eventforge.transports.local")

WORK_PREFIX = "wq:"


@dataclass
class Route:
    """A subscription as a publisher sees it: where to store and whom to wake."""

    sub: str
    pattern: str
    max_messages: int | None
    max_bytes: int | None
    overflow: str
    bells: list[str] = field(default_factory=list)
    log: bool = False  # unnamed: reads the message log from its cursor, keeps no backlog
    slot: int | None = None  # unnamed: where its owner's panel counts its backlog
    counters: memoryview | None = None  # unnamed: its owner's panel words (set on first use)
    base: int = 0  # unnamed: index of its slot's first word in ``counters``
    turn: Iterator[int] = field(default_factory=itertools.count)  # whose turn to be woken

    def describe(self) -> str:
        """How an error or a log line names this subscription."""
        if self.sub.startswith("d:"):
            return f"subscription {self.sub[2:]!r}"
        if self.sub.startswith("g:"):
            return f"group subscription {self.sub[2:].partition(':')[0]!r} on {self.pattern!r}"
        owner = parse_bell(self.bells[0]) if self.bells else None
        where = f" of process {owner[0]}" if owner else ""
        return f"unnamed subscription {self.sub[2:]!r} on {self.pattern!r}{where}"


@dataclass
class Routes:
    """Every subscription and listener of the store, as of one routing version."""

    version: int
    index: TopicIndex[Route]
    work_bells: dict[str, list[str]]
    by_sub: dict[str, Route] = field(default_factory=dict)


class Hub:
    """The doorbell, routing cache and wake-up condition of one transport."""

    def __init__(self, store: Store, bell: Doorbell, pid: int, start: int) -> None:
        self.store = store
        self.bell = bell
        self.pid = pid
        self.start = start
        self.tag = os.urandom(4).hex()
        self._ids = itertools.count(1)
        self.cond = threading.Condition()
        self.rings = 0
        self.waiters = 0  # threads blocked in wait(): the workers keep the bell armed for them
        self.sweep_soon = False
        self._routes = Routes(-1, TopicIndex(), {})
        self._routes_lock = threading.Lock()
        self.slots = Slots(bell.panel)

    def new_consumer(self) -> str:
        """A consumer id unique in the store: this transport's random tag and a number."""
        return f"{self.tag}.{next(self._ids)}"

    # -- listeners ------------------------------------------------------------------------

    def attach(self, conn: sqlite3.Connection, sub: str, consumer: str) -> None:
        """Register ``consumer`` (of this process) as listening on ``sub`` (inside a write)."""
        conn.execute(
            "INSERT OR REPLACE INTO attach VALUES (?, ?, ?, ?, ?)",
            (sub, consumer, self.pid, self.start, self.bell.address),
        )
        self.store.bump_routes(conn)

    def detach(self, conn: sqlite3.Connection, consumer: str) -> None:
        conn.execute("DELETE FROM attach WHERE consumer = ?", (consumer,))
        self.store.bump_routes(conn)

    # -- routing --------------------------------------------------------------------------

    def routes(self, conn: sqlite3.Connection) -> Routes:
        """The routing table, reloaded when another process changed it (call inside a write,
        so that the table cannot change before the transaction commits)."""
        version = self.store.routes_version(conn)
        routes = self._routes
        if routes.version == version:
            return routes
        index: TopicIndex[Route] = TopicIndex()
        by_sub: dict[str, Route] = {}
        for sub, pattern, max_messages, max_bytes, overflow, slot in conn.execute(
            "SELECT id, pattern, max_messages, max_bytes, overflow, slot FROM subs"
        ):
            route = Route(
                sub, pattern, max_messages, max_bytes, overflow, [], sub[:2] == "u:", slot
            )
            by_sub[sub] = route
            index.add(pattern, route)
        work: dict[str, list[str]] = {}
        for sub, bell in conn.execute("SELECT sub, bell FROM attach"):
            found = by_sub.get(sub)
            if found is not None:
                if bell not in found.bells:
                    found.bells.append(bell)
            elif sub.startswith(WORK_PREFIX):
                work.setdefault(sub[len(WORK_PREFIX) :], []).append(bell)
        routes = Routes(version, index, work, by_sub)
        with self._routes_lock:
            if self._routes.version < version:
                self._routes = routes
        return routes

    def counters(self, route: Route) -> memoryview | None:
        """The panel words that count ``route``'s backlog (an unnamed subscription with a
        slot whose owner's panel is reachable); ``None`` otherwise."""
        if route.counters is not None:
            return route.counters
        if route.slot is None or not route.bells:
            return None
        panel = self.bell.panel_of(route.bells[0])
        if panel is None or not panel.reach(route.slot):
            return None
        route.base = base_of(route.slot)
        route.counters = panel.words
        return route.counters

    # -- waking ---------------------------------------------------------------------------

    def ring_one(self, addresses: list[str], start: int) -> None:
        """Wake one idle listener of a shared backlog: the first armed bell from ``start`` on
        (in turn, so wake-ups are spread); none when every listener is awake (each looks at
        the store again before it sleeps)."""
        count = len(addresses)
        for step in range(count):
            address = addresses[(start + step) % count]
            panel = self.bell.panel_of(address)
            if panel is None or panel.flag[0]:
                if self.bell.ring(address):
                    return
                self.sweep_soon = True  # gone: wake another

    def ring(self, addresses: list[str], *, force: bool = False) -> None:
        """Ring the given doorbells (armed ones, or all with ``force``); a bell that is gone
        asks for a sweep soon."""
        for address in addresses:
            if not self.bell.ring(address, force=force):
                self.sweep_soon = True

    def rang(self) -> None:
        """Wake every thread of this process waiting for the store to change."""
        with self.cond:
            self.rings += 1
            self.cond.notify_all()

    def generation(self) -> int:
        with self.cond:
            return self.rings

    def wait(self, generation: int, timeout: float | None) -> None:
        """Block until a ring after ``generation`` or ``timeout``.

        Callers arm the bell, then look at the store, then wait here (a message committed
        after the arming rings the bell, which wakes a worker, which calls :meth:`rang`).
        """
        with self.cond:
            if self.rings == generation:
                self.waiters += 1
                try:
                    self.cond.wait(timeout)
                finally:
                    self.waiters -= 1
