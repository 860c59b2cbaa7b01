"""Which publishes the NATS server is known to have read, and which a dead link may have eaten.

NATS core has no acknowledgements: ``publish`` hands the message to nats-py, which writes it
into the socket. When the link stalls (the server paused, a half-open connection), the client
keeps writing into kernel buffers until the ping timeout declares the connection stale; it
then reconnects on a new socket, and whatever was written into the old one is gone without an
error anywhere. What nats-py had not written yet is sent again after the reconnect.

The server reads a connection in order, so a PONG proves it read everything written before the
PING. :class:`PublishConfirmations` uses that:

* while publishes are being made, every ``interval`` seconds it notes how many were written to
  the socket so far and sends a PING (``flush``); the PONG confirms them all;
* when the connection is declared dead, the publishes written since the last confirmed mark
  are counted as ``publish_possibly_lost`` (and logged): an upper bound, as the server may have
  read and routed some of them before the link died.

All of it runs on the connection's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nats.aio.client import Client

__all__ = ["PublishConfirmations"]

log = logging.getLogger("eventforge.transports.nats")

_PUB = (b"PUB ", b"HPUB ")


def _unwritten_publishes(nc: Client) -> int:
    """Publishes nats-py holds but has not written to the socket (sent again on a reconnect)."""
    pending: Any = getattr(nc, "_pending", None)
    if not isinstance(pending, list):
        return 0  # unknown: treat everything as written, so the count stays an upper bound
    return sum(1 for command in pending if command.startswith(_PUB))


class PublishConfirmations:
    """Counts publishes handed to nats-py, confirms them by PING/PONG, counts the unconfirmed
    ones of a connection that died."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.published = 0  # handed to nats-py's publish (on the loop)
        self.possibly_lost = 0
        self._confirmed = 0  # of ``published``: read by the server, as a PONG proved
        self._epoch = 0  # bumped when a connection dies: a probe of the old one proves nothing
        self._task: asyncio.Task[None] | None = None

    def start(self, client: Client) -> None:
        """Start confirming on the running loop (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._probe_loop(client))

    def stop(self) -> None:
        """Stop confirming (on the loop)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def link_died(self, client: Client, why: str) -> None:
        """Count what was written into a connection that is gone and never confirmed."""
        written = max(self._confirmed, self.published - _unwritten_publishes(client))
        unconfirmed = written - self._confirmed
        self._confirmed = written
        self._epoch += 1
        if unconfirmed > 0:
            self.possibly_lost += unconfirmed
            log.warning(
                "NATS %s: %d message(s) published since the server last confirmed what it had "
                "read may be lost (written into the dead connection; counted in "
                "publish_possibly_lost, %d so far)",
                why,
                unconfirmed,
                self.possibly_lost,
            )

    async def flush(self, client: Client, timeout: float) -> None:
        """Return once the server confirmed every publish handed to nats-py so far.

        nats-py's own ``flush`` writes its PING ahead of publishes it still holds, so its PONG
        can come back before they were even written; wait for them to be written first.
        Raises what ``Client.flush`` raises when the PONG does not come in time.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while _unwritten_publishes(client) and client.is_connected and loop.time() < deadline:
            await asyncio.sleep(0.001)
        mark = self.published - _unwritten_publishes(client)
        epoch = self._epoch
        await client.flush(timeout=max(1, math.ceil(deadline - loop.time())))
        if epoch == self._epoch:
            self._confirmed = max(self._confirmed, mark)

    async def _probe_loop(self, client: Client) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if not client.is_connected:
                continue
            mark = self.published - _unwritten_publishes(client)
            if mark <= self._confirmed:
                continue
            epoch = self._epoch
            try:
                await client.flush(timeout=max(1, round(2 * self.interval)))
            except asyncio.CancelledError:
                raise
            except Exception:  # a stalled link: the ping timeout will declare it dead
                continue
            if epoch == self._epoch:
                self._confirmed = max(self._confirmed, mark)
