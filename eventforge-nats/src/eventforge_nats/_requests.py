"""Synchronous requests without a coroutine per call: the caller's thread waits on a lock.

A blocking ``request`` made from a thread other than the connection's loop could run
``nc.request`` on the loop and wait for that coroutine's result, as every other call does;
that costs a task, a ``wait_for`` timer and a chain of futures per request, most of a
request's round trip on loopback. Here the request is published through the transport's
outbox with a reply subject under one wildcard inbox subscription of the transport's own, and
the reply's callback (on the loop) hands the reply to the waiting thread by releasing its
lock: one hop to the loop and one back, nothing else.

A reply whose ``Status`` header is ``503`` is the server saying that nobody is subscribed
(the connection asks for these with ``no_responders``): the request raises
:class:`~eventforge.errors.NoRespondersError` at once, as ``nc.request`` does.
"""

from __future__ import annotations

import _thread
import itertools
from typing import Any

from eventforge.errors import NoRespondersError, TransportClosedError

from ._connection import NatsConnection
from ._outbox import Outbox

__all__ = ["SyncRequests"]

_NO_RESPONDERS = "503"


class _Slot:
    __slots__ = ("lock", "reply")

    def __init__(self) -> None:
        self.lock = _thread.allocate_lock()
        self.lock.acquire()
        self.reply: Any = None


_CLOSED = object()


class SyncRequests:
    """Blocking requests of one transport, answered through one inbox subscription."""

    def __init__(self, conn: NatsConnection, outbox: Outbox) -> None:
        self._conn = conn
        self._outbox = outbox
        self._prefix: str | None = None
        self._waiting: dict[str, _Slot] = {}
        self._ids = itertools.count(1)
        self._closed = False

    def request(self, subject: str, data: bytes, timeout: float) -> Any:
        """Publish ``data`` to ``subject`` and wait for the reply (nats-py's ``Msg``).

        Returns ``None`` after ``timeout`` seconds without a reply.
        """
        prefix = self._prefix
        if prefix is None:
            prefix = self._subscribe()
        reply = f"{prefix}{next(self._ids)}"
        slot = _Slot()
        waiting = self._waiting
        waiting[reply] = slot
        if self._closed:  # close() may have swept the waiting requests before this one
            waiting.pop(reply, None)
            raise TransportClosedError("the NATS transport is closed; create a new one")
        try:
            self._outbox.put(subject, data, reply)
        except BaseException:
            waiting.pop(reply, None)
            raise
        if not slot.lock.acquire(timeout=timeout):
            waiting.pop(reply, None)
            # The reply may have arrived between the timeout and the pop.
            if slot.reply is None:
                return None
        msg = slot.reply
        if msg is _CLOSED:
            raise TransportClosedError("the NATS transport closed while a request was waiting")
        headers = msg.headers
        if headers and headers.get("Status") == _NO_RESPONDERS:
            raise NoRespondersError(subject)
        return msg

    def _subscribe(self) -> str:
        """Subscribe the inbox (once, on the loop); return the prefix of reply subjects."""
        return self._conn.run(self._subscribe_async(), timeout=30)

    async def _subscribe_async(self) -> str:
        if self._prefix is None:
            nc = self._conn.client
            prefix = f"{nc.new_inbox()}."
            await nc.subscribe(f"{prefix}*", cb=self._on_reply)
            self._prefix = prefix
        return self._prefix

    async def _on_reply(self, msg: Any) -> None:
        slot = self._waiting.pop(msg.subject, None)
        if slot is not None:
            slot.reply = msg
            slot.lock.release()

    def close(self) -> None:
        """Wake every waiting request with :class:`TransportClosedError`."""
        self._closed = True
        waiting, self._waiting = self._waiting, {}
        for slot in waiting.values():
            slot.reply = _CLOSED
            slot.lock.release()
