"""The server's subscription targets: what a topic match in its index delivers to."""

from __future__ import annotations

from eventforge.transport import Callback, is_nonblocking

from ._link import Link

__all__ = ["Group", "Key", "Local", "Remote", "Target"]


class Local:
    """A subscription of the server process itself."""

    __slots__ = ("callback", "inline", "sid")

    def __init__(self, sid: str, callback: Callback) -> None:
        self.sid = sid
        self.callback = callback
        self.inline = is_nonblocking(callback)


class Remote:
    """A subscription announced by a client: delivering means forwarding to its link."""

    __slots__ = ("link", "sid")

    def __init__(self, link: Link, sid: str) -> None:
        self.link = link
        self.sid = sid


class Group:
    """The members of one ``(pattern, group)`` across every connection; round-robin pick."""

    __slots__ = ("members", "turn")

    def __init__(self) -> None:
        self.members: list[Local | Remote] = []
        self.turn = 0

    def pick(self) -> Local | Remote | None:
        members = self.members
        if not members:
            return None
        self.turn = (self.turn + 1) % len(members)
        return members[self.turn]


Target = Local | Remote | Group
Key = tuple[int, str]  # (link id or 0 for local, sid)
