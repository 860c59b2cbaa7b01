"""Durable events: typed events carried by a WorkQueue, with invalid ones dead-lettered.

Pub/sub delivery is at-most-once. For an event that must survive a consumer being down, put it
on a :class:`~eventforge.workqueue.WorkQueue` (Redis Streams or JetStream on those transports;
this process's memory otherwise) and consume it with a typed handler::

    orders = event_work_queue(OrderCreated, transport)
    put_event(orders, OrderCreated(order_id=1, total=9.5))
    consumer = consume_events(orders, on_order)      # def on_order(evt: OrderCreated)

A handler that returns acks the item; one that raises has it retried by the queue's retry policy
(and dead-lettered once the attempts are spent). An item that does not validate as the event is
dead-lettered at once (retrying cannot fix it) and counted in ``consumer.rejected``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

from eventforge.events import (
    EVENT_HEADER,
    EventValidationError,
    decode_event,
    encode_event,
    event_info,
    event_type_of,
    listener_info,
)
from eventforge.transport import Transport, run_sync
from eventforge.workqueue._api import Consumer, Delivery, WorkQueue

__all__ = ["EventConsumer", "consume_events", "event_work_queue", "put_event"]

log = logging.getLogger("eventforge.events")


def event_work_queue(
    event_cls: type, transport: Transport | None = None, **options: Any
) -> WorkQueue:
    """The work queue of ``event_cls``: named after the event, on ``transport``'s backend."""

    return WorkQueue(event_info(event_cls).name, transport, **options)


def put_event(work_queue: WorkQueue, event: object) -> str:
    """Store ``event`` on ``work_queue`` (durably, on a durable backend); return the message id."""
    _topic, payload, name = encode_event(event)
    headers: dict[str, Any] = {EVENT_HEADER: name}
    return work_queue.put(payload, **headers)


class EventConsumer(Consumer):
    """Worker threads that take events from a work queue and run a typed handler on each.

    Counters: ``handled`` (acked), ``failed`` (the handler raised; retried by the policy) and
    ``rejected`` (did not validate; dead-lettered at once).
    """

    thread_name = "eventforge-events"

    def __init__(
        self,
        work_queue: WorkQueue,
        event_cls: type,
        handler: Callable[[Any], Any],
        concurrency: int = 1,
    ) -> None:
        self.event_cls = event_info(event_cls).cls
        self.rejected = 0
        super().__init__(work_queue, handler, concurrency)

    @property
    def work_queue(self) -> WorkQueue:
        """The work queue the events come from."""
        return self.queue

    def _process(self, delivery: Delivery) -> None:
        try:
            event: Any = decode_event(self.event_cls, delivery.message)
        except EventValidationError as exc:
            log.warning("%s; dead-lettered", exc)
            delivery.nack(requeue=False)
            self._count("rejected")
            return
        try:
            result = self.handler(event)
            if inspect.isawaitable(result):
                run_sync(result)
        except Exception:
            log.warning(
                "event handler %r failed on attempt %d of message %s",
                self.handler,
                delivery.attempt,
                delivery.message.id,
                exc_info=True,
            )
            delivery.nack()
            self._count("failed")
            return
        delivery.ack()
        self._count("handled")

    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)


def consume_events(
    work_queue: WorkQueue, handler: object, *, concurrency: int = 1
) -> EventConsumer:
    """Consume the events on ``work_queue`` with a typed handler or an ``@event_listener``.

    ``handler`` is a function annotated with the event class (``def on(evt: OrderCreated)``),
    plain or ``async``, or an ``@event_listener`` instance (its ``on`` is called).
    """
    try:
        info = listener_info(handler)
    except TypeError:
        info = None
    call: Callable[[Any], Any]
    if info is not None:
        cls, call = info.event, handler.on  # type: ignore[attr-defined]
    elif callable(handler):
        found = event_type_of(handler)
        if found is None:
            raise TypeError(
                f"{handler!r} takes no @event class; annotate its first parameter with the event "
                "(def on(evt: OrderCreated)) or pass an @event_listener instance"
            )
        cls, call = found, handler
    else:
        raise TypeError(f"consume_events needs a typed handler or a listener, got {handler!r}")
    return EventConsumer(work_queue, cls, call, concurrency)
