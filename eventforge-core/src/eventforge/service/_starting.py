"""Starting what a service declared: subscriptions, RPC servers, consumers, probes, tasks and
schedules.

Each piece is subscribed through the service's queue with its handler wrapped for health
(:func:`~eventforge.service._handlers.observed`); the probes get a way to re-establish each
subscription they judge stalled.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable

from eventforge.errors import TransportError
from eventforge.queue import MessageQueue
from eventforge.rpc import RPCServer
from eventforge.service._declarations import _Consumer, _RPCService, _Subscriber, _Task
from eventforge.service._handlers import attribute, consuming, observed, pending, publishers
from eventforge.service._paths import PathCheck, backlog_of
from eventforge.service._probe import Prober
from eventforge.service.health import HealthState, Tracker
from eventforge.service.schedule import Schedule, Scheduler
from eventforge.tasks import task as make_task
from eventforge.transport import Capability, require_capability
from eventforge.workqueue import WorkQueue

__all__ = [
    "reserve",
    "restart_consumer",
    "resubscribe",
    "start_consumers",
    "start_probes",
    "start_rpc",
    "start_schedules",
    "start_subscribers",
    "start_tasks",
]


def start_subscribers(queue: MessageQueue, subscribers: Iterable[_Subscriber]) -> None:
    """Subscribe each declared handler, wrapped for health (and ``publish_to``)."""
    for sub in subscribers:
        publish, publish_async = publishers(queue, sub.publish_to)
        pattern = sub.topic if isinstance(sub.topic, str) else None
        sub.wrapped = observed(
            sub.handler, sub.tracker, publish, publish_async, pattern=pattern, single=True
        )
        try:
            sub.handler_id = queue.subscribe(sub.topic, sub.wrapped, **sub.options)
        except Exception as exc:
            sub.tracker.set(HealthState.FAILED, f"subscribe failed: {exc}")
            raise
        sub.tracker.backlog = functools.partial(backlog_of, queue, _current_id(sub))
        sub.tracker.set(HealthState.IDLE)


def _current_id(sub: _Subscriber) -> Callable[[], str | None]:
    return lambda: sub.handler_id


def _server_id(entry: _RPCService) -> Callable[[], str | None]:
    return lambda: None if entry.server is None else entry.server.handler_id


def resubscribe(queue: MessageQueue, sub: _Subscriber) -> None:
    """Drop and make again one subscription (the probe judged it stalled)."""
    if sub.handler_id is not None:
        queue.unsubscribe(sub.handler_id)
        sub.handler_id = None
    if sub.wrapped is not None:
        sub.handler_id = queue.subscribe(sub.topic, sub.wrapped, **sub.options)
        sub.tracker.resubscribed.bump()


def _serve(queue: MessageQueue, entry: _RPCService) -> RPCServer:
    server = entry.server = RPCServer(queue, service_name=entry.name)
    for method, func in entry.wrapped.items():
        server.add_method(method, func)
    server.serve(blocking=False)
    if entry.tracker is not None:
        entry.tracker.alive = attribute(server, "serving")
    return server


def start_rpc(queue: MessageQueue, entries: Iterable[_RPCService]) -> None:
    """Serve each RPC service's methods on an :class:`RPCServer` of its own."""
    for entry in entries:
        tracker = entry.tracker = Tracker(
            name=f"rpc:{entry.name}", kind="rpc", target=entry.name, required=True
        )
        entry.wrapped = {m: observed(f, tracker) for m, f in entry.methods.items()}
        _serve(queue, entry)
        tracker.set(HealthState.IDLE)


def reserve(queue: MessageQueue, entry: _RPCService) -> None:
    """Stop and serve again one RPC service (the probe judged it stalled)."""
    if entry.server is not None:
        entry.server.stop()
    _serve(queue, entry)
    if entry.tracker is not None:
        entry.tracker.resubscribed.bump()


def _consume(queue: MessageQueue, item: _Consumer) -> None:
    work_queue = item.work_queue = WorkQueue(item.queue_name, queue.transport, **item.options)
    wrapped = observed(item.handler, item.tracker, single=True)
    consumer = item.consumer = work_queue.consume(wrapped, concurrency=item.concurrency)
    item.tracker.alive = consuming(consumer, item.tracker)
    item.tracker.backlog = functools.partial(pending, work_queue)


def start_consumers(queue: MessageQueue, consumers: Iterable[_Consumer]) -> None:
    """Start each declared work-queue consumer, with liveness and backlog for health."""
    for item in consumers:
        _consume(queue, item)
        item.tracker.set(HealthState.IDLE)


def restart_consumer(queue: MessageQueue, item: _Consumer, drain: float = 5.0) -> None:
    """Stop one consumer and start it on a fresh work queue (which declares what is missing)."""
    if item.consumer is not None:
        item.consumer.stop(timeout=drain)
    if item.work_queue is not None:
        item.work_queue.close()
    item.lost = None
    _consume(queue, item)
    item.tracker.resubscribed.bump()


def _check(item: _Consumer) -> None:
    """Ask the backend for the queue's state (raises when it is broken) and whether it lost
    its storage since the last check (``stream_lost``: Redis recreated a vanished stream or
    group, and the items stored in it are gone)."""
    if item.work_queue is None:
        return
    lost = item.work_queue.stats.get("stream_lost")
    if not isinstance(lost, int):
        return
    before, item.lost = item.lost, lost
    if before is not None and lost > before:
        raise TransportError(
            f"work queue {item.queue_name!r} lost its stream or consumer group "
            f"{lost - before} time(s) since the last check (deleted, or the broker restarted "
            "without persistence): the items stored in it were lost"
        )


def start_probes(
    prober: Prober,
    subscribers: Iterable[_Subscriber],
    entries: Iterable[_RPCService],
    consumers: Iterable[_Consumer],
) -> Prober | None:
    """Probe every subscription and RPC service and check each subscription's own path, check
    every consumer broker-side; ``None`` when there is nothing to watch."""
    for sub in subscribers:
        path = PathCheck(prober.queue, _current_id(sub), stuck_after=prober.timeout)
        prober.add(sub.tracker, {}, functools.partial(resubscribe, prober.queue, sub), path)
        # Health reads take the broker's backlog from the last check: they never wait for it.
        sub.tracker.backlog = functools.partial(backlog_of, prober.queue, _current_id(sub), path)
    for entry in entries:
        if entry.tracker is not None:
            path = PathCheck(prober.queue, _server_id(entry), stuck_after=prober.timeout)
            prober.add(entry.tracker, {}, functools.partial(reserve, prober.queue, entry), path)
    for item in consumers:
        prober.add_check(
            item.tracker,
            functools.partial(_check, item),
            functools.partial(restart_consumer, prober.queue, item),
        )
    if not prober.probes and not prober.checks:
        return None
    prober.start()
    return prober


def start_tasks(queue: MessageQueue, tasks: Iterable[_Task]) -> None:
    """Make each declared function a ``@task`` on ``queue``."""
    for item in tasks:
        item.bound = make_task(queue=queue, **item.options)(item.func)


def start_schedules(service: str, queue: MessageQueue, schedules: list[Schedule]) -> Scheduler:
    """Start the scheduler of ``service``'s schedules; its transport must be able to claim ticks."""
    require_capability(queue.transport, Capability.CLAIMS, feature=f"schedules of {service!r}")
    scheduler = Scheduler(service, queue.transport, schedules)
    scheduler.start()
    return scheduler
