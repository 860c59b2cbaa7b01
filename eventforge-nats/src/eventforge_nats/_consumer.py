"""The durable consumer of one JetStream work queue: kept present, and pulled from.

A :class:`~eventforge.transport.Supervisor` owns the queue's streams and consumer. It creates
what is missing when the backend starts (an error then is raised at once), and checks again
whenever they may have been lost: after every reconnect of the NATS connection (a server
restarted with an empty store loses them), when a pull request finds no consumer (it was
deleted) and when one is never answered. A check that fails (JetStream not ready yet after a restart) is retried along
:data:`CHECK_RETRY` until it succeeds; what had to be created again is counted in
``recreated`` and logged as an error, since items stored before are then lost.

Fetches pull through :class:`~eventforge_nats._pull.Puller` inboxes kept here; when the
consumer may have been lost, every pull request in flight is abandoned so that waiting
fetches re-issue theirs at once (nats-py#504).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import TYPE_CHECKING

from eventforge.errors import TransportClosedError, TransportError
from eventforge.transport import Backoff, Counter, Supervisor

from ._connection import NatsConnection
from ._pull import Puller, close_all
from ._streams import QueueLayout

if TYPE_CHECKING:
    from nats.js.client import JetStreamContext

__all__ = ["CHECK_RETRY", "Consumer", "ConsumerLost"]

log = logging.getLogger("eventforge.transports.nats")

CHECK_RETRY = Backoff(initial=0.1, cap=5.0)
"""The pause before the streams and the consumer are checked again after they may be lost."""


class ConsumerLost(Exception):
    """The work queue's streams or consumer may be gone (the reason is the message)."""


def _closed_for_good(exc: BaseException) -> bool:
    import nats.errors

    return isinstance(exc, (nats.errors.ConnectionClosedError, TransportClosedError))


class Consumer:
    """Keeps one work queue's streams and consumer present; lends pull inboxes to fetches."""

    def __init__(self, conn: NatsConnection, js: JetStreamContext, layout: QueueLayout) -> None:
        self._conn = conn
        self._js = js
        self._layout = layout
        self._lost = asyncio.Event()
        self._reason = ""
        self.supervisor: Supervisor[bool] = Supervisor(
            f"JetStream consumer of work queue {layout.name!r}",
            self._check,
            self._until_lost,
            self._restored,
            fatal=_closed_for_good,
            backoff=CHECK_RETRY,
        )
        self._idle: list[Puller] = []
        self._pullers: weakref.WeakSet[Puller] = weakref.WeakSet()
        self.recreated = Counter()
        self.pulls_lost = Counter()

    async def start(self) -> None:
        """Create what is missing (errors raise unchanged) and keep it present from now on."""
        await self.supervisor.start()
        self._conn.on_reconnect(self._reconnected)

    async def _reconnected(self) -> None:
        self.lost("the NATS connection was re-established", abandon_pulls=True)

    def lost(self, reason: str, *, abandon_pulls: bool = False) -> None:
        """The consumer may be gone: check it again (on the loop). ``abandon_pulls`` drops every
        pull request in flight (they died with the connection)."""
        if abandon_pulls:
            for puller in list(self._pullers):
                puller.abandon()
        self._reason = reason
        self._lost.set()

    async def _check(self) -> bool:
        return await self._layout.ensure(self._js)

    async def _until_lost(self, created: bool) -> None:
        await self._lost.wait()
        self._lost.clear()
        raise ConsumerLost(f"{self._reason}: checking the streams and the consumer")

    async def _restored(self, created: bool) -> None:
        if created:
            self.recreated.bump()
            log.error(
                "JetStream work queue %r: stream or consumer was missing and was recreated; "
                "items stored before may be lost (is the store persistent?)",
                self._layout.name,
            )

    # -- pull inboxes --------------------------------------------------------------------------

    async def acquire(self) -> Puller:
        """An idle pull inbox, or a new one."""
        while self._idle:
            puller = self._idle.pop()
            if puller.usable:
                return puller
            await puller.close()
        puller = Puller(self._conn, self._layout.pull_subject)
        await puller.start()
        self._pullers.add(puller)
        return puller

    async def after_pull(self, puller: Puller, wait: float) -> None:
        """Look at a pull's outcome: when it found no consumer, have the consumer checked and
        wait up to ``wait`` seconds until it is there again (instead of pulling in a loop)."""
        if not puller.consumer_gone:
            return
        puller.consumer_gone = False
        self.lost("a pull request found no consumer")
        self.supervisor.connection_lost()
        try:
            await self.supervisor.connection(max(0.0, wait))
        except TransportError:
            pass  # not back within the wait (or closing): the fetch returns what it has

    async def replace(self, puller: Puller) -> Puller:
        """Retire a pull inbox whose request never ended; return a fresh one."""
        await self._retire(puller)
        return await self.acquire()

    async def release(self, puller: Puller, *, closed: bool) -> None:
        """Give a pull inbox back after a fetch (kept for the next unless lost or ``closed``)."""
        if not puller.usable:
            await self._retire(puller)
        elif closed:
            await puller.close()
        else:
            self._idle.append(puller)

    async def _retire(self, puller: Puller) -> None:
        self.pulls_lost.bump()
        await puller.close()
        if not puller.abandoned:  # (abandoned: a reconnect, which has its check already)
            # A request that never ended: the link dropped unnoticed, or the consumer is gone.
            self.lost("a pull request never ended")

    async def close(self) -> None:
        """Stop keeping the consumer and close the idle inboxes (on the loop)."""
        self._conn.off_reconnect(self._reconnected)
        await self.supervisor.close()
        idle, self._idle = self._idle, []
        await close_all(idle)
