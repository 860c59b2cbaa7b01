"""LocalTransport: durable, broker-less messaging between the processes of one machine."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any, ClassVar

from eventforge.errors import ConfigurationError, TransportClosedError
from eventforge.message import Message
from eventforge.topics import validate_pattern
from eventforge.transport import (
    LOCAL_CAPABILITIES,
    Callback,
    ResultStore,
    RetryPolicy,
    SubscriptionStatus,
    Transport,
    WorkQueueBackend,
)
from eventforge.transports.local._bell import Doorbell
from eventforge.transports.local._consume import Reader
from eventforge.transports.local._cursor import Attachment
from eventforge.transports.local._hub import Hub
from eventforge.transports.local._options import OPTIONS, OVERFLOW_POLICIES, directory_from_url
from eventforge.transports.local._panel import PUT_B, PUT_N, TAKEN_B, TAKEN_N, base_of
from eventforge.transports.local._publish import DropLog, Publisher
from eventforge.transports.local._results import LocalResultStore
from eventforge.transports.local._store import (
    LocalStoreError,
    Store,
    default_directory,
    describe,
    process_start,
)
from eventforge.transports.local._sweep import drop_subscription, reap, sweep
from eventforge.transports.local._workqueue import LocalWorkQueueBackend
from eventforge.wire import WireCodec

__all__ = ["LocalTransport"]

log = logging.getLogger("eventforge.transports.local")


class LocalTransport(Transport):
    """Messaging through a SQLite database (WAL mode) in one directory, woken by doorbells.

    Every process that opens the same directory shares subscriptions and messages. A message is
    stored once and kept until every subscription it was routed to consumed it. Unnamed
    subscriptions end with their process; named ones (``durable="name"``) keep their backlog
    while nobody listens and across restarts, and everybody attached to a name (or to a
    ``group``) competes for its messages. See ``docs/transports/local.md``.
    """

    name: ClassVar[str] = "local"
    capabilities: ClassVar[frozenset[str]] = LOCAL_CAPABILITIES
    options = OPTIONS

    def __init__(self, directory: str | Path | None = None, **options: Any) -> None:
        values = OPTIONS.read(keywords=options)
        self._configure(Path(directory) if directory is not None else None, values)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> LocalTransport:
        """``local://`` (default directory) or ``local:///path``; options in the query.

        Keyword ``options`` override the query. Used by :func:`eventforge.connect`.
        """
        directory = directory_from_url(url)
        values = OPTIONS.read(url, options)
        transport = cls.__new__(cls)
        transport._configure(directory, values)
        return transport

    def _configure(self, directory: Path | None, values: dict[str, Any]) -> None:
        self.directory = (directory or default_directory()).expanduser().absolute()
        self.settings = values
        self._codec = WireCodec(
            values["serializer"], trusted=values["trusted"], max_size=values["max_size"]
        )
        self._closed = False
        self._store = Store(
            self.directory,
            synchronous=values["synchronous"],
            max_size=values["max_store_bytes"],
        )
        pid = os.getpid()
        start = process_start(pid)
        try:
            bell = Doorbell(self.directory, pid, start)
        except OSError as exc:
            self._store.close()
            raise describe(exc, self.directory) from exc
        self._hub = Hub(self._store, bell, pid, start)
        self._backends: list[LocalWorkQueueBackend] = []
        self._results: LocalResultStore | None = None
        drops = DropLog()
        self._publisher = Publisher(self._store, self._hub, self._codec, drops)
        self._stalled: dict[str, int] = {}
        self._sweep()
        self._reader = Reader(self._store, self._hub, self._codec, values, self._sweep, drops)
        self._attachments = self._reader.attachments
        self._lock = self._reader.lock

    # -- publishing ------------------------------------------------------------------------

    def send(self, message: Message) -> None:
        """Store ``message`` for every matching subscription and ring their consumers.

        Returns once the message is committed. A message no subscription matches is not
        stored (counted in ``stats()["unroutable"]``).
        """
        if self._closed:
            raise TransportClosedError("LocalTransport is closed; create a new one")
        self._publisher.publish(message)

    def send_counted(self, message: Message) -> int:
        """Like :meth:`send`; return how many subscriptions stored the message."""
        if self._closed:
            raise TransportClosedError("LocalTransport is closed; create a new one")
        return self._publisher.publish(message)

    def subscribe(
        self,
        topic: str,
        callback: Callback,
        *,
        group: str | None = None,
        durable: str | None = None,
        max_messages: int | None = None,
        max_bytes: int | None = None,
        overflow: str | None = None,
    ) -> str:
        """Call ``callback`` for each message matching ``topic``; return a subscription id.

        ``group`` shares the subscription with every member of that group on the pattern, in
        any process (each message to one member). ``durable`` names a subscription that keeps
        its backlog while nobody listens and across restarts; everyone attached to the name
        competes for its messages. ``max_messages`` / ``max_bytes`` / ``overflow`` bound the
        backlog of a subscription this call creates (defaults: the transport's options); an
        unnamed subscription's backlog is what it has not yet taken from the shared log.
        """
        self._check_open()
        validate_pattern(topic)
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {type(callback).__name__}")
        att = self._attach(topic, callback, group, durable, max_messages, max_bytes, overflow)
        with self._lock:
            self._attachments[att.consumer] = att
        # Wake a worker to take a backlog that is already there (both may be busy or asleep
        # unarmed while another subscription's handler runs).
        self._hub.bell.ring(self._hub.bell.address, force=True)
        return att.consumer

    def subscribe_durable(
        self, topic: str, callback: Callback, *, durable: str, group: str | None = None
    ) -> str:
        """``subscribe(topic, callback, durable=durable, group=group)``."""
        return self.subscribe(topic, callback, durable=durable, group=group)

    def _attach(
        self,
        topic: str,
        callback: Callback,
        group: str | None,
        durable: str | None,
        max_messages: int | None,
        max_bytes: int | None,
        overflow: str | None,
    ) -> Attachment:
        """Create (or join) the subscription and attach a new consumer of this process to it.

        An unnamed subscription starts after the newest message (it reads what comes after)
        and gets a slot in this transport's panel, where its backlog is counted.
        """
        for key, value in (("group", group), ("durable", durable)):
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"{key} must be a non-empty str, got {value!r}")
        if overflow is not None and overflow not in OVERFLOW_POLICIES:
            raise ConfigurationError(
                f"overflow must be one of {', '.join(OVERFLOW_POLICIES)}, got {overflow!r}",
                key="overflow",
            )
        consumer = self._hub.new_consumer()
        if durable is not None:
            sub = f"d:{durable}"
        elif group is not None:
            sub = f"g:{group}:{topic}"
        else:
            sub = f"u:{consumer}"
        limits = (
            max_messages if max_messages is not None else self.settings["max_messages"],
            max_bytes if max_bytes is not None else self.settings["max_bytes"],
        )
        policy = overflow or self.settings["overflow"]
        unnamed = sub.startswith("u:")
        slot = self._hub.slots.take() if unnamed else None
        try:
            with self._store.write() as conn:
                row = conn.execute("SELECT pattern FROM subs WHERE id = ?", (sub,)).fetchone()
                if row is not None and row[0] != topic:
                    raise ConfigurationError(
                        f"the named subscription {durable!r} already exists on {row[0]!r}, not "
                        f"{topic!r}; use another name (a name is one backlog on one pattern)",
                        key="durable",
                    )
                cursor = None
                if slot is not None:
                    cursor = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM messages").fetchone()[
                        0
                    ]
                    self._hub.slots.zero(slot)  # no publisher counts in it before the commit
                if row is not None:
                    # A listener of a process that died keeps nothing: its messages are ours now.
                    reap(conn, sub)
                else:
                    conn.execute(
                        "INSERT INTO subs(id, pattern, durable, max_messages, max_bytes, "
                        "overflow, ttl, last_active, cursor, slot) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (sub, topic, durable is not None, *limits, policy, self.settings["ttl"],
                         time.time(), cursor or 0, slot),
                    )  # fmt: skip
                self._hub.attach(conn, sub, consumer)
        except BaseException:
            if slot is not None:
                self._hub.slots.give_back(slot)
            raise
        return Attachment(
            consumer, sub, callback, topic, cursor, slot=slot, words=self._hub.slots.panel.words,
            limits=limits, overflow=policy,
        )  # fmt: skip

    def unsubscribe(self, subscription_id: str) -> bool:
        with self._lock:
            att = self._attachments.pop(subscription_id, None)
        if att is None:
            return False
        if not self._closed:
            self._detach(att)
        return True

    def _detach(self, att: Attachment) -> None:
        with att.lock:
            att.closed = True  # no more reads: its slot can be given back
        with self._store.write() as conn:
            self._hub.detach(conn, att.consumer)
            sub = att.sub
            left = conn.execute("SELECT 1 FROM attach WHERE sub = ? LIMIT 1", (sub,)).fetchone()
            if left is None:
                if sub.startswith("d:"):
                    conn.execute("UPDATE subs SET last_active = ? WHERE id = ?", (time.time(), sub))
                else:
                    drop_subscription(conn, sub)
        if att.slot is not None:
            self._hub.slots.give_back(att.slot)

    def receive(self, topic: str, timeout: float | None = None) -> Message | None:
        """Block for the next message on ``topic`` published while waiting."""
        reader = self._open_reader(topic)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                message = self._poll_reader(reader, deadline, self.settings["check_interval"])
                if message is not None or (deadline is not None and time.monotonic() >= deadline):
                    return message
        finally:
            self._close_reader(reader)

    async def receive_async(self, topic: str, timeout: float | None = None) -> Message | None:
        """Await the next message on ``topic``; waits in short slices on a worker thread.

        The subscription lives for the whole wait, so nothing published between two slices is
        missed; a cancelled wait takes nothing away from anyone.
        """
        reader = await asyncio.to_thread(self._open_reader, topic)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                message = await asyncio.to_thread(self._poll_reader, reader, deadline, 0.05)
                if message is not None or (deadline is not None and time.monotonic() >= deadline):
                    return message
        finally:
            await asyncio.to_thread(self._close_reader, reader)

    def _open_reader(self, topic: str) -> Attachment:
        self._check_open()
        validate_pattern(topic)
        return self._attach(topic, lambda m: None, None, None, None, None, None)

    def _poll_reader(
        self, reader: Attachment, deadline: float | None, longest: float
    ) -> Message | None:
        """The next message of ``reader``, waiting for the doorbell up to ``longest`` s."""
        generation = self._hub.generation()
        self._hub.bell.arm()  # then look: a message committed after the arming rings
        taken, _ = self._reader.read_log(reader, 64, first=True)
        if taken and taken[0][1] is not None:
            return taken[0][1]
        wait = longest
        if deadline is not None:
            wait = min(wait, max(0.0, deadline - time.monotonic()))
        self._check_open()
        self._hub.wait(generation, wait)
        taken, _ = self._reader.read_log(reader, 64, first=True)
        return taken[0][1] if taken else None

    def _close_reader(self, reader: Attachment) -> None:
        if not self._closed:
            self._detach(reader)

    def _sweep(self) -> None:
        try:
            sweep(
                self._store,
                dedupe_window=self.settings["dedupe_window"],
                panels=self._hub.bell.panel_of,
                stalled=self._stalled,
            )
        except LocalStoreError as exc:
            log.warning("sweeping %s failed: %s", self.directory, exc)

    # -- work queues, claims and lifecycle ----------------------------------------------------

    def claim(self, key: str, ttl: float) -> bool:
        """Claim ``key`` for ``ttl`` seconds across every process using this directory."""
        self._check_open()
        if not ttl > 0:
            raise ValueError(f"a claim's ttl must be > 0 seconds, got {ttl}")
        now = time.time()
        with self._store.write() as conn:
            conn.execute("DELETE FROM claims WHERE key = ? AND until <= ?", (key, now))
            won = conn.execute(
                "INSERT OR IGNORE INTO claims(key, until) VALUES (?, ?)", (key, now + ttl)
            ).rowcount
        return won == 1

    def work_queue_backend(self, name: str, policy: RetryPolicy) -> WorkQueueBackend:
        """A durable work queue stored in this transport's directory."""
        self._check_open()
        backend = LocalWorkQueueBackend(
            self._hub,
            self._codec,
            name,
            policy,
            visibility_timeout=self.settings["visibility_timeout"],
            check_interval=self.settings["check_interval"],
        )
        self._backends.append(backend)
        return backend

    def result_store(self) -> ResultStore:
        """Task results in this directory's store, shared by every process that opens it."""
        self._check_open()
        if self._results is None:
            self._results = LocalResultStore(self._store)
        return self._results

    def sweep(self) -> dict[str, int]:
        """Remove what dead processes left and stale data now; return counts of each."""
        self._check_open()
        return sweep(
            self._store,
            dedupe_window=self.settings["dedupe_window"],
            panels=self._hub.bell.panel_of,
            stalled=self._stalled,
        )

    def subscriptions(self) -> list[dict[str, Any]]:
        """Every subscription in the store: name, pattern, backlog, dropped, listeners.

        An unnamed subscription's backlog is read from its owner's panel (what it has not yet
        taken from the log); its ``dropped`` includes what its reader dropped up to its last
        recorded position (a fraction of a second ago).
        """
        rows = self._store.read(
            "SELECT id, pattern, durable, backlog, backlog_bytes, dropped, "
            "(SELECT COUNT(*) FROM attach WHERE attach.sub = subs.id), slot, "
            "(SELECT bell FROM attach WHERE attach.sub = subs.id LIMIT 1) FROM subs ORDER BY id"
        )
        keys = ("id", "pattern", "durable", "backlog", "backlog_bytes", "dropped", "listeners")
        out = []
        for row in rows:
            info = dict(zip(keys, row[:7], strict=True))
            slot, bell = row[7], row[8]
            panel = self._hub.bell.panel_of(bell) if slot is not None and bell else None
            if panel is not None and panel.reach(slot):
                words, base = panel.words, base_of(slot)
                info["backlog"] = max(0, words[base + PUT_N] - words[base + TAKEN_N])
                info["backlog_bytes"] = max(0, words[base + PUT_B] - words[base + TAKEN_B])
            out.append(info)
        return out

    def backlog(
        self, topic: str, *, durable: str | None = None, group: str | None = None
    ) -> int | None:
        """Messages waiting in the named (``durable``) or ``group`` subscription of ``topic``;
        ``None`` for a plain subscription (it keeps no backlog) or one that does not exist."""
        if durable is not None:
            sub = f"d:{durable}"
        elif group is not None:
            sub = f"g:{group}:{topic}"
        else:
            return None
        rows = self._store.read("SELECT backlog FROM subs WHERE id = ?", (sub,))
        return int(rows[0][0]) if rows else None

    def subscription_status(self, subscription_id: str) -> SubscriptionStatus:
        """Present while the store still holds the subscription and lists this process as its
        listener; ``backlog`` is what waits for it (for an unnamed one, in its panel)."""
        with self._lock:
            att = self._attachments.get(subscription_id)
        if att is None or self._closed:
            return SubscriptionStatus(
                False, f"{subscription_id} is not subscribed on this local:// transport"
            )
        rows = self._store.read(
            "SELECT backlog, (SELECT COUNT(*) FROM attach WHERE sub = ? AND consumer = ?) "
            "FROM subs WHERE id = ?",
            (att.sub, att.consumer, att.sub),
        )
        if not rows:
            return SubscriptionStatus(
                False,
                f"subscription {att.sub!r} on {att.pattern!r} is gone from the store "
                f"{self.directory} (removed by another process or a sweep): nothing is "
                "routed to it",
            )
        backlog, listening = rows[0]
        if not listening:
            return SubscriptionStatus(
                False,
                f"this process is no longer a listener of subscription {att.sub!r} in "
                f"{self.directory}: publishers do not wake it",
            )
        if att.words is not None:  # unnamed: what it has not taken yet, from its panel
            backlog = max(0, att.words[att.base + PUT_N] - att.words[att.base + TAKEN_N])
        elif att.log:
            return SubscriptionStatus(True)
        return SubscriptionStatus(True, backlog=int(backlog))

    def stats(self) -> dict[str, Any]:
        return {
            "sent": self._publisher.sent.value,
            "delivered": self._reader.delivered.value,
            "unroutable": self._publisher.unroutable.value,
            "dropped": self._publisher.dropped.value + self._reader.cursors.dropped,
            "callback_errors": self._reader.callback_errors.value,
            "decode_errors": self._reader.decode_errors.value,
            "lag_skips": self._reader.cursors.skipped.value,
            "subscriptions": len(self._attachments),
        }

    def close(self) -> None:
        if self._closed:
            return
        with self._lock:
            atts = list(self._attachments.values())
            self._attachments.clear()
        for att in atts:
            try:
                self._detach(att)
            except LocalStoreError as exc:
                log.warning("closing: %s", exc)
        for backend in self._backends:
            backend.close()
        self._closed = True
        self._reader.stop()
        self._hub.bell.close()
        self._store.close()

    def _check_open(self) -> None:
        if self._closed:
            raise TransportClosedError("LocalTransport is closed; create a new one")

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._attachments)} subscriptions"
        return f"LocalTransport({str(self.directory)!r}, {state})"
