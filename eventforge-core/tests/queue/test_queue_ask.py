"""``ask``: request-reply that returns the reply or raises, and typed task ids at run time."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from eventforge import Executor, Message, MessageQueue, NoRespondersError, RequestTimeout
from eventforge.execution import TaskId


@pytest.fixture
def queue() -> Iterator[MessageQueue]:
    q = MessageQueue()

    @q.on("math.add")
    def add(message: Message) -> None:
        q.reply(message, message.payload["a"] + message.payload["b"])

    yield q
    q.close()


def test_ask_returns_the_reply(queue: MessageQueue) -> None:
    assert queue.ask("math.add", {"a": 10, "b": 20}, timeout=5.0).payload == 30


def test_ask_unanswered_raises_request_timeout_naming_the_topic(queue: MessageQueue) -> None:
    queue.subscribe("math.silent", lambda message: None)  # receives, never replies
    with pytest.raises(RequestTimeout, match=r"'math\.silent'") as info:
        queue.ask("math.silent", None, timeout=0.05)
    assert isinstance(info.value, TimeoutError)
    assert (info.value.topic, info.value.timeout) == ("math.silent", 0.05)
    assert queue.pending_requests == 0


def test_ask_with_nobody_subscribed_raises_no_responders_at_once(queue: MessageQueue) -> None:
    with pytest.raises(NoRespondersError, match=r"'math\.nobody'"):
        queue.ask("math.nobody", None, timeout=5.0)
    assert queue.pending_requests == 0


def test_ask_async_returns_the_reply_and_raises_on_timeout(queue: MessageQueue) -> None:
    async def main() -> None:
        reply = await queue.ask_async("math.add", {"a": 1, "b": 2}, timeout=5.0)
        assert reply.payload == 3
        queue.subscribe("math.silent", lambda message: None)
        with pytest.raises(RequestTimeout):
            await queue.ask_async("math.silent", None, timeout=0.05)

    asyncio.run(main())


def test_task_id_is_a_plain_string_at_run_time() -> None:
    with Executor() as executor:
        task_id: TaskId[int] = executor.submit(pow, 2, 10)
        assert type(task_id) is str
        assert executor.result(task_id).unwrap() == 1024
