"""The Transport base class: the default receive_async, capabilities, require_capability."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque

import pytest
from eventforge.errors import UnsupportedCapabilityError
from eventforge.message import Message
from eventforge.transport import Callback, Capability, Transport, require_capability


class PullOnly(Transport):
    """The smallest honest transport: a receive queue and nothing else, with the default async."""

    name = "pull-only"
    capabilities = frozenset({Capability.HEADERS})

    def __init__(self) -> None:
        self.queue: deque[Message] = deque()
        self.cond = threading.Condition()
        self.entered = threading.Event()
        self.closed = False

    def send(self, message: Message) -> None:
        with self.cond:
            self.queue.append(message)
            self.cond.notify_all()

    def receive(self, topic: str, timeout: float | None = None) -> Message | None:
        self.entered.set()
        with self.cond:
            self.cond.wait_for(lambda: bool(self.queue), timeout)
            return self.queue.popleft() if self.queue else None

    def subscribe(self, topic: str, callback: Callback) -> str:
        raise TypeError("PullOnly has no subscriptions; use receive")

    def unsubscribe(self, subscription_id: str) -> bool:
        return False

    def close(self) -> None:
        self.closed = True


def test_default_receive_async_returns_a_message_sent_from_another_thread() -> None:
    t = PullOnly()

    async def main() -> Message | None:
        task = asyncio.create_task(t.receive_async("a.b", timeout=5))
        await asyncio.to_thread(t.entered.wait, 5)
        t.send(Message("a.b", "hi"))
        return await task

    message = asyncio.run(main())
    assert message is not None
    assert message.payload == "hi"


def test_default_receive_async_times_out_with_none() -> None:
    assert asyncio.run(PullOnly().receive_async("a.b", timeout=0.05)) is None


def test_default_receive_async_keeps_the_loop_running() -> None:
    t = PullOnly()

    async def main() -> int:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        ticker = asyncio.create_task(tick())
        await t.receive_async("a.b", timeout=0.2)
        ticker.cancel()
        return ticks

    assert asyncio.run(main()) >= 2


def test_message_taken_after_cancellation_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    t = PullOnly()
    caplog.set_level(logging.WARNING, logger="eventforge.transport")

    async def main() -> None:
        task = asyncio.create_task(t.receive_async("a.b"))
        await asyncio.to_thread(t.entered.wait, 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        t.send(Message("a.b", "late", id="late-1"))  # the abandoned slice takes it
        for _ in range(500):
            if "late-1" in caplog.text:
                return
            await asyncio.sleep(0.01)

    asyncio.run(main())
    assert "was cancelled while PullOnly received message late-1" in caplog.text


def test_capabilities_and_refusal() -> None:
    t = PullOnly()
    assert t.has(Capability.HEADERS)
    assert not t.has(Capability.GROUPS)
    require_capability(t, Capability.HEADERS, feature="headers")
    with pytest.raises(UnsupportedCapabilityError) as info:
        require_capability(t, Capability.DURABLE, feature="a durable work queue")
    assert str(info.value) == (
        "a durable work queue needs a transport with the 'durable' capability, but PullOnly "
        "('pull-only') declares only ['headers']; choose another transport"
    )
    assert info.value.capability == "durable"


def test_optional_methods_refuse_clearly() -> None:
    t = PullOnly()
    with pytest.raises(UnsupportedCapabilityError, match="no native request/reply"):
        t.request(Message("a.b"), timeout=1)
    assert t.stats() == {}
    with t as entered:
        assert entered is t
    assert t.closed


def test_every_capability_is_listed() -> None:
    names = {v for k, v in vars(Capability).items() if k.isupper() and isinstance(v, str)}
    assert names == Capability.ALL
