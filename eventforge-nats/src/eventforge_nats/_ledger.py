"""Which deliveries of a JetStream work queue this process holds, to tell a stale settle.

JetStream acknowledges by stream sequence and does not check the delivery count, and it answers
an ack the same whether or not the ack took effect: a late ``+ACK`` from a consumer whose
``ack_wait`` ran out still removes the item, and a late ``-NAK`` or ``+TERM`` hits the item
that someone else now holds. When this process fetched the newer delivery itself, the
:class:`Ledger` knows, and the older delivery's settle is not sent (see
:mod:`eventforge_nats.jetstream`).
"""

from __future__ import annotations

import threading
import weakref

from ._connection import NatsConnection

__all__ = ["Ledger", "ledger_for"]

LIMIT = 100_000
"""Deliveries remembered per stream; beyond it the oldest is forgotten (only its stale
detection is lost)."""


class Ledger:
    """The deliveries of one stream held in this process: per stream sequence, the highest
    delivery count fetched and how many fetched deliveries are not settled yet.

    Shared by every backend of one stream on one connection, so that a settle of a delivery
    whose item was fetched again since (its ``ack_wait`` ran out) is recognised as stale.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[int, list[int]] = {}  # stream seq -> [newest delivery count, open]

    def fetched(self, seq: int, count: int, *, held: bool) -> None:
        """Record a fetched delivery; ``held=False`` for one settled at once (dead-lettered)."""
        with self._lock:
            entry = self._held.get(seq)
            if entry is None:
                if held:
                    self._held[seq] = [count, 1]
                    if len(self._held) > LIMIT:
                        # Deliveries never settled (their consumer died here) would pile up:
                        # forget the oldest.
                        del self._held[next(iter(self._held))]
                return
            entry[0] = max(entry[0], count)
            entry[1] += held

    def settle(self, seq: int, count: int) -> bool:
        """Forget one delivery; return whether a newer delivery of the item was fetched."""
        with self._lock:
            entry = self._held.get(seq)
            if entry is None:
                return False
            entry[1] -= 1
            if entry[1] <= 0:
                del self._held[seq]
            return entry[0] > count

    def superseded(self, seq: int, count: int) -> bool:
        """Tell whether a newer delivery of the item was fetched (without forgetting it)."""
        with self._lock:
            entry = self._held.get(seq)
            return entry is not None and entry[0] > count


_ledgers: weakref.WeakKeyDictionary[NatsConnection, dict[str, Ledger]] = weakref.WeakKeyDictionary()
_ledgers_lock = threading.Lock()


def ledger_for(conn: NatsConnection, stream: str) -> Ledger:
    """The ledger of ``stream`` shared by every backend on ``conn``."""
    with _ledgers_lock:
        return _ledgers.setdefault(conn, {}).setdefault(stream, Ledger())
