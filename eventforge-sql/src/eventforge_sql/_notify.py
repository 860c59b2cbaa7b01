"""Pub/sub over PostgreSQL ``LISTEN/NOTIFY``: at-most-once, for the ``sql`` transport.

Every message is one ``NOTIFY`` on the transport's channel carrying the wire envelope; each
transport listens on the channel with a connection of its own and hands the messages whose
topic matches a subscription to its callbacks (wildcards are matched here). What PostgreSQL
offers, and so what this offers: a notification reaches the sessions listening when it is
sent, in the order one session sent them; one sent while a listener is disconnected (a
database restart, a broken link) is lost for that listener; a payload is at most 8000 bytes.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from typing import Any

from eventforge.errors import FrameTooLarge, TransportClosedError
from eventforge.message import Message
from eventforge.topics import topic_matches, validate_pattern, validate_topic
from eventforge.transport import Backoff
from eventforge.wire import decode_envelope, encode_envelope
from sqlalchemy.engine import Engine

__all__ = ["MAX_NOTIFY_PAYLOAD", "NotifyBus"]

log = logging.getLogger("eventforge_sql.pubsub")

MAX_NOTIFY_PAYLOAD = 7999
"""PostgreSQL's limit on a NOTIFY payload (8000 bytes, less one)."""


def _driver_connection(engine: Engine) -> Any:
    """A psycopg connection of its own (detached from the pool), in autocommit."""
    pooled = engine.raw_connection()
    conn: Any = pooled.driver_connection
    pooled.detach()  # ours now: the pool neither reuses nor resets it
    conn.rollback()
    conn.autocommit = True
    return conn


class NotifyBus:
    """One transport's sender and listener on ``channel``."""

    def __init__(self, engine: Engine, channel: str) -> None:
        self.engine = engine
        self.channel = channel
        self._subs: dict[str, tuple[str, Any]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._closed = threading.Event()
        self._listening = threading.Event()
        self._sender: Any = None
        self._listener: Any = None
        self.counters = {"sent": 0, "delivered": 0, "callback_errors": 0, "reconnects": 0}
        self._thread = threading.Thread(
            target=self._listen, name="eventforge-sql-notify", daemon=True
        )
        self._thread.start()
        self._listening.wait(10)

    # -- sending --------------------------------------------------------------------------

    def send(self, message: Message) -> None:
        self._check_open()
        validate_topic(message.topic)
        payload = encode_envelope(message).decode("utf-8")
        if len(payload.encode("utf-8")) > MAX_NOTIFY_PAYLOAD:
            raise FrameTooLarge(len(payload.encode("utf-8")), MAX_NOTIFY_PAYLOAD)
        with self._send_lock:
            for attempt in (1, 2):  # once more on a fresh connection after a broken one
                try:
                    if self._sender is None:
                        self._sender = _driver_connection(self.engine)
                    self._sender.execute("SELECT pg_notify(%s, %s)", (self.channel, payload))
                    break
                except Exception:
                    self._drop_sender()
                    if attempt == 2:
                        raise
        self.counters["sent"] += 1

    def _drop_sender(self) -> None:
        if self._sender is not None:
            try:
                self._sender.close()
            except Exception:
                pass
            self._sender = None

    # -- subscribing ----------------------------------------------------------------------

    def subscribe(self, pattern: str, callback: Any) -> str:
        self._check_open()
        validate_pattern(pattern)
        subscription_id = f"notify-{next(self._ids)}"
        with self._lock:
            self._subs[subscription_id] = (pattern, callback)
        return subscription_id

    def unsubscribe(self, subscription_id: str) -> bool:
        with self._lock:
            return self._subs.pop(subscription_id, None) is not None

    def receive(self, topic: str, timeout: float | None) -> Message | None:
        self._check_open()
        got: queue.Queue[Message] = queue.Queue()
        subscription = self.subscribe(topic, got.put)
        try:
            return got.get(timeout=timeout)
        except queue.Empty:
            return None
        finally:
            self.unsubscribe(subscription)

    # -- the listener thread ----------------------------------------------------------------

    def _listen(self) -> None:
        backoff = Backoff(initial=0.1, cap=5.0)
        failures = 0
        while not self._closed.is_set():
            try:
                self._listener = _driver_connection(self.engine)
                self._listener.execute(f'LISTEN "{self.channel}"')
                self._listening.set()
                failures = 0
                while not self._closed.is_set():
                    for note in self._listener.notifies(timeout=0.2):
                        self._dispatch(note.payload)
            except Exception:
                if self._closed.is_set():
                    break
                failures += 1
                self.counters["reconnects"] += 1
                log.warning(
                    "sql pub/sub: listening on %r failed; reconnecting (notifications sent "
                    "meanwhile are lost: LISTEN/NOTIFY is at-most-once)",
                    self.channel,
                    exc_info=True,
                )
                self._listening.set()
                self._closed.wait(backoff.delay(failures))
            finally:
                if self._listener is not None:
                    try:
                        self._listener.close()
                    except Exception:
                        pass
                    self._listener = None

    def _dispatch(self, payload: str) -> None:
        try:
            message = decode_envelope(payload)
        except Exception:
            log.warning("sql pub/sub: dropped a notification that is no eventforge envelope")
            return
        with self._lock:
            targets = [
                cb for pattern, cb in self._subs.values() if topic_matches(pattern, message.topic)
            ]
        for callback in targets:
            try:
                callback(message)
                self.counters["delivered"] += 1
            except Exception:
                self.counters["callback_errors"] += 1
                log.warning("sql pub/sub: a subscription callback raised", exc_info=True)

    def _check_open(self) -> None:
        if self._closed.is_set():
            raise TransportClosedError("sql transport is closed")

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._thread.join(5)
        with self._send_lock:
            self._drop_sender()
