"""The subscribing side: one pub/sub connection, one reader thread, health checks, resubscribe.

Exact topics use ``SUBSCRIBE``; wildcard patterns ``PSUBSCRIBE`` a glob that may be broader
than the pattern (Redis's ``*`` also matches dots), and every message is filtered with
:func:`eventforge.topics.topic_matches`, so ``*`` is one segment and ``**`` any number.

The reader never trusts a quiet socket: after ``health_check_interval`` seconds without any
data it sends ``PING``, and when no answer comes within ``ping_timeout`` the link is declared
dead (a paused or half-open server), the connection is dropped and a new one is made with
capped exponential backoff. Every channel and pattern is subscribed again on the new
connection. Messages published while the link was down are lost (Redis pub/sub is
at-most-once); the stats count disconnects, health-check failures and resubscriptions.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from eventforge.errors import ProtocolError, TransportClosedError, TransportError
from eventforge.message import Message
from eventforge.topics import topic_matches

from ._connect import describe_error, import_redis, is_fatal
from ._routing import glob_for

if TYPE_CHECKING:
    from eventforge.wire import WireCodec

    from ._connect import RedisSettings

__all__ = ["Subscriber"]

log = logging.getLogger("eventforge.transports.redis")

_MAX_BACKOFF = 1.0
_POLL = 0.2


class _Sub:
    __slots__ = ("callback", "id", "key", "pattern", "wild")

    def __init__(
        self,
        sub_id: str,
        pattern: str,
        key: tuple[bytes, bytes],
        callback: Callable[[Message], None],
    ) -> None:
        self.id = sub_id
        self.pattern = pattern
        self.key = key
        self.wild = key[0] == b"p"
        self.callback = callback


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
        on_callback_error: Callable[[Message, BaseException], None],
    ) -> None:
        self._settings = settings
        self._response_error = import_redis().exceptions.ResponseError
        self._codec = codec
        self._hc_interval = health_check_interval
        self._ping_timeout = ping_timeout
        self._on_callback_error = on_callback_error
        self._by_key: dict[tuple[bytes, bytes], tuple[_Sub, ...]] = {}
        self._subs: dict[str, _Sub] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._confirmed: set[tuple[bytes, bytes]] = set()
        self._confirm = threading.Condition(self._lock)
        self._conn: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._fatal: TransportError | None = None
        self._refusals = 0
        self._last_refusal: TransportError | None = None
        self._connected_once = False
        self.stats_counters = {
            "received": 0,
            "delivered": 0,
            "malformed": 0,
            "filtered": 0,
            "disconnects": 0,
            "health_check_failures": 0,
            "resubscribes": 0,
            "connect_failures": 0,
            "subscribe_errors": 0,
        }

    # -- subscriptions ---------------------------------------------------------------------------

    def add(self, pattern: str, callback: Callable[[Message], None], timeout: float) -> str:
        """Subscribe and wait until Redis confirmed it (so a later publish is delivered)."""
        if self._fatal is not None:
            raise self._fatal
        glob = glob_for(pattern)
        key = (b"s", pattern.encode()) if glob is None else (b"p", glob.encode())
        sub = _Sub(f"redis-{next(self._ids)}", pattern, key, callback)
        with self._lock:
            existing = self._by_key.get(key, ())
            self._by_key[key] = (*existing, sub)
            self._subs[sub.id] = sub
            refusals = self._refusals
        self._ensure_thread()
        if not existing:
            self._send_subscribe([key])
        if threading.current_thread() is self._thread:
            # Called from a callback: the confirmation can only be read after it returns.
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
        """Drop a local subscription; unsubscribe in Redis when it was the last on its key."""
        with self._lock:
            sub = self._subs.pop(sub_id, None)
            if sub is None:
                return False
            rest = tuple(s for s in self._by_key.get(sub.key, ()) if s.id != sub_id)
            if rest:
                self._by_key[sub.key] = rest
                return True
            self._by_key.pop(sub.key, None)
            self._confirmed.discard(sub.key)
        command = "UNSUBSCRIBE" if sub.key[0] == b"s" else "PUNSUBSCRIBE"
        self._write(command, sub.key[1])
        return True

    def __len__(self) -> int:
        return len(self._subs)

    def close(self) -> None:
        """Stop the reader and drop the connection."""
        self._stop.set()
        with self._write_lock:
            conn = self._conn
        if conn is not None:
            try:
                conn.disconnect()
            except OSError:
                pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        with self._lock:
            self._subs.clear()
            self._by_key.clear()

    def stats(self) -> dict[str, Any]:
        """Reader counters plus the live subscription counts."""
        with self._lock:
            channels = sum(1 for k in self._by_key if k[0] == b"s")
            patterns = len(self._by_key) - channels
        return {
            **self.stats_counters,
            "subscriptions": len(self._subs),
            "redis_channels": channels,
            "redis_patterns": patterns,
            "connected": self._conn is not None,
        }

    # -- connection --------------------------------------------------------------------------------

    def _ensure_thread(self) -> None:
        if self._stop.is_set():
            raise TransportClosedError("RedisTransport is closed; create a new one")
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="eventforge-redis-subscriber", daemon=True
                )
                self._thread.start()

    def _write(self, *args: Any) -> None:
        with self._write_lock:
            conn = self._conn
            if conn is None:
                return  # the reader resubscribes everything when it connects
            try:
                conn.send_command(*args, check_health=False)
            except Exception as exc:  # the reader notices the broken link and reconnects
                log.debug("pub/sub write failed (reader will reconnect): %s", exc)

    def _send_subscribe(self, keys: list[tuple[bytes, bytes]]) -> None:
        channels = [k[1] for k in keys if k[0] == b"s"]
        patterns = [k[1] for k in keys if k[0] == b"p"]
        if channels:
            self._write("SUBSCRIBE", *channels)
        if patterns:
            self._write("PSUBSCRIBE", *patterns)

    def _run(self) -> None:
        backoff = 0.05
        while not self._stop.is_set():
            conn = self._settings.connection(socket_timeout=self._ping_timeout)
            try:
                conn.connect()
            except Exception as exc:
                conn.disconnect()
                error = describe_error(exc, self._settings, "connecting the subscriber")
                self.stats_counters["connect_failures"] += 1
                if is_fatal(error):
                    log.error("Redis subscriber stopped: %s", error)
                    with self._confirm:
                        self._fatal = error
                        self._confirm.notify_all()
                    return
                log.warning(
                    "Redis subscriber cannot connect (retrying in %.2fs): %s", backoff, error
                )
                self._stop.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
                continue
            backoff = 0.05
            with self._lock:
                keys = list(self._by_key)
            with self._write_lock:
                self._conn = conn
            if self._connected_once and keys:
                self.stats_counters["resubscribes"] += 1
                log.info(
                    "Redis subscriber reconnected; resubscribing %d channel(s)/pattern(s)",
                    len(keys),
                )
            self._connected_once = True
            self._send_subscribe(keys)
            try:
                self._read(conn)
            except _HealthCheckFailed:
                self.stats_counters["health_check_failures"] += 1
                log.warning(
                    "Redis at %s did not answer a health-check PING within %.1fs; reconnecting",
                    self._settings.address,
                    self._ping_timeout,
                )
            except Exception as exc:
                if not self._stop.is_set():
                    log.warning("Redis subscriber link lost: %s", exc)
            finally:
                with self._write_lock:
                    self._conn = None
                with self._confirm:
                    self._confirmed.clear()
                try:
                    conn.disconnect()
                except OSError:
                    pass
            if not self._stop.is_set():
                self.stats_counters["disconnects"] += 1

    def _read(self, conn: Any) -> None:
        last_rx = time.monotonic()
        ping_at: float | None = None
        handle = self._handle
        while not self._stop.is_set():
            if conn.can_read(timeout=_POLL):
                try:
                    reply = conn.read_response(disable_decoding=True)
                except self._response_error as exc:  # e.g. NOPERM for one channel
                    self._refuse(exc)
                    continue
                last_rx = time.monotonic()
                ping_at = None
                handle(reply)
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
        self.stats_counters["subscribe_errors"] += 1
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
            self._dispatch(self._by_key.get((b"s", reply[1]), ()), reply[2])
        elif kind == b"pmessage":
            self._dispatch(self._by_key.get((b"p", reply[1]), ()), reply[3])
        elif kind in (b"subscribe", b"psubscribe"):
            key = (b"s" if kind == b"subscribe" else b"p", reply[1])
            with self._confirm:
                if key in self._by_key:
                    self._confirmed.add(key)
                self._confirm.notify_all()

    def _dispatch(self, subs: tuple[_Sub, ...], data: bytes) -> None:
        counters = self.stats_counters
        counters["received"] += 1
        if not subs:
            return
        try:
            message = self._codec.decode(data)
        except ProtocolError as exc:
            counters["malformed"] += 1
            log.warning("dropped a malformed message from Redis pub/sub: %s", exc)
            return
        for sub in subs:
            if sub.wild and not topic_matches(sub.pattern, message.topic):
                counters["filtered"] += 1
                continue
            try:
                sub.callback(message)
            except Exception as exc:
                self._on_callback_error(message, exc)
            counters["delivered"] += 1
