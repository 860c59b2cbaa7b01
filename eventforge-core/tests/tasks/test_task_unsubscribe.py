"""A ``@task(queue=...)`` subscription can be removed: ``my_task.unsubscribe()``."""

from __future__ import annotations

import asyncio
from typing import Any

from eventforge import MessageQueue, task
from eventforge.testing import wait_until


def test_unsubscribe_stops_the_queue_trigger_but_not_direct_calls() -> None:
    seen: list[Any] = []
    with MessageQueue() as queue:

        @task(queue=queue, topic="jobs.scale", publish_result=False)
        def scale(value: int) -> int:
            seen.append(value)
            return value * 2

        assert scale.handler_id is not None
        assert scale.subscription_id == scale.handler_id
        queue.publish("jobs.scale", 1)
        assert wait_until(lambda: seen == [1], timeout=5.0)

        assert scale.unsubscribe() is True
        assert scale.handler_id is None
        assert scale.subscription_id is None
        queue.publish("jobs.scale", 2)
        scale.publish(3)  # still publishes; nothing here runs the task any more
        assert scale(4) == 8  # a direct call still runs the task
        # The memory transport runs sync handlers inside publish: had the subscription
        # survived, 2 and 3 would be in ``seen`` already.
        assert seen == [1, 4]
        assert scale.unsubscribe() is False  # idempotent


def test_handler_id_works_with_queue_unsubscribe() -> None:
    seen: list[Any] = []
    with MessageQueue() as queue:

        @task(queue=queue, publish_result=False)
        async def record(value: int) -> None:
            seen.append(value)

        assert queue.unsubscribe(record.handler_id) is True
        queue.publish("record", 1)
        asyncio.run(record(2))  # nobody subscribes "record" any more: publish ran nothing
        assert seen == [2]
        assert record.unsubscribe() is False


def test_a_task_without_a_queue_has_nothing_to_unsubscribe() -> None:
    @task()
    def plain(x: int) -> int:
        return x + 1

    assert plain.handler_id is None
    assert plain.unsubscribe() is False
    assert plain(1) == 2
