"""The SQLite store under ``local://``: one database file in WAL mode, shared by every process.

Every process opens the same file; each thread gets its own connection (``sqlite3``
connections are not shared between threads). Writers take the write lock up front
(``BEGIN IMMEDIATE``) so that a transaction never fails half-way on a lock upgrade, and SQLite's
journal makes each transaction atomic: a process killed mid-publish leaves either the whole
message and its deliveries or nothing.

Tables:

* ``messages`` -- one row per published message (the wire envelope as a blob), numbered in
  commit order; a number is never reused (``meta.floor`` keeps the highest one deleted);
* ``subs`` -- subscriptions: unnamed ones belong to their processes and read the messages as a
  log from their ``cursor`` on (their backlog is counted in their owner's panel, ``slot``);
  named (durable) and group ones keep a backlog until consumed, with its bounds and counters;
* ``skips`` -- messages of the log that an unnamed subscription at its bound must not get
  (``drop_newest``);
* ``inbox`` -- the backlog: one row per (named or group subscription, message) not yet
  consumed (a message is stored once whatever its fan-out);
* ``attach`` -- who is listening: a consumer's process (pid and start time) and doorbell;
* ``work`` -- work-queue items (ready, leased, dead-lettered, and settled ids kept for dedupe);
* ``claims`` and ``results`` -- schedule claims and task results, each until its expiry;
* ``meta`` -- the routing version, bumped whenever ``subs`` or ``attach`` change.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import mmap
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from eventforge.errors import ConfigurationError, TransportError

__all__ = [
    "INSERT_MESSAGE",
    "LocalStoreError",
    "Store",
    "default_directory",
    "process_alive",
    "process_start",
]

log = logging.getLogger("eventforge.transports.local")

DB_NAME = "eventforge.db"
LOCK_NAME = "write.lock"
COUNTER_NAME = "routes.ver"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS claims(key TEXT PRIMARY KEY, until REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS results(key TEXT PRIMARY KEY, data BLOB NOT NULL,
    final INTEGER NOT NULL, until REAL NOT NULL) WITHOUT ROWID;
INSERT OR IGNORE INTO meta VALUES('routes', 0);
INSERT OR IGNORE INTO meta VALUES('floor', 0);
CREATE TABLE IF NOT EXISTS messages(seq INTEGER PRIMARY KEY, topic TEXT NOT NULL,
    body BLOB NOT NULL);
CREATE TRIGGER IF NOT EXISTS messages_floor AFTER DELETE ON messages
WHEN OLD.seq > IFNULL((SELECT MAX(seq) FROM messages), 0) BEGIN
    UPDATE meta SET value = MAX(value, OLD.seq) WHERE key = 'floor';
END;
CREATE TABLE IF NOT EXISTS subs(
    id TEXT PRIMARY KEY, pattern TEXT NOT NULL, durable INTEGER NOT NULL,
    max_messages INTEGER, max_bytes INTEGER, overflow TEXT NOT NULL,
    backlog INTEGER NOT NULL DEFAULT 0, backlog_bytes INTEGER NOT NULL DEFAULT 0,
    dropped INTEGER NOT NULL DEFAULT 0, ttl REAL NOT NULL, last_active REAL NOT NULL,
    cursor INTEGER NOT NULL DEFAULT 0, slot INTEGER
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS skips(sub TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY(sub, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS inbox(sub TEXT NOT NULL, seq INTEGER NOT NULL,
    size INTEGER NOT NULL, lease REAL NOT NULL DEFAULT 0,
    PRIMARY KEY(sub, seq)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS inbox_seq ON inbox(seq);
CREATE TRIGGER IF NOT EXISTS inbox_in AFTER INSERT ON inbox BEGIN
    UPDATE subs SET backlog = backlog + 1, backlog_bytes = backlog_bytes + NEW.size
    WHERE id = NEW.sub;
END;
CREATE TRIGGER IF NOT EXISTS inbox_out AFTER DELETE ON inbox BEGIN
    UPDATE subs SET backlog = backlog - 1, backlog_bytes = backlog_bytes - OLD.size
    WHERE id = OLD.sub;
END;
CREATE TABLE IF NOT EXISTS attach(sub TEXT NOT NULL, consumer TEXT NOT NULL,
    pid INTEGER NOT NULL, start INTEGER NOT NULL, bell TEXT NOT NULL,
    PRIMARY KEY(sub, consumer)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS work(id INTEGER PRIMARY KEY, queue TEXT NOT NULL,
    msg_id TEXT NOT NULL, body BLOB, state INTEGER NOT NULL DEFAULT 0,
    avail REAL NOT NULL, token INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0, reason TEXT, failed_at REAL);
CREATE UNIQUE INDEX IF NOT EXISTS work_dedupe ON work(queue, msg_id);
CREATE INDEX IF NOT EXISTS work_order ON work(queue, state, id);
CREATE INDEX IF NOT EXISTS work_leased ON work(queue, avail) WHERE token != 0;
"""

# The highest message number every unnamed subscription has read past: a message at or below
# it that no backlog holds is garbage.
LOW_WATER = (
    "(SELECT COALESCE(MIN(cursor), 9223372036854775807) FROM subs WHERE id >= 'u:' AND id < 'u;')"
)
GARBAGE = f"NOT EXISTS (SELECT 1 FROM inbox WHERE inbox.seq = messages.seq) AND seq <= {LOW_WATER}"
# Store a message under the next number: above every number in use or ever deleted (a cursor
# may point at a deleted message, so its number must not come back).
INSERT_MESSAGE = (
    "INSERT INTO messages(seq, topic, body) VALUES (MAX(IFNULL((SELECT MAX(seq) FROM messages), "
    "0), (SELECT value FROM meta WHERE key = 'floor')) + 1, ?, ?)"
)

# Work-item states.
PENDING = 0
DEAD = 1
SETTLED = 2


class LocalStoreError(TransportError):
    """The ``local://`` store cannot be opened or written (full disk, unwritable directory, ...).

    Nothing was half-written: the transaction that failed was rolled back as a whole.
    """

    def __init__(self, message: str, *, directory: Path) -> None:
        super().__init__(message)
        self.directory = directory


def default_directory() -> Path:
    """``$EVENTFORGE_HOME``, else ``$XDG_RUNTIME_DIR/eventforge``, else a per-user temp dir."""
    home = os.environ.get("EVENTFORGE_HOME")
    if home:
        return Path(home).expanduser()
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return Path(runtime) / "eventforge"
    base = "/dev/shm" if os.path.isdir("/dev/shm") else os.environ.get("TMPDIR", "/tmp")
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(base) / f"eventforge-{uid}"


def process_start(pid: int) -> int:
    """The start time of process ``pid`` in clock ticks since boot (``/proc/<pid>/stat`` field
    22); 0 where ``/proc`` is missing. Raises ``OSError`` when the process does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            data = stat.read()
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            raise ProcessLookupError(pid) from None
        os.kill(pid, 0)  # no /proc: existence only
        return 0
    # Field 2 (the command) may hold spaces and parentheses: count from the last ')'.
    fields = data[data.rindex(b")") + 2 :].split()
    return int(fields[19])


def process_alive(pid: int, start: int) -> bool:
    """Tell whether the process that registered as ``(pid, start)`` still runs.

    A reused pid has another start time, so it does not keep a dead process's state alive.
    """
    try:
        return process_start(pid) == start
    except PermissionError:
        return True  # exists, owned by someone else
    except (OSError, ValueError, IndexError):
        return False


def describe(exc: BaseException, directory: Path) -> LocalStoreError:
    """Turn a SQLite or OS error into a :class:`LocalStoreError` naming the directory."""
    text = str(exc)
    if "full" in text:
        hint = "the disk (or the store's max_size) is full; free space or raise max_size"
    elif "readonly" in text or "unable to open" in text or isinstance(exc, PermissionError):
        hint = "the directory is not writable by this user; choose another with local:///path"
    else:
        hint = "check the directory's disk and permissions"
    return LocalStoreError(
        f"local:// store in {str(directory)!r} failed ({type(exc).__name__}: {text}); {hint}. "
        "The operation was rolled back; nothing was half-written",
        directory=directory,
    )


class Store:
    """The database of one ``local://`` directory: connections, schema and transactions."""

    def __init__(
        self, directory: Path, *, synchronous: str = "normal", max_size: int | None = None
    ) -> None:
        if synchronous not in ("normal", "full"):
            raise ConfigurationError(
                f"synchronous must be 'normal' or 'full', got {synchronous!r}",
                key="transport.synchronous",
            )
        self.directory = directory
        self.path = directory / DB_NAME
        self.synchronous = synchronous
        self.max_size = max_size
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._fds: list[int] = []
        self._routes_counter: mmap.mmap | None = None
        self._routes_words: memoryview | None = None  # [routes version, head]
        self._lock = threading.Lock()
        self._closed = False
        try:
            directory.mkdir(parents=True, exist_ok=True)
            probe = directory / f".probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
            if not self.path.exists():
                # Before WAL mode and the first table: free pages can then be given back.
                with contextlib.closing(sqlite3.connect(self.path, timeout=30.0)) as first:
                    first.execute("PRAGMA auto_vacuum = INCREMENTAL")
                    first.execute("VACUUM")
            conn = self.connection()
            conn.executescript(f"BEGIN IMMEDIATE;{_SCHEMA}COMMIT;")
            with self.write(conn):
                columns = {row[1] for row in conn.execute("PRAGMA table_info(subs)")}
                if "slot" not in columns:  # a store made by an earlier version
                    conn.execute("ALTER TABLE subs ADD COLUMN slot INTEGER")
        except (OSError, sqlite3.Error) as exc:
            self.close()
            raise describe(exc, directory) from exc

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if self._closed:
            raise TransportError(f"local:// store in {str(self.directory)!r} is closed")
        conn = sqlite3.connect(
            self.path, timeout=30.0, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {self.synchronous.upper()}")
        conn.execute("PRAGMA journal_size_limit = 67108864")
        if self.max_size is not None:
            page = conn.execute("PRAGMA page_size").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {max(16, self.max_size // page)}")
        self._local.conn = conn
        # Writers queue on a lock file first: flock() sleeps in the kernel and wakes the next
        # writer the moment the lock is free (SQLite's own busy handler polls with sleeps of
        # up to 100 ms). The kernel drops the lock of a process that dies.
        self._local.lock = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        with self._lock:
            self._fds.append(self._local.lock)
        with self._lock:
            self._all.append(conn)
        return conn

    def handles(self) -> tuple[sqlite3.Connection, int]:
        """This thread's connection and its descriptor of the write lock file."""
        conn = self.connection()
        return conn, self._local.lock

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[sqlite3.Connection]:
        """The write lock without a transaction (checkpoints and vacuuming, which writers
        must not interleave with: every write in this store waits on this lock)."""
        conn, lock = self.handles()
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield conn
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def write(self, conn: sqlite3.Connection | None = None) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``); rolled back whole on any error.

        SQLite and OS errors come out as :class:`LocalStoreError` naming the directory.
        """
        if conn is None:
            conn = self.connection()
        lock = self._local.lock
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise describe(exc, self.directory) from exc
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise describe(exc, self.directory) from exc
                raise
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)

    def read(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one query outside a write transaction."""
        try:
            return self.connection().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise describe(exc, self.directory) from exc

    def bump_routes(self, conn: sqlite3.Connection) -> None:
        """Tell every process that subscriptions or listeners changed (inside a write).

        The version lives in the database and, for a cheap check on every publish, in a shared
        memory counter (``routes.ver``) bumped under the same write lock before the commit: a
        writer that dies in between only makes the others reload the table once too often.
        """
        conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'routes'")
        self._counter()[0] += 1

    def routes_version(self, conn: sqlite3.Connection) -> int:
        """The routing version (inside a write, so that it cannot change before the commit)."""
        return int(self._counter()[0])

    def head(self) -> int:
        """The number of the newest message a publisher stored (a shared memory word, set
        after its commit): a reader whose cursor is there has nothing new to read."""
        return int(self._counter()[1])

    def set_head(self, seq: int) -> None:
        """(A publisher, under the write lock, after its commit.)"""
        words = self._counter()
        if seq > words[1]:
            words[1] = seq

    def _counter(self) -> memoryview:
        counter = self._routes_words
        if counter is None:
            path = self.directory / COUNTER_NAME
            with open(path, "a+b") as file:
                if file.seek(0, os.SEEK_END) < 16:
                    file.write(b"\x00" * (16 - file.tell()))
                    file.flush()
                self._routes_counter = mmap.mmap(file.fileno(), 16)
            counter = self._routes_words = memoryview(self._routes_counter).cast("Q")
        return counter

    def close(self) -> None:
        """Close every connection this store opened. Idempotent."""
        self._closed = True
        with self._lock:
            conns, self._all = self._all, []
            fds, self._fds = self._fds, []
        for conn in conns:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        if self._routes_words is not None:
            self._routes_words.release()
            self._routes_words = None
        if self._routes_counter is not None:
            with contextlib.suppress(OSError, ValueError, BufferError):
                self._routes_counter.close()
        self._local = threading.local()
