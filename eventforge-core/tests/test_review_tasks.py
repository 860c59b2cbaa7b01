"""@task review: the async lifecycle publishes its outcome without blocking the running loop."""

from __future__ import annotations

import asyncio
import threading
from typing import ClassVar

from eventforge.message import Message
from eventforge.queue import MessageQueue
from eventforge.tasks import task
from eventforge.transport import Capability
from eventforge.transports.memory import MemoryTransport


class _LoopGatedTransport(MemoryTransport):
    """A network-like transport: sending ``*.success`` needs the event loop to make progress."""

    capabilities: ClassVar[frozenset[str]] = MemoryTransport.capabilities - {Capability.ZERO_COPY}

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def send(self, message: Message) -> None:
        if message.topic.endswith(".success") and not self.gate.wait(5):
            raise TimeoutError("the send waited for the event loop, which was blocked")
        super().send(message)


def test_async_task_publishes_its_result_off_the_running_loop() -> None:
    transport = _LoopGatedTransport()
    with MessageQueue(transport) as queue:
        outcomes = queue.cache("review.double.success")

        @task(queue=queue, topic="review.double")
        async def double(x: int) -> int:
            return x * 2

        async def main() -> int:
            asyncio.get_running_loop().call_soon(transport.gate.set)
            return int(await double(21))

        assert asyncio.run(main()) == 42
        published = outcomes.get(timeout=5)
        assert published is not None, "the outcome was not published"
        assert published.payload == 42
