"""Durable events on a work queue (in this process's memory): typed consumers, dead letters."""

from __future__ import annotations

from typing import Any

import pytest
from eventforge import WorkQueue
from eventforge.events import EVENT_HEADER, event, event_listener
from eventforge.testing import wait_until
from eventforge.workqueue import RetryPolicy
from eventforge.workqueue._events import consume_events, event_work_queue, put_event
from pydantic import BaseModel


@event("durable.order")
class Order(BaseModel):
    order_id: int


@pytest.fixture
def orders() -> Any:
    queue = event_work_queue(Order, retry=RetryPolicy(max_attempts=2, initial_backoff=0.01))
    yield queue
    queue.close()


@pytest.mark.parametrize("use_async", [False, True])
def test_typed_consumer_gets_events_and_invalid_ones_are_dead_lettered_at_once(
    orders: WorkQueue, use_async: bool
) -> None:
    got: list[Order] = []
    if use_async:

        async def on_order(evt: Order) -> None:
            got.append(evt)
    else:

        def on_order(evt: Order) -> None:  # type: ignore[misc]
            got.append(evt)

    assert orders.name == "durable.order"
    put_event(orders, Order(order_id=1))
    orders.put({"order_id": "not a number"}, **{EVENT_HEADER: "durable.order"})
    put_event(orders, Order(order_id=2))
    with consume_events(orders, on_order) as consumer:
        assert wait_until(lambda: consumer.handled == 2 and consumer.rejected == 1)
    assert got == [Order(order_id=1), Order(order_id=2)]
    dead = orders.dead_letters()
    assert [d.message.payload for d in dead] == [{"order_id": "not a number"}]
    assert dead[0].attempts == 1  # not retried: retrying cannot make it valid


def test_a_failing_handler_is_retried_then_dead_lettered(orders: WorkQueue) -> None:
    attempts: list[int] = []

    @event_listener(Order)
    class Flaky:
        def on(self, event: Order) -> None:
            attempts.append(event.order_id)
            raise RuntimeError("downstream is down")

    put_event(orders, Order(order_id=7))
    with consume_events(orders, Flaky()) as consumer:
        assert wait_until(lambda: len(orders.dead_letters()) == 1)
    assert attempts == [7, 7]
    assert consumer.failed == 2
    assert consumer.handled == 0


def test_consume_events_needs_a_typed_handler(orders: WorkQueue) -> None:
    with pytest.raises(TypeError, match="takes no @event class"):
        consume_events(orders, lambda message: None)
    with pytest.raises(ValueError, match="concurrency"):
        consume_events(orders, Flaky2(), concurrency=0)


@event_listener(Order)
class Flaky2:
    def on(self, event: Order) -> None: ...
