"""The server's routing: its subscription index and where one message goes.

Every subscription of the space is in one :class:`~eventforge.topics.TopicIndex`: the server's
own (:class:`Local`), those announced by clients (:class:`Remote`), and one :class:`Group` per
``(pattern, group)`` that picks one member across every connection. Routing a message
delivers it to the matching local subscriptions and forwards its frame bytes unchanged,
once per client link, with a ``$tcp.route`` frame in front when the client must also deliver
to group members it was picked for.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from eventforge.message import Message
from eventforge.topics import TopicIndex

from ._base import Handoff
from ._control import ROUTE, control_frame
from ._link import Link
from ._targets import Group, Key, Local, Remote, Target
from .framing import HEADER

__all__ = ["Router"]

_pack = HEADER.pack


class Router:
    """The subscription index of a server and the routing of messages through it.

    ``run_inline(callback, message)`` runs a nonblocking callback at once, ``deliver(batch)``
    hands the others to the delivery thread; ``queue_frame(link, frame)`` (from a publishing
    thread) and ``io_append(link, frame, dirty)`` (from the I/O thread) forward a frame to a
    client; ``decode(body)`` gives a local subscriber its own copy of a message sent here.
    """

    def __init__(
        self,
        *,
        run_inline: Callable[[Callable[[Message], None], Message], None],
        deliver: Callable[[list[Handoff]], None],
        queue_frame: Callable[[Link, bytes], bool],
        io_append: Callable[[Link, bytes, set[Link]], bool],
        decode: Callable[[bytes], Message],
    ) -> None:
        self._run_inline = run_inline
        self._deliver = deliver
        self._queue_frame = queue_frame
        self._io_append = io_append
        self._decode = decode
        self.lock = threading.RLock()
        self.index: TopicIndex[Target] = TopicIndex()
        self.entries: dict[Key, tuple[int, Group | None, Local | Remote]] = {}
        self._groups: dict[tuple[str, str], tuple[int, Group]] = {}
        self._link_sids: dict[int, set[str]] = {}

    def __len__(self) -> int:
        return len(self.entries)

    # -- the index -------------------------------------------------------------------------------

    def add(self, key: Key, pattern: str, group: str | None, target: Local | Remote) -> None:
        """Add (or replace) the subscription ``key``."""
        with self.lock:
            if key in self.entries:
                self.remove(key)
            if group is None:
                self.entries[key] = (self.index.add(pattern, target), None, target)
                return
            entry = self._groups.get((pattern, group))
            if entry is None:
                grp = Group()
                entry = self._groups[(pattern, group)] = (self.index.add(pattern, grp), grp)
            index_key, grp = entry
            grp.members = [*grp.members, target]
            self.entries[key] = (index_key, grp, target)

    def remove(self, key: Key) -> bool:
        """Remove the subscription ``key``; return whether it existed."""
        with self.lock:
            entry = self.entries.pop(key, None)
            if entry is None:
                return False
            index_key, grp, target = entry
            if grp is None:
                return self.index.remove(index_key)
            grp.members = [m for m in grp.members if m is not target]
            if not grp.members:
                self.index.remove(index_key)
                for gkey, (k, _) in list(self._groups.items()):
                    if k == index_key:
                        del self._groups[gkey]
            return True

    def add_remote(self, link: Link, sid: str, pattern: str, group: str | None) -> None:
        """Add a subscription a client announced on ``link``."""
        self.add((link.id, sid), pattern, group, Remote(link, sid))
        self._link_sids.setdefault(link.id, set()).add(sid)

    def remove_remote(self, link: Link, sid: str) -> None:
        """Remove a subscription a client withdrew."""
        self.remove((link.id, sid))
        self._link_sids.get(link.id, set()).discard(sid)

    def link_opened(self, link: Link) -> None:
        """Start keeping the subscriptions of a client that said hello."""
        self._link_sids[link.id] = set()

    def link_closed(self, link: Link) -> None:
        """Remove every subscription of a client whose link closed."""
        for sid in self._link_sids.pop(link.id, ()):
            self.remove((link.id, sid))

    def clear(self) -> None:
        """Forget every subscription (the server closed)."""
        with self.lock:
            self.index = TopicIndex()
            self.entries.clear()
            self._groups.clear()

    # -- routing ---------------------------------------------------------------------------------

    def route(
        self,
        message: Message,
        body: bytes,
        origin: Link | None,
        dirty: set[Link] | None,
        local_batch: list[Handoff] | None = None,
        targets: tuple[Target, ...] | None = None,
    ) -> int:
        """Deliver locally and forward ``body`` (framed) to every link with a matching subscription.

        From the I/O thread (``dirty`` given) frames are queued for the end-of-pass flush and
        local deliveries collected in ``local_batch``; from a publishing thread they go out at
        once. ``targets`` are the topic's matches when the caller looked them up already.
        Returns how many receivers took the message: local subscriptions, client links
        forwarded to for their plain subscriptions, and group members picked.
        """
        if targets is None:
            targets = self.index.match(message.topic)
        if not targets:
            return 0
        if local_batch is not None and len(targets) == 1 and targets[0].__class__ is Local:
            # The common case of a received message: one subscription of this process.
            only: Local = targets[0]
            if only.inline:
                self._run_inline(only.callback, message)
            else:
                local_batch.append((only.callback, message))
            return 1
        local: list[Local] | None = None
        fanout: list[Link] | None = None
        groups: dict[Link, list[str]] | None = None
        for target in targets:
            cls = target.__class__
            if cls is Remote:
                link = target.link  # type: ignore[union-attr]
                if link is not origin:
                    if fanout is None:
                        fanout = [link]
                    elif link not in fanout:
                        fanout.append(link)
            elif cls is Local:
                if local is None:
                    local = []
                local.append(target)  # type: ignore[arg-type]
            else:
                with self.lock:
                    member = target.pick()  # type: ignore[union-attr]
                if member is None:
                    continue
                if member.__class__ is Local:
                    if local is None:
                        local = []
                    local.append(member)
                else:
                    if groups is None:
                        groups = {}
                    groups.setdefault(member.link, []).append(member.sid)  # type: ignore[union-attr]
        taken = 0
        if local:
            taken = len(local)
            copy = message if origin is not None else self._decode(body)
            batch = local_batch if local_batch is not None else []
            for sub in local:
                if sub.inline:
                    # A hand-off (reply waiter, handler thread): run it here, in order.
                    self._run_inline(sub.callback, copy)
                else:
                    batch.append((sub.callback, copy))
            if local_batch is None:
                self._deliver(batch)
        if fanout is None and groups is None:
            return taken
        frame = _pack(len(body)) + body
        destinations = list(fanout or ())
        if groups:
            destinations.extend(link for link in groups if link not in destinations)
        plain = len(fanout) if fanout is not None else 0
        for i, link in enumerate(destinations):
            sids = groups.get(link) if groups else None
            fan = i < plain  # the fan-out links come first in destinations
            out = control_frame(ROUTE, {"sids": sids, "fanout": fan}) + frame if sids else frame
            if dirty is None:
                queued = self._queue_frame(link, out)
            else:
                queued = self._io_append(link, out, dirty)
            if queued:
                taken += int(fan) + (len(sids) if sids else 0)
        return taken
