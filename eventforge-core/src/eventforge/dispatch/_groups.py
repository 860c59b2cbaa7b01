"""Groups within one queue: the local members of a ``(pattern, group)`` and how one is picked."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from eventforge.dispatch._dispatchers import Dispatcher
from eventforge.dispatch._handler_thread import HandlerThread
from eventforge.dispatch._invokers import Invoker
from eventforge.message import Message
from eventforge.transport import Counter, nonblocking

__all__ = ["GroupBinding", "GroupMember"]

log = logging.getLogger("eventforge.queue")


class GroupMember:
    """One member of a group: its handler id, how to invoke it, and its load.

    ``load()`` is what a load-aware dispatcher (``least_loaded``) adds to the calls it sees in
    flight: for a member with its own thread, the messages handed over but not yet handled.
    """

    __slots__ = ("handler_id", "invoke", "thread")

    def __init__(self, handler_id: str, invoke: Invoker, thread: HandlerThread | None) -> None:
        self.handler_id = handler_id
        self.invoke = invoke
        self.thread = thread

    def load(self) -> int:
        """Messages handed to this member's thread and not yet handled (0 without a thread)."""
        return self.thread.load() if self.thread is not None else 0


class GroupBinding:
    """The local members of one ``(pattern, group)``: each message goes to one of them.

    The queue subscribes the binding once at the transport (with ``group=`` when the transport
    declares groups, so the transport picks one queue among many); the binding's dispatcher
    then picks one local member.

    A binding whose members only hand messages off (each has a thread of its own, or is a
    coroutine handler scheduled on its loop), picked by a dispatcher that never waits, is
    *non-blocking*: the queue subscribes :meth:`handoff` instead of :meth:`deliver`, so a
    transport may run it on its I/O thread. A plain member joining later is given a thread
    of its own by the queue, so that it never runs there.
    """

    __slots__ = (
        "dispatcher",
        "dropped",
        "group",
        "members",
        "nonblocking",
        "owns_dispatcher",
        "pattern",
        "subscription_id",
    )

    def __init__(
        self,
        pattern: str,
        group: str,
        dispatcher: Dispatcher,
        dropped: Counter,
        *,
        nonblocking: bool = False,
    ) -> None:
        self.pattern = pattern
        self.group = group
        self.dispatcher = dispatcher
        self.dropped = dropped
        self.nonblocking = nonblocking and dispatcher.nonblocking
        self.members: tuple[GroupMember, ...] = ()
        self.subscription_id: str | None = None
        self.owns_dispatcher = True

    @property
    def entry_point(self) -> Invoker:
        """What the queue subscribes at the transport: :meth:`handoff` or :meth:`deliver`."""
        return self.handoff if self.nonblocking else self.deliver

    def close(self) -> None:
        """Release the dispatcher when the binding made it (a name was given, not an instance)."""
        if self.owns_dispatcher:
            try:
                self.dispatcher.close()
            except Exception:
                log.exception(
                    "closing dispatcher %r of group %r failed", self.dispatcher, self.group
                )

    def add(self, handler_id: str, invoke: Invoker, thread: HandlerThread | None = None) -> None:
        """Add a member (copy-on-write, so delivery never takes a lock)."""
        self.members = (*self.members, GroupMember(handler_id, invoke, thread))

    def remove(self, handler_id: str) -> bool:
        """Remove a member; return whether it was one."""
        before = self.members
        self.members = tuple(m for m in before if m.handler_id != handler_id)
        return len(self.members) != len(before)

    def deliver(self, message: Message) -> None:
        """Hand ``message`` to the member the dispatcher picks (the transport calls this)."""
        members: Sequence[GroupMember] = self.members
        if not members:
            self.dropped.bump()
            log.warning(
                "message on %r arrived for group %r, which has no members left; dropped",
                message.topic,
                self.group,
            )
            return
        try:
            self.dispatcher.dispatch(members, lambda member: member.invoke(message))
        except Exception:
            self.dropped.bump()
            log.exception("dispatcher %r failed for group %r", self.dispatcher.name, self.group)

    @nonblocking
    def handoff(self, message: Message) -> None:
        """:meth:`deliver` for a non-blocking binding (every member hands off to its thread)."""
        self.deliver(message)
