"""The publishing side: a writer thread that pipelines queued publishes.

``send`` encodes the message in the caller's thread (so encoding errors and oversize envelopes
raise there, before anything reaches Redis) and queues it; the writer thread takes everything
queued, packs one route-script call per message into a single write, and reads the replies.
Under load one round trip carries hundreds of messages; an idle publisher sends each message
at once. Order is kept.

``submit_counted`` (behind ``RedisTransport.send_counted``) queues its message into the same
writer, so it stays in order with earlier ``send`` calls, and waits for that message's reply:
the route script's ``[receivers of PUBLISH, group streams appended to]``.

Fault behaviour (at-most-once, like ``PUBLISH`` itself): when the link fails, the messages of
the batch on the wire and those still queued are dropped and counted in ``dropped``, and
``send`` raises :class:`~eventforge.errors.TransportError` until the writer has reconnected.
An error reply (for example an ACL ``NOPERM``) is counted and raised by the next ``send`` or
``flush``. Credentials errors stop the writer for good.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from eventforge.errors import TransportClosedError, TransportError

from ._connect import describe_error, import_redis, is_fatal
from ._routing import ROUTE_SCRIPT

if TYPE_CHECKING:
    from ._connect import RedisSettings

__all__ = ["Counted", "Publisher"]

log = logging.getLogger("eventforge.transports.redis")

_MAX_BATCH = 1000
_MAX_BACKOFF = 1.0


class Counted:
    """The reply slot of one counted publish, filled by the writer thread."""

    __slots__ = ("done", "error", "groups", "receivers")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: TransportError | None = None
        self.receivers = 0
        self.groups = 0

    def resolve(self, reply: Any) -> None:
        self.receivers, self.groups = int(reply[0]), int(reply[1])
        self.done.set()

    def fail(self, error: TransportError) -> None:
        self.error = error
        self.done.set()


# One queued publish: topic, envelope, and the reply slot of a counted publish (else None).
_Item = tuple[bytes, bytes, "Counted | None"]


class Publisher:
    """Owns one connection and the writer thread; thread-safe ``submit``."""

    def __init__(
        self,
        settings: RedisSettings,
        *,
        prefix: str,
        group_maxlen: int,
        max_pending: int,
        idle_check: float,
    ) -> None:
        self._settings = settings
        self._idle_check = idle_check
        self._last_io = time.monotonic()
        self._redis = import_redis()
        self._sha = hashlib.sha1(ROUTE_SCRIPT.encode()).hexdigest().encode()
        self._tail = _bulk(prefix.encode()) + _bulk(str(group_maxlen).encode())
        self._head = b"*7\r\n$7\r\nEVALSHA\r\n$40\r\n" + self._sha + b"\r\n$1\r\n0\r\n"
        self._max_pending = max_pending
        self._pending: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._writer_waiting = False
        self._inflight = 0
        self._closing = False
        self._down: TransportError | None = None
        self._fatal: TransportError | None = None
        self._errors: deque[TransportError] = deque(maxlen=100)
        self._conn: Any = None
        self.published = 0
        self.dropped = 0
        self.errors = 0
        self.reconnects = 0
        self.routed_to_groups = 0
        self.idle_reconnects = 0
        self._connect()  # surfaces wrong credentials / NOPERM / unreachable at construction
        self._thread = threading.Thread(
            target=self._run, name="eventforge-redis-publisher", daemon=True
        )
        self._thread.start()

    # -- caller side ---------------------------------------------------------------------------

    def submit(
        self, topic: bytes, data: bytes, timeout: float, counted: Counted | None = None
    ) -> None:
        """Queue one envelope; raise if the link is known down or the backlog stays full."""
        if self._closing:
            raise TransportClosedError("RedisTransport is closed; create a new one")
        if self._fatal is not None:
            raise self._fatal
        if self._errors:
            raise self._errors.popleft()
        down = self._down
        if down is not None:
            self.dropped += 1
            raise TransportError(f"message on {topic.decode()!r} not published: {down}")
        with self._cond:
            if len(self._pending) >= self._max_pending:
                deadline = time.monotonic() + timeout
                while len(self._pending) >= self._max_pending:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._down is not None:
                        raise TransportError(
                            f"{len(self._pending)} publishes are waiting for Redis at "
                            f"{self._settings.address}; message on {topic.decode()!r} not "
                            "published (raise max_pending or slow down)"
                        )
                    self._cond.wait(remaining)
            self._pending.append((topic, data, counted))
            if self._writer_waiting:
                self._cond.notify_all()

    def submit_counted(self, topic: bytes, data: bytes, timeout: float) -> Counted:
        """Queue one envelope behind everything queued before it and wait for its reply.

        Raises :class:`~eventforge.errors.TransportError` when Redis refused it, the link
        failed before the reply came, or the transport was closed meanwhile.
        """
        counted = Counted()
        self.submit(topic, data, timeout, counted)
        while not counted.done.wait(0.5):
            if not self._thread.is_alive():  # stopped by close() or a credentials error
                counted.fail(
                    self._fatal
                    or TransportClosedError("RedisTransport is closed; create a new one")
                )
        if counted.error is not None:
            raise counted.error
        return counted

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued publish reached Redis; raise a pending publish error."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._pending or self._inflight:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining if remaining is not None else 0.5)
        if self._errors:
            raise self._errors.popleft()
        return True

    def close(self, timeout: float) -> None:
        """Send what is queued (within ``timeout``), then stop the writer."""
        if self._closing:
            return
        try:
            self.flush(timeout)
        except TransportError as exc:
            log.warning("publish error while closing: %s", exc)
        with self._cond:
            self._closing = True
            dropped = len(self._pending)
            _fail_waiting(
                self._pending, TransportClosedError("RedisTransport was closed before publishing")
            )
            self._pending.clear()
            self.dropped += dropped
            self._cond.notify_all()
        self._thread.join(timeout)
        conn = self._conn
        if conn is not None:
            conn.disconnect()

    @property
    def link_error(self) -> TransportError | None:
        """Why the writer is disconnected right now (``None`` when connected)."""
        return self._fatal or self._down

    # -- writer thread ---------------------------------------------------------------------------

    def _connect(self) -> None:
        conn = self._settings.connection()
        try:
            conn.connect()
            conn.send_command("SCRIPT", "LOAD", ROUTE_SCRIPT)
            conn.read_response()
        except Exception as exc:
            conn.disconnect()
            raise describe_error(exc, self._settings, "connecting the publisher") from exc
        self._conn = conn

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._writer_waiting = True
                    self._cond.wait()
                    self._writer_waiting = False
                if self._closing:
                    return
                batch = [
                    self._pending.popleft() for _ in range(min(_MAX_BATCH, len(self._pending)))
                ]
                self._inflight = len(batch)
            try:
                self._send(batch)
            except Exception as exc:
                # The batch is lost; a counted publish in it must not wait for a reply.
                _fail_waiting(
                    batch, describe_error(exc, self._settings, "publishing (link failed)")
                )
                self._on_link_failure(exc, len(batch))
            finally:
                with self._cond:
                    self._inflight = 0
                    self._cond.notify_all()
            if self._fatal is not None:
                # Credentials or permissions were refused: retrying cannot help. ``submit``
                # raises this error from now on; anything still queued is dropped and counted.
                with self._cond:
                    lost = len(self._pending)
                    _fail_waiting(list(self._pending), self._fatal)
                    self._pending.clear()
                    self.dropped += lost
                    self._cond.notify_all()
                return

    def _closed_by_peer(self) -> bool:
        """Nothing is ever unsolicited on this connection: readable before a send means the
        server closed it (restart, client timeout), noticed without a round trip."""
        try:
            return bool(self._conn.can_read(timeout=0))
        except Exception:
            return True

    def _check_idle_link(self) -> None:
        """After a quiet spell, PING before sending: a connection the server or a middlebox
        closed meanwhile is replaced instead of costing the next batch."""
        conn = self._conn
        try:
            conn.send_command("PING", check_health=False)
            conn.read_response()
        except Exception as exc:
            log.info("idle publisher connection was closed (%s); reconnecting", exc)
            conn.disconnect()
            self._conn = None
            self._connect()
            self.idle_reconnects += 1

    def _send(self, batch: list[_Item]) -> None:
        if self._conn is None:
            raise TransportError("publisher is not connected")
        if self._closed_by_peer() or time.monotonic() - self._last_io > self._idle_check:
            self._check_idle_link()
        conn = self._conn
        head, tail = self._head, self._tail
        parts: list[bytes] = []
        for topic, data, _ in batch:
            parts += (head, b"$%d\r\n" % len(topic), topic, b"\r\n$%d\r\n" % len(data), data)
            parts.append(b"\r\n" + tail)
        conn.send_packed_command([b"".join(parts)], check_health=False)  # one write per batch
        response_error = self._redis.exceptions.ResponseError
        retry: list[_Item] = []
        routed = 0
        failed = 0
        for item in batch:
            try:
                reply = conn.read_response()
            except response_error as exc:
                if isinstance(exc, self._redis.exceptions.NoScriptError):
                    retry.append(item)
                    continue
                failed += 1
                self.errors += 1
                error = describe_error(exc, self._settings, "publishing")
                if item[2] is None:
                    self._errors.append(error)  # raised by the next send or flush
                else:
                    item[2].fail(error)  # raised by the send_counted waiting for it
                log.error("publish on %r failed: %s", item[0].decode(), exc)
                continue
            routed += reply[1]
            if item[2] is not None:
                item[2].resolve(reply)
        self._last_io = time.monotonic()
        self.published += len(batch) - len(retry) - failed
        self.routed_to_groups += routed
        if retry:  # the server lost its scripts (restarted); load again and resend those
            conn.send_command("SCRIPT", "LOAD", ROUTE_SCRIPT)
            conn.read_response()
            self._send(retry)

    def _on_link_failure(self, exc: BaseException, in_batch: int) -> None:
        error = describe_error(exc, self._settings, "publishing")
        with self._cond:
            lost = in_batch + len(self._pending)
            _fail_waiting(self._pending, TransportError(f"message not published: {error}"))
            self._pending.clear()
            self.dropped += lost
            self._down = error
            self._cond.notify_all()
        log.warning("Redis publisher link failed, %d message(s) dropped: %s", lost, error)
        if self._conn is not None:
            self._conn.disconnect()
            self._conn = None
        backoff = 0.05
        while not self._closing:
            try:
                self._connect()
            except TransportError as failure:
                if is_fatal(failure):
                    self._fatal = failure
                    log.error("Redis publisher stopped: %s", failure)
                    return
                time.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
                continue
            self.reconnects += 1
            self._down = None
            log.info("Redis publisher reconnected to %s", self._settings.address)
            return

    def stats(self) -> dict[str, Any]:
        """Publish counters."""
        return {
            "published": self.published,
            "publish_dropped": self.dropped,
            "publish_errors": self.errors,
            "publisher_reconnects": self.reconnects,
            "publisher_idle_reconnects": self.idle_reconnects,
            "routed_to_groups": self.routed_to_groups,
            "publish_backlog": len(self._pending),
        }


def _fail_waiting(items: Iterable[_Item], error: TransportError) -> None:
    """Wake every counted publish among ``items`` (dropped without a reply) with ``error``."""
    for item in items:
        if item[2] is not None and not item[2].done.is_set():
            item[2].fail(error)


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)
