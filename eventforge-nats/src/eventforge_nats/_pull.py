"""Pull requests to a JetStream consumer, each consumed to its end.

Used by :mod:`eventforge_nats.jetstream`. eventforge issues its own pull requests (the
``$JS.API.CONSUMER.MSG.NEXT`` protocol) instead of nats-py's ``fetch``, so that it controls
their lifetime: see :class:`Puller`.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from ._connection import NatsConnection

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription

__all__ = ["Puller", "close_all"]

log = logging.getLogger("eventforge.transports.nats")

END_GRACE = 2.0
"""How long past a request's expiry its end (a status) may take before the request is lost."""
MIN_LONG_POLL = 1.0
"""The shortest long poll: a fetch with a shorter timeout leaves it running for the next."""


class Puller:
    """One inbox and the pull requests sent with it, each consumed to its end.

    A pull request ends with ``batch`` messages or with a status (404 no messages, 408
    expired, 409 ...). The inbox is reused only once its request has ended, so no request is
    ever left on the server to capture messages nobody waits for (the orphan-request stall of
    some nats-py ``fetch`` versions). A long poll may outlive the ``fetch`` that started it:
    the next ``fetch`` on this inbox picks up where it left off. If a request never ends (the
    link dropped and the server forgot it, or the consumer is gone), the inbox is discarded
    instead of reused.
    """

    consumer_gone: bool
    """The last request was answered "no such consumer": it was deleted, or JetStream is not
    up (yet). :meth:`pull` returns at once then, so the caller can have it checked."""

    def __init__(self, conn: NatsConnection, subject: str) -> None:
        self._conn = conn
        self._subject = subject
        self._inbox = conn.client.new_inbox()
        self._sub: Subscription | None = None
        self._arrived: collections.deque[Msg] = collections.deque()
        self._wakeup = asyncio.Event()
        self._open = 0
        self._request_deadline = 0.0
        self.usable = True
        self.abandoned = False
        self.consumer_gone = False

    async def start(self) -> None:
        """Subscribe the inbox (messages are queued here, taken by :meth:`_collect`)."""
        arrived, wakeup = self._arrived, self._wakeup

        async def on_message(msg: Msg) -> None:
            arrived.append(msg)
            wakeup.set()

        self._sub = await self._conn.client.subscribe(self._inbox, cb=on_message)

    async def pull(self, batch: int, timeout: float) -> list[Msg]:
        """Return up to ``batch`` messages, waiting up to ``timeout`` for the first."""
        deadline = time.monotonic() + max(0.0, timeout)
        while self.usable:
            if not self._open:
                await self._send({"batch": batch, "no_wait": True}, batch, 0.0)
                msgs = await self._collect(self._request_deadline)
                if msgs or not self.usable or self.consumer_gone:
                    return msgs
                remaining = deadline - time.monotonic()
                if remaining <= 0.001:
                    return []
                expires = max(remaining, MIN_LONG_POLL)
                await self._send({"batch": 1, "expires": int(expires * 1e9)}, 1, expires)
            msgs = await self._collect(deadline)
            if msgs or self._open or self.consumer_gone or time.monotonic() >= deadline:
                return msgs
        return []

    async def _send(self, body: dict[str, Any], batch: int, expires: float) -> None:
        await self._conn.client.publish(self._subject, json.dumps(body).encode(), reply=self._inbox)
        self._open = batch
        self._request_deadline = time.monotonic() + expires + END_GRACE

    async def _collect(self, until: float) -> list[Msg]:
        msgs: list[Msg] = []
        arrived = self._arrived
        while self._open:
            if not arrived:
                wait = min(until, self._request_deadline) - time.monotonic()
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), max(0.001, wait))
                except asyncio.TimeoutError:
                    if time.monotonic() >= self._request_deadline:
                        self.usable = False
                        self._open = 0
                    return msgs
                continue
            msg = arrived.popleft()
            headers = msg.headers
            status = headers.get("Status") if headers else None
            if status is None:
                msgs.append(msg)
                self._open -= 1
            elif status != "100":
                self._open = 0
                if _consumer_missing(status, str((headers or {}).get("Description", ""))):
                    self.consumer_gone = True
            if msgs and not arrived and time.monotonic() >= until:
                return msgs
        return msgs

    def abandon(self) -> None:
        """Forget the request in flight (the connection was lost) and retire this inbox."""
        self.abandoned = True
        self.usable = False
        self._open = 0
        self._wakeup.set()

    async def close(self) -> None:
        self.usable = False
        if self._sub is None:
            return
        try:
            await self._sub.unsubscribe()
        except Exception as exc:
            log.debug("unsubscribing a pull inbox: %r", exc)


def _consumer_missing(status: str, description: str) -> bool:
    """Whether a pull request's status says the consumer is not there: "503 No Responders"
    (nats-server 2.10 and later, for a consumer that does not exist or a JetStream that is not
    up) or "409 Consumer Deleted" (the consumer went while the request waited). Older servers
    do not answer a request to a missing consumer at all: it never ends."""
    return status == "503" or (status == "409" and "deleted" in description.lower())


async def close_all(pullers: list[Puller]) -> None:
    """Close every puller (unsubscribe their inboxes)."""
    for puller in pullers:
        await puller.close()
