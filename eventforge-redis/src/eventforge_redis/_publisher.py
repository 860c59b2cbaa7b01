"""The publishing side: a writer thread that pipelines queued publishes.

``send`` encodes the message in the caller's thread (so encoding errors and oversize envelopes
raise there, before anything reaches Redis) and queues it; the writer thread takes everything
queued (up to 1000 messages), routes it with one call of the batch route script
(:data:`~eventforge_redis._routing.ROUTE_BATCH_SCRIPT`) per at most 1 MiB of envelopes, all
calls in a single write, and reads one reply per call. Under load one round trip (and, for
topics that reach no group, one script call) carries hundreds of messages; an idle publisher
sends each message at once. Order is kept. The byte bound keeps one script call short: a
running script blocks the server.

Calls are also cut after each message whose topic may go to a competing-consumer group: a
topic whose previous publish was appended to a group stream, or that this publisher has not
published yet (or forgot). Redis hands new stream entries to blocked group readers only between
commands, so one call appending a batch to a group stream would give the whole batch to the
member that reads first; cut there, the members share the messages as they did with one call
per message. So only topics known to reach no group (pub/sub only, or nobody) are batched into
one call. That hint (the last answer per topic, bounded) only shapes the calls: which groups a
message goes to is always decided by the registry in Redis.

``submit_counted`` (behind ``RedisTransport.send_counted``) queues its message into the same
writer, so it stays in order with earlier ``send`` calls, and waits for that message's reply:
the route script's receivers of ``PUBLISH`` and group streams appended to for that message.

Fault behaviour (at-most-once, like ``PUBLISH`` itself): when the link fails, the messages of
the batch on the wire and those still queued are dropped and counted in ``dropped``, and
``send`` raises :class:`~eventforge.errors.TransportError` until the writer has reconnected (a
:class:`~eventforge.transport.ThreadSupervisor` runs the writer: it reconnects along the
transport's backoff curve and loads the route script on every new connection).
A message Redis refuses (for example an ACL ``NOPERM`` on its channel) fails alone: the
others in its script call are published; the refusal is counted in ``errors`` and raised by
the next ``send`` or ``flush`` (or by the ``send_counted`` waiting for that message). A script
call refused as a whole fails each of its messages that way, except ``NOSCRIPT`` (the server
lost its scripts, say by a restart or ``SCRIPT FLUSH``): none of that call ran, so the script
is loaded again and the call resent. Credentials errors stop the writer for good.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

from eventforge.errors import TransportClosedError, TransportError
from eventforge.transport import Backoff, Counter, ThreadSupervisor

from ._connect import RedisSettings, describe_error, import_redis, is_fatal
from ._routing import ROUTE_BATCH_SCRIPT

__all__ = ["Counted", "Publisher"]

log = logging.getLogger("eventforge.transports.redis")

_MAX_BATCH = 1000
# Envelope bytes one script call carries at most (a call carries at least one message).
_MAX_CALL_BYTES = 1 << 20
# Times one batch is resent after NOSCRIPT before its messages are failed instead.
_MAX_NOSCRIPT_RETRIES = 3
# Topics remembered with whether they reached a group (for cutting calls); forgotten all at
# once when full.
_MAX_KNOWN_TOPICS = 4096


class Counted:
    """The reply slot of one counted publish, filled by the writer thread."""

    __slots__ = ("done", "error", "groups", "receivers")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: TransportError | None = None
        self.receivers = 0
        self.groups = 0

    def resolve(self, receivers: int, groups: int) -> None:
        self.receivers, self.groups = receivers, groups
        self.done.set()

    def fail(self, error: TransportError) -> None:
        if self.done.is_set():
            return  # answered already: a later link failure does not undo it
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
        backoff: Backoff,
    ) -> None:
        self._settings = settings
        self._idle_check = idle_check
        self._last_io = time.monotonic()
        self._redis = import_redis()
        sha = hashlib.sha1(ROUTE_BATCH_SCRIPT.encode()).hexdigest().encode()
        # EVALSHA <sha> 0 <prefix> <maxlen>, after the array header that counts the messages.
        self._call_args = (
            b"$7\r\nEVALSHA\r\n$40\r\n"
            + sha
            + b"\r\n$1\r\n0\r\n"
            + _bulk(prefix.encode())
            + _bulk(str(group_maxlen).encode())
        )
        self._settled = 0  # messages of the batch on the wire answered so far
        # topic -> whether its last publish was appended to a group stream (unknown: assume so)
        self._to_groups: dict[bytes, bool] = {}
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
        # Sums of a batch, written by the writer thread alone (``dropped`` under self._cond).
        self.published = 0
        self.routed_to_groups = 0
        self.dropped = 0
        self.errors = Counter()
        self.idle_reconnects = Counter()
        self._supervisor: ThreadSupervisor[Any] = ThreadSupervisor(
            "eventforge-redis-publisher",
            self._open,
            self._serve,
            restore=self._restored,
            release=self._release,
            fatal=is_fatal,
            on_failed=self._failed,
            backoff=backoff,
        )
        # The first connection is made here: wrong credentials, NOPERM or an unreachable
        # server raise from the constructor, once, and nothing is retried.
        self._conn = self._supervisor.start()

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
            with self._cond:
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
            if not self._supervisor.running:  # stopped by close() or a credentials error
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
        self._supervisor.stop(timeout)
        conn = self._conn
        if conn is not None:
            conn.disconnect()

    @property
    def link_error(self) -> TransportError | None:
        """Why the writer is disconnected right now (``None`` when connected)."""
        return self._fatal or self._down

    # -- writer thread ---------------------------------------------------------------------------

    def _open(self) -> Any:
        """A new connection with the route script loaded."""
        conn = self._settings.connection()
        try:
            conn.connect()
            conn.send_command("SCRIPT", "LOAD", ROUTE_BATCH_SCRIPT)
            conn.read_response()
        except Exception as exc:
            conn.disconnect()
            raise describe_error(exc, self._settings, "connecting the publisher") from exc
        return conn

    def _restored(self, conn: Any) -> None:
        """A new connection after a link failure: publishing works again."""
        self._conn = conn
        self._down = None
        log.info("Redis publisher reconnected to %s", self._settings.address)

    def _release(self, conn: Any) -> None:
        current, self._conn = self._conn, None
        conn.disconnect()
        if current is not None and current is not conn:
            current.disconnect()  # the replacement of an idle connection

    def _failed(self, exc: BaseException) -> None:
        """Credentials or permissions were refused on a reconnect: retrying cannot help.

        ``submit`` raises this error from now on; anything still queued is dropped and counted.
        """
        error = exc if isinstance(exc, TransportError) else TransportError(str(exc))
        with self._cond:
            self._fatal = error
            lost = len(self._pending)
            _fail_waiting(list(self._pending), error)
            self._pending.clear()
            self.dropped += lost
            self._cond.notify_all()
        log.error("Redis publisher stopped: %s", error)

    def _serve(self, conn: Any) -> None:
        """The writer loop on ``conn``; raises when the link failed (the supervisor reconnects)."""
        self._conn = conn
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
                    batch[self._settled :],
                    describe_error(exc, self._settings, "publishing (link failed)"),
                )
                # Messages already answered were published (or refused); the rest are lost.
                self._on_link_failure(exc, len(batch) - self._settled)
                raise
            finally:
                with self._cond:
                    self._inflight = 0
                    self._cond.notify_all()

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
            self._conn = self._open()
            self.idle_reconnects.bump()

    def _send(self, batch: list[_Item]) -> None:
        """Route ``batch`` with as few script calls as the byte bound allows, in one write."""
        self._settled = 0
        if self._conn is None:
            raise TransportError("publisher is not connected")
        if self._closed_by_peer() or time.monotonic() - self._last_io > self._idle_check:
            self._check_idle_link()
        conn = self._conn
        todo = batch
        for _ in range(_MAX_NOSCRIPT_RETRIES + 1):
            calls = _split_calls(todo, self._to_groups)
            conn.send_packed_command(
                [b"".join(self._pack(call)) for call in calls], check_health=False
            )
            retry: list[_Item] = []
            for call in calls:
                if not self._read_call(conn, call):
                    retry += call
            self._last_io = time.monotonic()
            if not retry:
                return
            # The server lost its scripts (restarted, SCRIPT FLUSH): none of those calls ran,
            # so load the script again and resend them whole.
            log.info("route script missing on Redis; loading it again, resending %d", len(retry))
            conn.send_command("SCRIPT", "LOAD", ROUTE_BATCH_SCRIPT)
            conn.read_response()
            todo = retry
        error = TransportError(
            f"publishing: Redis at {self._settings.address} kept losing the route script "
            f"(NOSCRIPT {_MAX_NOSCRIPT_RETRIES + 1} times); {len(todo)} message(s) not "
            "published. Is something running SCRIPT FLUSH in a loop?"
        )
        for item in todo:
            self._fail_item(item, error)

    def _pack(self, call: list[_Item]) -> list[bytes]:
        """The RESP encoding of one script call routing ``call``."""
        parts = [b"*%d\r\n" % (5 + 2 * len(call)), self._call_args]
        for topic, data, _ in call:
            parts += (b"$%d\r\n" % len(topic), topic, b"\r\n$%d\r\n" % len(data), data, b"\r\n")
        return parts

    def _read_call(self, conn: Any, call: list[_Item]) -> bool:
        """Read the reply of one script call and settle its messages; ``False`` on NOSCRIPT.

        A reply element that is an error (an exception object in redis-py's list) fails that
        message alone; an error reply for the whole call fails every message of it.
        """
        exceptions = self._redis.exceptions
        try:
            reply = conn.read_response()
        except exceptions.ResponseError as exc:
            if isinstance(exc, exceptions.NoScriptError):
                return False
            for item in call:
                self._fail_item(item, exc)
            self._settled += len(call)
            return True
        if not isinstance(reply, list) or len(reply) != 2 * len(call):
            # Not the script's answer: something is wrong with the link or the server.
            raise TransportError(f"unexpected reply to the route script: {reply!r:.200}")
        published = routed = 0
        to_groups = self._to_groups
        for index, item in enumerate(call):
            receivers = reply[2 * index]
            if isinstance(receivers, BaseException):
                self._fail_item(item, receivers)
                continue
            groups = int(reply[2 * index + 1])
            published += 1
            routed += groups
            if to_groups.get(item[0]) is not (groups > 0):
                if len(to_groups) >= _MAX_KNOWN_TOPICS:
                    to_groups.clear()
                to_groups[item[0]] = groups > 0
            if item[2] is not None:
                item[2].resolve(int(receivers), groups)
        self.published += published
        self.routed_to_groups += routed
        self._settled += len(call)
        return True

    def _fail_item(self, item: _Item, exc: BaseException) -> None:
        """Count a message Redis refused; raise it from the next send/flush or its counter."""
        self.errors.bump()
        error = (
            exc
            if isinstance(exc, TransportError)
            else describe_error(exc, self._settings, "publishing")
        )
        if item[2] is None:
            self._errors.append(error)  # raised by the next send or flush
        else:
            item[2].fail(error)  # raised by the send_counted waiting for it
        log.error("publish on %r failed: %s", item[0].decode(), exc)

    def _on_link_failure(self, exc: BaseException, in_batch: int) -> None:
        """Drop what was queued (counted) and make ``submit`` raise until the link is back."""
        error = describe_error(exc, self._settings, "publishing")
        with self._cond:
            lost = in_batch + len(self._pending)
            _fail_waiting(self._pending, TransportError(f"message not published: {error}"))
            self._pending.clear()
            self.dropped += lost
            self._down = error
            self._cond.notify_all()
        log.warning("Redis publisher link failed, %d message(s) dropped: %s", lost, error)

    def stats(self) -> dict[str, Any]:
        """Publish counters."""
        return {
            "published": self.published,
            "publish_dropped": self.dropped,
            "publish_errors": self.errors.value,
            "publisher_reconnects": self._supervisor.reconnects.value,
            "publisher_state": self._supervisor.state,
            "publisher_idle_reconnects": self.idle_reconnects.value,
            "routed_to_groups": self.routed_to_groups,
            "publish_backlog": len(self._pending),
        }


def _fail_waiting(items: Iterable[_Item], error: TransportError) -> None:
    """Wake every counted publish among ``items`` (dropped without a reply) with ``error``."""
    for item in items:
        if item[2] is not None and not item[2].done.is_set():
            item[2].fail(error)


def _split_calls(batch: list[_Item], to_groups: dict[bytes, bool]) -> list[list[_Item]]:
    """Cut ``batch`` into script calls of at most :data:`_MAX_CALL_BYTES` of envelopes each
    (at least one message per call), keeping order; a message whose topic may reach a group
    (``to_groups`` says so or does not know it) ends its call, so group readers are served
    between such messages."""
    calls: list[list[_Item]] = []
    call: list[_Item] = []
    size = 0
    for item in batch:
        length = len(item[0]) + len(item[1])
        if call and size + length > _MAX_CALL_BYTES:
            calls.append(call)
            call, size = [], 0
        call.append(item)
        size += length
        if to_groups.get(item[0], True):
            calls.append(call)
            call, size = [], 0
    if call:
        calls.append(call)
    return calls


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)
