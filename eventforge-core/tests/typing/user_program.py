"""A user program on the typed public API: ``mypy --strict`` must accept it as written.

Checked by ``./scripts/lint.sh`` (it is in the mypy ``files``) and by ``test_typing.py``, which
also proves that mistakes (a misspelt import, wrong task arguments) are reported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from eventforge import (
    ExecutionMode,
    Executor,
    Message,
    MessageQueue,
    RequestTimeout,
    ResultHandle,
    ResultStatus,
    SharedState,
    TaskResult,
    event,
    task,
)
from eventforge.execution import TaskId
from pydantic import BaseModel
from typing_extensions import assert_type


@event("orders.created")
class OrderCreated(BaseModel):
    order_id: int
    total: float


def square(x: int) -> int:
    return x * x


async def double(x: int) -> int:
    return 2 * x


def typed_handlers(queue: MessageQueue) -> None:
    @queue.on("orders.created")
    def on_order(order: OrderCreated) -> None:
        print(order.order_id)

    @queue.on("events.user")
    def on_message(message: Message) -> None:
        print(message.payload)

    # the decorator returns the handler unchanged, signature included
    handler: Callable[[OrderCreated], None] = on_order
    assert_type(handler(OrderCreated(order_id=1, total=2.5)), None)
    queue.on(OrderCreated, on_order)


def requests(queue: MessageQueue) -> None:
    maybe = queue.request("math.add", {"a": 1, "b": 2}, timeout=1.0)
    assert_type(maybe, "Message | None")
    try:
        response = queue.ask("math.add", {"a": 1, "b": 2}, timeout=1.0)
    except RequestTimeout as exc:
        assert_type(exc.topic, str)
        return
    assert_type(response, Message)
    print(response.payload)


async def requests_async(queue: MessageQueue) -> None:
    response = await queue.ask_async("math.add", {"a": 1, "b": 2}, timeout=1.0)
    assert_type(response, Message)


def tasks() -> None:
    with Executor(mode=ExecutionMode.THREAD) as executor:
        task_id = executor.submit(square, 3)
        assert_type(task_id, TaskId[int])
        result = executor.result(task_id)
        assert_type(result, TaskResult[int])
        assert_type(result.value, "int | None")
        assert_type(result.unwrap(), int)
        assert_type(executor.result(executor.submit(double, 3)).unwrap(), int)
        assert_type(executor.result("an id kept as a plain str"), TaskResult[Any])


async def tasks_async() -> None:
    with Executor() as executor:
        task_id = await executor.submit_async(double, 4)
        assert_type(await executor.result_async(task_id), TaskResult[int])


def tasks_decorated(queue: MessageQueue) -> None:
    @task(queue=queue, publish_result=False)
    def scale(values: list[int], factor: int = 1) -> list[int]:
        return [v * factor for v in values]

    assert_type(scale([1, 2], factor=3), list[int])
    assert_type(scale.publish([1, 2], factor=3), str)
    assert_type(scale.state, SharedState)
    assert_type(scale.handler_id, "str | None")
    assert_type(scale.unsubscribe(), bool)
    handle = scale.send([1, 2], factor=3)  # the task's parameters, checked
    assert_type(handle, ResultHandle[Any])
    assert_type(handle.status, ResultStatus)
    assert_type(scale.result(handle.task_id).ready(), bool)
