"""The subscribing side: one pub/sub connection, one reader thread, one delivery thread.

Exact topics use ``SUBSCRIBE``; wildcard patterns ``PSUBSCRIBE`` a glob that may be broader
than the pattern (Redis's ``*`` also matches dots), and every message is filtered with
:func:`eventforge.topics.topic_matches`, so ``*`` is one segment and ``**`` any number.

The reader thread only reads: it hands what it read in one go (every reply already buffered,
up to 256) as one batch to a :class:`~eventforge.transport.DeliveryThread`, which decodes the
messages and runs the callbacks in arrival order, so a slow callback never delays reading, the health check or the delivery of
callbacks marked :func:`~eventforge.transport.nonblocking` (reply waiters, hand-offs to a
handler's own thread), which run on the reader itself. When the callbacks fall
``max_delivery_backlog`` messages behind, new messages are dropped and counted
(``delivery_dropped``) instead of piling up without bound.

The reader never trusts a quiet socket: after ``health_check_interval`` seconds without any
data it sends ``PING``, and when no answer comes within ``ping_timeout`` the link is declared
dead (a paused or half-open server). The connection is supervised by a
:class:`~eventforge.transport.ThreadSupervisor`: a dead link is dropped, a new one is made along
the transport's backoff curve, and every channel and pattern is subscribed again on it.
Messages published while the link was down are lost (Redis pub/sub is at-most-once); the stats
count disconnects, health-check failures and resubscriptions.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from eventforge.errors import ProtocolError, TransportClosedError, TransportError
from eventforge.message import Message
from eventforge.topics import topic_matches
from eventforge.transport import (
    Backoff,
    Counter,
    DeliveryThread,
    ThreadSupervisor,
    is_nonblocking,
)
from eventforge.wire import WireCodec

from ._connect import RedisSettings, describe_error, import_redis, is_fatal
from ._routing import glob_for

__all__ = ["Subscriber"]

log = logging.getLogger("eventforge.transports.redis")

_POLL = 0.2
_BATCH = 256
"""Replies the reader takes in one go (while more are buffered) before handing them over."""

_Key = tuple[bytes, bytes]


class _Sub:
    __slots__ = ("active", "callback", "id", "inline", "key", "pattern", "wild")

    def __init__(
        self,
        sub_id: str,
        pattern: str,
        key: _Key,
        callback: Callable[[Message], None],
    ) -> None:
        self.id = sub_id
        self.pattern = pattern
        self.key = key
        self.wild = key[0] == b"p"
        self.callback = callback
        self.inline = is_nonblocking(callback)
        self.active = True


class _Route:
    """The subscriptions of one channel or glob, split by where their callbacks run."""

    __slots__ = ("inline", "subs", "threaded")

    def __init__(self, subs: tuple[_Sub, ...]) -> None:
        self.subs = subs
        self.inline = tuple(s for s in subs if s.inline)
        self.threaded = tuple(s for s in subs if not s.inline)


class _HealthCheckFailed(Exception):
    pass


class Subscriber:
    """Local subscriptions multiplexed over one Redis pub/sub connection."""

    def __init__(
        self,
        settings: RedisSettings,
        codec: WireCodec,
        *,
        health_check_interval: float,
        ping_timeout: float,
        max_backlog: int,
        backoff: Backoff,
        on_callback_error: Callable[[Message, BaseException], None],
    ) -> None:
        self._settings = settings
        self._response_error = import_redis().exceptions.ResponseError
        self._codec = codec
        self._hc_interval = health_check_interval
        self._ping_timeout = ping_timeout
        self._max_backlog = max_backlog
        self._on_callback_error = on_callback_error
        self._by_key: dict[_Key, _Route] = {}
        self._subs: dict[str, _Sub] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._confirmed: set[_Key] = set()
        self._sent: set[_Key] = set()  # subscribed on the current connection (under _write_lock)
        self._confirm = threading.Condition(self._lock)
        self._conn: Any = None
        self._delivery: DeliveryThread | None = None
        self._batch: list[tuple[tuple[_Sub, ...], bytes | Message]] = []
        # Messages handed to the delivery thread, and those it took up: each written by one
        # thread only, so their difference is the backlog without a lock.
        self._handed = 0
        self._taken = 0
        self._dropped = 0
        self._closed = False
        self._fatal: TransportError | None = None
        self._refusals = 0
        self._last_refusal: TransportError | None = None
        self._connected_once = False
        self._supervisor: ThreadSupervisor[Any] = ThreadSupervisor(
            "eventforge-redis-subscriber",
            self._connect,
            self._serve,
            restore=self._restore,
            release=_disconnect,
            fatal=is_fatal,
            on_failed=self._failed,
            interrupt=self._interrupt,
            backoff=backoff,
        )
        self._received = Counter()
        self._delivered = Counter()
        self._malformed = Counter()
        self._filtered = Counter()
        self._health_check_failures = Counter()
        self._resubscribes = Counter()
        self._subscribe_errors = Counter()

    # -- subscriptions ---------------------------------------------------------------------------

    def add(self, pattern: str, callback: Callable[[Message], None], timeout: float) -> str:
        """Subscribe and wait until Redis confirmed it (so a later publish is delivered)."""
        if self._fatal is not None:
            raise self._fatal
        glob = glob_for(pattern)
        key = (b"s", pattern.encode()) if glob is None else (b"p", glob.encode())
        sub = _Sub(f"redis-{next(self._ids)}", pattern, key, callback)
        with self._lock:
            route = self._by_key.get(key)
            existing = route.subs if route is not None else ()
            self._by_key[key] = _Route((*existing, sub))
            self._subs[sub.id] = sub
            refusals = self._refusals
        self._ensure_threads()
        if not existing:
            self._send_subscribe([key])
        if self._supervisor.in_thread():
            # Called from a callback on the reader: the confirmation is read after it returns.
            return sub.id
        deadline = time.monotonic() + timeout
        with self._confirm:
            while key not in self._confirmed:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._fatal is not None or self._refusals > refusals:
                    break
                self._confirm.wait(remaining)
            confirmed = key in self._confirmed
            refused = self._last_refusal if self._refusals > refusals else None
        if not confirmed:
            self.remove(sub.id)
            if self._fatal is not None:
                raise self._fatal
            if refused is not None:
                raise refused
            raise TransportError(
                f"subscribing to {pattern!r} was not confirmed by Redis at "
                f"{self._settings.address} within {timeout:.1f}s; is the server reachable?"
            )
        return sub.id

    def remove(self, sub_id: str) -> bool:
        """Drop a local subscription; unsubscribe in Redis when it was the last on its key.

        Messages of the subscription still waiting for the delivery thread are not delivered.
        """
        with self._lock:
            sub = self._subs.pop(sub_id, None)
            if sub is None:
                return False
            sub.active = False
            route = self._by_key.get(sub.key)
            rest = tuple(s for s in route.subs if s.id != sub_id) if route is not None else ()
            if rest:
                self._by_key[sub.key] = _Route(rest)
                return True
            self._by_key.pop(sub.key, None)
            self._confirmed.discard(sub.key)
        command = "UNSUBSCRIBE" if sub.key[0] == b"s" else "PUNSUBSCRIBE"
        with self._write_lock:
            self._sent.discard(sub.key)
            self._write_locked(command, sub.key[1])
        return True

    def __len__(self) -> int:
        return len(self._subs)

    def __contains__(self, sub_id: object) -> bool:
        return sub_id in self._subs

    def close(self) -> None:
        """Stop the reader, drop the connection, end the delivery thread."""
        with self._lock:
            self._closed = True
            for sub in self._subs.values():
                sub.active = False
            self._subs.clear()
            self._by_key.clear()
        self._supervisor.stop()
        if self._delivery is not None:
            self._delivery.stop()

    def stats(self) -> dict[str, Any]:
        """Reader and delivery counters plus the live subscription counts."""
        with self._lock:
            channels = sum(1 for k in self._by_key if k[0] == b"s")
            patterns = len(self._by_key) - channels
        supervised = self._supervisor.stats()
        return {
            "received": self._received.value,
            "delivered": self._delivered.value,
            "malformed": self._malformed.value,
            "filtered": self._filtered.value,
            "disconnects": supervised["disconnects"],
            "health_check_failures": self._health_check_failures.value,
            "resubscribes": self._resubscribes.value,
            "connect_failures": supervised["failed_connect_attempts"],
            "subscribe_errors": self._subscribe_errors.value,
            "delivery_dropped": self._dropped,
            "delivery_backlog": self._handed - self._taken,
            "subscriptions": len(self._subs),
            "redis_channels": channels,
            "redis_patterns": patterns,
            "connected": None if self._delivery is None else self._conn is not None,
            "subscriber_state": supervised["state"],
        }

    # -- connection (supervised) -----------------------------------------------------------------

    def _ensure_threads(self) -> None:
        with self._lock:
            if self._closed:
                raise TransportClosedError("RedisTransport is closed; create a new one")
            if self._delivery is None:
                # Items are batches of at least one message each: the message bound below is
                # always reached first.
                self._delivery = DeliveryThread(
                    "eventforge-redis-delivery", self._deliver_batch, self._max_backlog
                )
                self._supervisor.start_in_background()

    def _connect(self) -> Any:
        conn = self._settings.connection(socket_timeout=self._ping_timeout)
        try:
            conn.connect()
        except Exception as exc:
            conn.disconnect()
            raise describe_error(exc, self._settings, "connecting the subscriber") from exc
        return conn

    def _restore(self, conn: Any) -> None:
        """Use ``conn`` and subscribe every channel and pattern on it.

        Under the write lock, so that a subscription added meanwhile is sent exactly once:
        either it is among the keys subscribed here, or it is sent by ``add`` afterwards.
        """
        with self._write_lock:
            self._conn = conn
            self._sent.clear()
            with self._lock:
                keys = list(self._by_key)
            self._subscribe_locked(keys)
        if self._connected_once and keys:
            self._resubscribes.bump()
            log.info(
                "Redis subscriber reconnected; resubscribing %d channel(s)/pattern(s)", len(keys)
            )
        self._connected_once = True

    def _serve(self, conn: Any) -> None:
        try:
            self._read(conn)
        except _HealthCheckFailed:
            self._health_check_failures.bump()
            log.warning(
                "Redis at %s did not answer a health-check PING within %.1fs; reconnecting",
                self._settings.address,
                self._ping_timeout,
            )
        finally:
            with self._write_lock:
                self._conn = None
            with self._confirm:
                self._confirmed.clear()

    def _failed(self, exc: BaseException) -> None:
        error = exc if isinstance(exc, TransportError) else TransportError(str(exc))
        log.error("Redis subscriber stopped: %s", error)
        with self._confirm:
            self._fatal = error
            self._confirm.notify_all()

    def _interrupt(self) -> None:
        with self._write_lock:
            conn = self._conn
        if conn is not None:
            conn.disconnect()

    def _write(self, *args: Any) -> None:
        with self._write_lock:
            self._write_locked(*args)

    def _write_locked(self, *args: Any) -> None:
        conn = self._conn
        if conn is None:
            return  # the reader resubscribes everything when it connects
        try:
            conn.send_command(*args, check_health=False)
        except Exception as exc:  # the reader notices the broken link and reconnects
            log.debug("pub/sub write failed (reader will reconnect): %s", exc)

    def _send_subscribe(self, keys: list[_Key]) -> None:
        with self._write_lock:
            self._subscribe_locked(keys)

    def _subscribe_locked(self, keys: list[_Key]) -> None:
        """SUBSCRIBE / PSUBSCRIBE the ``keys`` not yet sent on this connection (once each, so
        that one refusal is one refused subscription)."""
        if self._conn is None:
            return  # sent by _restore once connected
        keys = [k for k in keys if k not in self._sent]
        self._sent.update(keys)
        channels = [k[1] for k in keys if k[0] == b"s"]
        patterns = [k[1] for k in keys if k[0] == b"p"]
        if channels:
            self._write_locked("SUBSCRIBE", *channels)
        if patterns:
            self._write_locked("PSUBSCRIBE", *patterns)

    # -- the reader thread ---------------------------------------------------------------------------

    def _read(self, conn: Any) -> None:
        last_rx = time.monotonic()
        ping_at: float | None = None
        handle = self._handle
        supervisor = self._supervisor
        while not supervisor.stopping():
            if conn.can_read(timeout=_POLL):
                try:
                    for _ in range(_BATCH):  # what is buffered already, handed over at once
                        try:
                            reply = conn.read_response(disable_decoding=True)
                        except self._response_error as exc:  # e.g. NOPERM for one channel
                            self._refuse(exc)
                        else:
                            handle(reply)
                        if not conn.can_read(timeout=0):
                            break
                finally:
                    if self._batch:
                        self._hand_over()
                last_rx = time.monotonic()
                ping_at = None
                continue
            now = time.monotonic()
            if ping_at is not None:
                if now - ping_at > self._ping_timeout:
                    raise _HealthCheckFailed()
            elif now - last_rx >= self._hc_interval:
                ping_at = now
                self._write("PING")

    def _refuse(self, exc: Exception) -> None:
        error = describe_error(exc, self._settings, "subscribing")
        self._subscribe_errors.bump()
        log.error("Redis refused a subscription: %s", error)
        with self._confirm:
            self._refusals += 1
            self._last_refusal = error
            self._confirm.notify_all()

    def _handle(self, reply: Any) -> None:
        if not isinstance(reply, list):
            return  # +PONG outside subscribed mode
        kind = reply[0]
        if kind == b"message":
            self._dispatch(self._by_key.get((b"s", reply[1])), reply[2])
        elif kind == b"pmessage":
            self._dispatch(self._by_key.get((b"p", reply[1])), reply[3])
        elif kind in (b"subscribe", b"psubscribe"):
            key = (b"s" if kind == b"subscribe" else b"p", reply[1])
            with self._confirm:
                if key in self._by_key:
                    self._confirmed.add(key)
                self._confirm.notify_all()

    def _dispatch(self, route: _Route | None, data: bytes) -> None:
        """On the reader: run nonblocking callbacks; queue the message for the others."""
        self._received.bump()
        if route is None:
            return
        if not route.inline:
            if route.threaded:
                self._batch.append((route.threaded, data))
            return
        message = self._decode(data)
        if message is None:
            return
        self._deliver(route.inline, message)
        if route.threaded:
            self._batch.append((route.threaded, message))

    def _hand_over(self) -> None:
        """Give the batch read so far to the delivery thread, within ``max_delivery_backlog``."""
        batch, self._batch = self._batch, []
        room = max(0, self._max_backlog - (self._handed - self._taken))
        if len(batch) > room:
            before = self._dropped
            self._dropped += len(batch) - room
            del batch[room:]
            if _crossed(before, self._dropped):
                log.warning(
                    "Redis subscriber: %d message(s) dropped so far: the subscription callbacks "
                    "are %d messages behind (max_delivery_backlog); make them faster or hand "
                    "slow work to a queue or an executor",
                    self._dropped,
                    self._max_backlog,
                )
            if not batch:
                return
        self._handed += len(batch)
        delivery = self._delivery
        assert delivery is not None
        delivery.put((batch,))

    # -- the delivery thread -------------------------------------------------------------------------

    def _deliver_batch(self, batch: list[tuple[tuple[_Sub, ...], bytes | Message]]) -> None:
        deliver = self._deliver
        for subs, item in batch:
            self._taken += 1  # taken up: no longer waiting, even while its callback runs
            message = item if isinstance(item, Message) else self._decode(item)
            if message is not None:
                deliver(subs, message)

    def _decode(self, data: bytes) -> Message | None:
        try:
            return self._codec.decode(data)
        except ProtocolError as exc:
            self._malformed.bump()
            log.warning("dropped a malformed message from Redis pub/sub: %s", exc)
            return None

    def _deliver(self, subs: tuple[_Sub, ...], message: Message) -> None:
        for sub in subs:
            if not sub.active:
                continue
            if sub.wild and not topic_matches(sub.pattern, message.topic):
                self._filtered.bump()
                continue
            try:
                sub.callback(message)
            except Exception as exc:
                self._on_callback_error(message, exc)
            self._delivered.bump()


def _disconnect(conn: Any) -> None:
    conn.disconnect()


def _crossed(before: int, after: int) -> bool:
    """Whether a drop count went past 1, 10, 100, 1000 or a multiple of 10,000 (worth a log)."""
    return any(before < mark <= after for mark in (1, 10, 100, 1000)) or (
        after // 10_000 > before // 10_000
    )
