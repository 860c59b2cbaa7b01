"""Rendezvous: processes tell each other they are ready, over any transport.

A participant announces the roles it is ready in (``queue.announce_ready(["worker"])``); a
coordinator waits until enough distinct participants announced each role
(``queue.wait_until_ready({"worker": 3}, timeout=30)``). Everything travels as ordinary
messages on the reserved topic ``_rendezvous.<space>``:

- ``{"op": "ready", "id": ..., "roles": [...]}``: sent on announcing, and again whenever asked;
- ``{"op": "query", "id": ...}``: "who is there?", sent by a waiting coordinator, repeated every
  ``query_interval`` seconds while it waits, so participants that started earlier (or whose
  subscription became live later) are counted too;
- ``{"op": "gone", "id": ...}``: sent by :meth:`Rendezvous.leave`.

Every participant has a unique id, so a participant that answers many queries is counted once.

Startup policies (:func:`startup_policy`, defined with the configuration) wrap this:
``"none"``, ``"delay:<seconds>"``, ``{"policy": "barrier", "requires": {"worker": 3},
"timeout": 30}`` and a list of them (run in order: a chain).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping

from eventforge.config import (
    Barrier,
    FixedDelay,
    NoWait,
    PolicyChain,
    StartupPolicy,
    startup_policy,
)
from eventforge.message import Message, new_id
from eventforge.queue._port import QueuePort
from eventforge.topics import validate_topic

__all__ = [
    "RENDEZVOUS_TOPIC_PREFIX",
    "Barrier",
    "FixedDelay",
    "NoWait",
    "PolicyChain",
    "Rendezvous",
    "StartupPolicy",
    "rendezvous_for",
    "startup_policy",
]

RENDEZVOUS_TOPIC_PREFIX = "_rendezvous"


class Rendezvous:
    """One participant (and observer) of the rendezvous ``space`` on a queue."""

    query_interval = 0.2

    def __init__(self, queue: QueuePort, space: str = "default") -> None:
        self.queue = queue
        self.space = space
        self.topic = validate_topic(f"{RENDEZVOUS_TOPIC_PREFIX}.{space}")
        self.id = new_id()
        self.roles: frozenset[str] = frozenset()
        self._seen: dict[str, frozenset[str]] = {}
        self._cond = threading.Condition()
        self._handler_id: str | None = None

    def _ensure_subscribed(self) -> None:
        with self._cond:
            if self._handler_id is None:
                self._handler_id = self.queue.subscribe(self.topic, self._on_message)

    def _on_message(self, message: Message) -> None:
        body = message.payload
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            return
        op = body.get("op")
        if op == "query":
            if self.roles:
                self._announce()
            return
        with self._cond:
            if op == "ready" and isinstance(body.get("roles"), list):
                self._seen[body["id"]] = frozenset(r for r in body["roles"] if isinstance(r, str))
            elif op == "gone":
                self._seen.pop(body["id"], None)
            self._cond.notify_all()

    def _announce(self) -> None:
        self.queue.publish(self.topic, {"op": "ready", "id": self.id, "roles": sorted(self.roles)})

    def announce_ready(self, roles: Iterable[str]) -> None:
        """Announce this participant as ready in ``roles`` (added to earlier ones)."""
        roles = [roles] if isinstance(roles, str) else list(roles)
        if not roles or not all(isinstance(r, str) and r for r in roles):
            raise ValueError(f"roles must be non-empty strings, got {roles!r}")
        self._ensure_subscribed()
        self.roles = self.roles | frozenset(roles)
        self._announce()

    def counts(self) -> dict[str, int]:
        """How many distinct participants announced each role so far."""
        with self._cond:
            return self._counts()

    def _counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for roles in self._seen.values():
            for role in roles:
                counts[role] = counts.get(role, 0) + 1
        return counts

    def wait_until_ready(self, requirements: Mapping[str, int], timeout: float = 30.0) -> bool:
        """Wait until each role in ``requirements`` has that many participants; ``False`` on timeout."""
        if not requirements or not all(
            isinstance(k, str) and isinstance(v, int) and v >= 0 for k, v in requirements.items()
        ):
            raise ValueError(
                f"requirements must map role names to counts, e.g. {{'worker': 3}}; got "
                f"{requirements!r}"
            )
        self._ensure_subscribed()
        deadline = time.monotonic() + timeout

        def satisfied() -> bool:
            counts = self._counts()
            return all(counts.get(role, 0) >= n for role, n in requirements.items())

        while True:
            with self._cond:
                if satisfied():
                    return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.queue.publish(self.topic, {"op": "query", "id": self.id})
            with self._cond:
                if self._cond.wait_for(satisfied, min(self.query_interval, remaining)):
                    return True

    def leave(self) -> None:
        """Withdraw this participant's announcement and stop listening."""
        with self._cond:
            handler_id, self._handler_id = self._handler_id, None
        if self.roles and not self.queue.closed:
            self.queue.publish(self.topic, {"op": "gone", "id": self.id})
        self.roles = frozenset()
        if handler_id is not None and not self.queue.closed:
            self.queue.unsubscribe(handler_id)


_by_queue_lock = threading.Lock()
_SPACES_ATTR = "_eventforge_rendezvous"


def rendezvous_for(queue: QueuePort, space: str = "default") -> Rendezvous:
    """The queue's participant in ``space`` (one per queue and space).

    The participants are kept on the queue itself: a registry keyed by queue would keep every
    queue alive (each participant refers to its queue).
    """
    with _by_queue_lock:
        spaces: dict[str, Rendezvous] | None = getattr(queue, _SPACES_ATTR, None)
        if spaces is None:
            spaces = {}
            setattr(queue, _SPACES_ATTR, spaces)
        found = spaces.get(space)
        if found is None:
            found = spaces[space] = Rendezvous(queue, space)
        return found
