"""Typed events over the in-process transport: @event, typed handlers, listeners, validation."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
from eventforge import MessageQueue
from eventforge.events import (
    EVENT_HEADER,
    EventListener,
    EventValidationError,
    event,
    event_info,
    event_listener,
)
from eventforge.message import Message
from eventforge.testing import wait_until
from pydantic import BaseModel


@event()
@dataclass
class HelloEvent:
    world: str


@event("orders.created", durable=True)
class OrderCreated(BaseModel):
    order_id: int
    total: float


@pytest.fixture
def queue() -> Any:
    errors: list[BaseException] = []
    q = MessageQueue(error_hook=lambda exc, msg, handler: errors.append(exc))
    q.errors = errors  # type: ignore[attr-defined]
    yield q
    q.close()


def test_event_name_defaults_to_class_name_and_is_the_topic() -> None:
    assert event_info(HelloEvent).name == "HelloEvent"
    assert event_info(OrderCreated).name == "orders.created"
    assert event_info(OrderCreated).durable is True


def test_an_event_name_that_is_no_valid_topic_is_refused() -> None:
    with pytest.raises(ValueError, match="not a valid one"):

        @event("orders created")
        @dataclass
        class Bad:
            x: int


def test_event_needs_a_model_or_dataclass() -> None:
    with pytest.raises(TypeError, match="pydantic model or a dataclass"):
        event()(int)


def test_published_event_is_a_json_safe_dict_with_the_event_header(queue: MessageQueue) -> None:
    seen: list[Message] = []
    queue.subscribe("orders.created", seen.append)
    queue.publish(OrderCreated(order_id=7, total=1.5))
    assert seen[0].payload == {"order_id": 7, "total": 1.5}
    assert seen[0].headers[EVENT_HEADER] == "orders.created"


@pytest.mark.parametrize("cls_event", [HelloEvent("world"), OrderCreated(order_id=1, total=2.0)])
def test_sync_handler_annotated_with_the_event_gets_it_validated(
    queue: MessageQueue, cls_event: Any
) -> None:
    got: list[Any] = []
    cls = type(cls_event)

    def handler(evt: cls) -> None:  # type: ignore[valid-type]
        got.append(evt)

    handler.__annotations__ = {"evt": cls, "return": None}
    queue.subscribe(event_info(cls).name, handler)
    queue.publish(cls_event)
    assert got == [cls_event]
    assert type(got[0]) is cls


def test_async_handler_subscribed_by_event_class(queue: MessageQueue) -> None:
    got: list[HelloEvent] = []

    async def handler(evt: HelloEvent) -> None:
        await asyncio.sleep(0)
        got.append(evt)

    queue.subscribe(HelloEvent, handler)
    queue.publish(HelloEvent("async"))
    assert wait_until(lambda: got == [HelloEvent("async")], timeout=5.0)


def test_decorator_with_event_class(queue: MessageQueue) -> None:
    got: list[OrderCreated] = []

    @queue.on(OrderCreated)
    def handler(evt):  # type: ignore[no-untyped-def]
        got.append(evt)

    queue.publish("orders.created", {"order_id": "3", "total": 4})
    assert got == [OrderCreated(order_id=3, total=4.0)]


def test_handler_annotated_with_another_event_is_refused(queue: MessageQueue) -> None:
    def handler(evt: HelloEvent) -> None: ...

    with pytest.raises(TypeError, match="takes HelloEvent but is subscribed to OrderCreated"):
        queue.subscribe(OrderCreated, handler)


@pytest.mark.parametrize("use_async", [False, True])
def test_invalid_envelope_never_reaches_the_handler_and_is_counted(
    queue: Any, use_async: bool
) -> None:
    got: list[OrderCreated] = []
    if use_async:

        async def handler(evt: OrderCreated) -> None:
            got.append(evt)
    else:

        def handler(evt: OrderCreated) -> None:  # type: ignore[misc]
            got.append(evt)

    queue.subscribe(OrderCreated, handler)
    queue.publish("orders.created", {"order_id": "not a number"})
    queue.publish("orders.created", {"order_id": 1, "total": 1}, **{EVENT_HEADER: "HelloEvent"})
    queue.publish(OrderCreated(order_id=2, total=3.0))
    assert wait_until(lambda: got == [OrderCreated(order_id=2, total=3.0)], timeout=5.0)
    assert wait_until(lambda: queue.stats["rejected"] == 2, timeout=5.0)
    assert queue.stats["handler_errors"] == 0
    assert [type(e) for e in queue.errors] == [EventValidationError, EventValidationError]
    assert "carries event 'HelloEvent'" in str(queue.errors[1])


def test_listener_class_sync_and_async(queue: MessageQueue) -> None:
    got: list[Any] = []

    @event_listener(HelloEvent)
    class SyncListener(EventListener[HelloEvent]):
        def on(self, event: HelloEvent) -> None:
            got.append(("sync", event.world))

    @event_listener(HelloEvent)
    class AsyncListener:
        async def on(self, event: HelloEvent) -> None:
            got.append(("async", event.world))

    queue.listen(SyncListener())
    queue.listen(AsyncListener())
    queue.publish(HelloEvent("w"))
    assert wait_until(lambda: sorted(got) == [("async", "w"), ("sync", "w")], timeout=5.0)


def test_listeners_with_one_name_share_the_work_per_process_ones_each_get_all() -> None:
    shared_a: list[int] = []
    shared_b: list[int] = []
    every: list[int] = []

    @event_listener(OrderCreated, name="billing")
    class Billing:
        def __init__(self, sink: list[int]) -> None:
            self.sink = sink

        def on(self, event: OrderCreated) -> None:
            self.sink.append(event.order_id)

    @event_listener(OrderCreated, per_process=True)
    class Audit:
        def on(self, event: OrderCreated) -> None:
            every.append(event.order_id)

    from eventforge import MemoryTransport

    transport = MemoryTransport()
    q1 = MessageQueue(transport, close_transport=False)
    q2 = MessageQueue(transport, close_transport=False)
    try:
        q1.listen(Billing(shared_a))
        q2.listen(Billing(shared_b))
        q1.listen(Audit())
        q2.listen(Audit())
        for n in range(10):
            q1.publish(OrderCreated(order_id=n, total=1.0))
        assert sorted(shared_a + shared_b) == list(range(10))
        assert shared_a
        assert shared_b
        assert sorted(every) == sorted(list(range(10)) * 2)
    finally:
        q1.close()
        q2.close()
        transport.close()


def test_listen_needs_a_listener(queue: MessageQueue) -> None:
    with pytest.raises(TypeError, match="not an event listener"):
        queue.listen(object())


def test_publish_refuses_other_objects(queue: MessageQueue) -> None:
    with pytest.raises(TypeError, match="topic \\(str\\) or an @event instance"):
        queue.publish(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="takes no payload"):
        queue.publish(HelloEvent("x"), {"extra": 1})


def test_publish_async_event(queue: MessageQueue) -> None:
    got: list[HelloEvent] = []
    queue.subscribe(HelloEvent, got.append)

    async def main() -> None:
        await queue.publish_async(HelloEvent("a"))

    asyncio.run(main())
    assert got == [HelloEvent("a")]
