"""A client's subscriptions: announced to the server, and the plain ones matched locally too.

Every subscription is announced with a ``$tcp.sub`` frame (again after each reconnect). A
plain (non-group) one is also kept in a local :class:`~eventforge.topics.TopicIndex`: messages
this client publishes reach it at once without a trip to the server, and messages the server
forwards are matched against it. Group members are picked by the server, which names them in
a ``$tcp.route`` frame in front of the message.
"""

from __future__ import annotations

import threading
from typing import Any

from eventforge.topics import TopicIndex
from eventforge.transport import Callback, is_nonblocking

from ._control import SUB, control_frame

__all__ = ["Sub", "Subscriptions"]


class Sub:
    """One subscription of the client."""

    __slots__ = ("callback", "group", "inline", "key", "pattern", "sid")

    def __init__(self, sid: str, pattern: str, group: str | None, callback: Callback) -> None:
        self.sid = sid
        self.pattern = pattern
        self.group = group
        self.callback = callback
        self.inline = is_nonblocking(callback)
        self.key = 0

    def frame(self, frame_id: str | None = None) -> bytes:
        """The ``$tcp.sub`` frame that announces it (``frame_id``: the id its ack answers)."""
        return control_frame(
            SUB, {"sid": self.sid, "pattern": self.pattern, "group": self.group}, frame_id=frame_id
        )


class Subscriptions:
    """Every subscription of one client, by id, and the plain ones by pattern."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.index: TopicIndex[Sub] = TopicIndex()
        self.fanout = 0  # plain (non-group) subscriptions in the index
        self._by_sid: dict[str, Sub] = {}

    def __len__(self) -> int:
        return len(self._by_sid)

    def add(self, sid: str, pattern: str, group: str | None, callback: Callback) -> Sub:
        """Add a subscription (the caller announces it)."""
        sub = Sub(sid, pattern, group, callback)
        with self.lock:
            self._by_sid[sid] = sub
            if group is None:
                sub.key = self.index.add(pattern, sub)
                self.fanout += 1
        return sub

    def forget(self, sid: str) -> bool:
        """Remove the subscription ``sid``; return whether it existed."""
        with self.lock:
            sub = self._by_sid.pop(sid, None)
            if sub is None:
                return False
            if sub.group is None:
                self.index.remove(sub.key)
                self.fanout -= 1
            return True

    def frames(self) -> list[bytes]:
        """The ``$tcp.sub`` frames of every subscription, to announce them on a new link."""
        with self.lock:
            subs = list(self._by_sid.values())
        return [sub.frame() for sub in subs]

    def routed(self, topic: str, route: dict[str, Any]) -> list[Sub]:
        """The targets of a message the server sent behind a ``$tcp.route`` frame."""
        targets: list[Sub] = []
        if route.get("fanout", True):
            targets.extend(self.index.match(topic))
        by_sid = self._by_sid
        for sid in route["sids"]:
            target = by_sid.get(sid) if isinstance(sid, str) else None
            if target is not None:
                targets.append(target)
        return targets
