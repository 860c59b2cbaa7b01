"""Stopping what a service started: consumers drained, RPC servers, tasks, subscriptions.

The mirror of :mod:`eventforge.service._starting`. Each piece is stopped and its tracker set
``failed: stopped``, so that health tells a stopped subscription from a running one.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from eventforge.queue import MessageQueue
from eventforge.service._declarations import _Consumer, _RPCService, _Subscriber, _Task
from eventforge.service.health import HealthState

__all__ = ["stop_consumers", "stop_rpc", "stop_subscribers", "stop_tasks"]


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def stop_consumers(consumers: Iterable[_Consumer], deadline: float) -> None:
    """Drain each consumer until ``deadline`` (a ``time.monotonic()`` time), close its queue."""
    for item in consumers:
        if item.consumer is not None:
            item.consumer.stop(timeout=_left(deadline))
        if item.work_queue is not None:
            item.work_queue.close()
        item.tracker.set(HealthState.FAILED, "stopped")
        item.consumer = item.work_queue = None


def stop_rpc(entries: Iterable[_RPCService], deadline: float) -> None:
    """Stop each RPC service's server: calls running finish and are answered until
    ``deadline`` (a ``time.monotonic()`` time); calls waiting are refused at once."""
    for entry in entries:
        if entry.server is not None:
            entry.server.stop(timeout=_left(deadline))
            entry.server = None
        if entry.tracker is not None:
            entry.tracker.set(HealthState.FAILED, "stopped")


def stop_tasks(tasks: Iterable[_Task]) -> None:
    """Unsubscribe each bound ``@task``."""
    for task_item in tasks:
        if task_item.bound is not None:
            task_item.bound.unsubscribe()
            task_item.bound = None


def stop_subscribers(
    queue: MessageQueue | None, subscribers: Iterable[_Subscriber], deadline: float
) -> None:
    """Unsubscribe each declared handler from ``queue`` (``None``: the queue never existed);
    a handler with a thread of its own handles what waits for it until ``deadline``."""
    for sub in subscribers:
        if sub.handler_id is not None and queue is not None:
            queue.unsubscribe(sub.handler_id, drain=_left(deadline))
            sub.handler_id = None
        sub.tracker.set(HealthState.FAILED, "stopped")
