"""Checks of each subscription's own delivery path, run by the prober every interval.

The prober's companion probe proves, end to end, the path a subscription shares with every
other subscription of its transport: the connection, the reader and the delivery thread. What
only this subscription has is checked here, from what its queue, its own handler thread and
its transport report (:meth:`~eventforge.queue.MessageQueue.subscription_status`):

* the queue still has it (nobody unsubscribed it behind the service's back);
* the transport still has it and, where the transport asks its broker or store, the broker
  does too: the consumer group and its routing (Redis), the queue's consumer (AMQP), the
  named or group inbox and this process as its listener (``local://``);
* the broker did not drop it since the last check (a transport that re-makes what the broker
  dropped counts it: the messages published in between were not delivered);
* its handler thread (``threaded=True``) is alive and finishes messages while some wait.

Why not a probe message on the subscription's own topic: it would reach every other
subscriber of that topic (other services, plain queues), and in a group it would go to one
member, perhaps in another process, so the sender could not expect it back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from eventforge.queue import HandlerStatus, MessageQueue

__all__ = ["PathCheck", "backlog_of"]


@dataclass
class PathCheck:
    """Judge one subscription by what its queue, its own thread and its transport report.

    ``handler_id()`` is the subscription's current handler id (it changes when the service
    subscribes it again); a handler thread that finished nothing for ``stuck_after`` seconds
    while messages wait for it is stuck.
    """

    queue: MessageQueue
    handler_id: Callable[[], str | None]
    stuck_after: float
    lost: int | None = None
    handled: int | None = None
    progress_at: float = 0.0
    broker_backlog: int | None = None
    """What the broker held for the subscription at the last check, where it tells."""

    def judge(self, now: float) -> tuple[str | None, bool]:
        """``(what is wrong, whether subscribing again mends it)``; ``(None, False)`` when the
        path is whole. May ask the broker (the transport's status)."""
        handler_id = self.handler_id()
        status = None if handler_id is None else self.queue.subscription_status(handler_id)
        if status is None:
            self.lost = self.handled = None
            return (
                "the queue no longer has it (it was unsubscribed behind the service's back)",
                True,
            )
        transport = status.transport
        self.broker_backlog = transport.backlog if transport is not None else None
        if transport is not None:
            if not transport.present:
                return transport.problem or "the transport no longer has it", True
            before, self.lost = self.lost, transport.lost
            if before is not None and transport.lost > before:
                return (
                    f"the broker dropped it {transport.lost - before} time(s) since the last "
                    "check and the transport made it again: messages published meanwhile were "
                    "not delivered"
                ), False
        if status.thread_alive is False:
            return "its handler thread has ended", True
        return self._progress(status, now), False

    def _progress(self, status: HandlerStatus, now: float) -> str | None:
        if status.handled is None:
            return None
        if status.handled != self.handled or not status.pending:
            self.handled = status.handled
            self.progress_at = now
            return None
        idle = now - self.progress_at
        if idle <= self.stuck_after:
            return None
        return (
            f"its handler finished no message for {idle:.1f} s while {status.pending} wait "
            "(stuck, or slower than the probe timeout)"
        )


def backlog_of(
    queue: MessageQueue, handler_id: Callable[[], str | None], path: PathCheck | None = None
) -> int | None:
    """The messages waiting for one subscription: on its own handler thread (now), plus what
    its broker holds for it where the broker tells (as of ``path``'s last check, so that a
    health read never waits for the broker; asked now without a path); ``None`` when nothing
    tells."""
    current = handler_id()
    if current is None or queue.closed:
        return None
    status = queue.subscription_status(current, transport=path is None)
    if status is None:
        return None
    broker = path.broker_backlog if path is not None else None
    if status.transport is not None:
        broker = status.transport.backlog
    known = [part for part in (status.pending, broker) if part is not None]
    return sum(known) if known else None
