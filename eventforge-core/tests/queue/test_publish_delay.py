"""publish(delay=) / publish(not_before=): held by a transport that declares delayed_send
(memory), refused at once elsewhere, never turned into headers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from eventforge import MessageQueue
from eventforge.errors import UnsupportedCapabilityError
from eventforge.message import Message
from eventforge.middleware import Middleware
from eventforge.testing import wait_until
from eventforge.transport import Capability
from eventforge.transports.local import LocalTransport
from eventforge.transports.memory import MemoryTransport


def arrivals(queue: MessageQueue, topic: str) -> list[tuple[float, Message]]:
    got: list[tuple[float, Message]] = []
    queue.subscribe(topic, lambda m: got.append((time.time(), m)))
    return got


def test_a_delayed_publish_arrives_no_earlier_than_its_delay() -> None:
    with MessageQueue(MemoryTransport()) as queue:
        got = arrivals(queue, "jobs.later")
        sent = time.time()
        queue.publish("jobs.later", "x", delay=0.3)
        time.sleep(0.1)
        assert got == []  # still held
        assert wait_until(lambda: len(got) == 1, timeout=5)
        arrived, message = got[0]
        assert arrived - sent >= 0.3
        assert arrived - sent < 0.3 + 1.0  # held by a timer, not by polling
        assert message.payload == "x"
        assert "delay" not in message.headers


def test_not_before_accepts_an_aware_datetime_and_a_time_in_the_past_sends_at_once() -> None:
    with MessageQueue(MemoryTransport()) as queue:
        got = arrivals(queue, "jobs.when")
        queue.publish("jobs.when", "past", not_before=time.time() - 10)
        assert [m.payload for _, m in got] == ["past"]  # synchronously, as a plain publish
        due = datetime.now(timezone.utc) + timedelta(seconds=0.2)
        queue.publish("jobs.when", "future", not_before=due)
        assert wait_until(lambda: len(got) == 2, timeout=5)
        assert got[1][0] >= due.timestamp()


def test_delayed_messages_come_out_in_due_order_and_equal_times_in_publish_order() -> None:
    with MessageQueue(MemoryTransport()) as queue:
        got = arrivals(queue, "jobs.order")
        due = time.time() + 0.3
        queue.publish("jobs.order", "late", not_before=due + 0.1)
        queue.publish("jobs.order", "first", not_before=due)
        queue.publish("jobs.order", "second", not_before=due)
        assert wait_until(lambda: len(got) == 3, timeout=5)
        assert [m.payload for _, m in got] == ["first", "second", "late"]


def test_delay_keywords_are_checked_and_never_become_headers() -> None:
    with MessageQueue(MemoryTransport()) as queue:
        with pytest.raises(ValueError, match="not both"):
            queue.publish("t.x", 1, delay=1, not_before=time.time() + 1)
        with pytest.raises(ValueError, match="aware datetime"):
            queue.publish("t.x", 1, not_before=datetime.now())
        with pytest.raises(ValueError, match="seconds >= 0"):
            queue.publish("t.x", 1, delay=-1)
        got = arrivals(queue, "t.x")
        queue.publish("t.x", 1, delay=0, priority="high")  # zero delay: a plain publish
        assert got[0][1].headers == {"priority": "high"}


def test_a_transport_that_cannot_hold_a_message_refuses_at_call_time(tmp_path: Path) -> None:
    transport = LocalTransport(tmp_path)
    assert not transport.has(Capability.DELAYED_SEND)
    with MessageQueue(transport) as queue:
        got = arrivals(queue, "t.x")
        with pytest.raises(UnsupportedCapabilityError, match=r"delayed_send.*memory"):
            queue.publish("t.x", 1, delay=5)
        assert queue.stats["published"] == 0
        assert got == []


def test_send_middleware_runs_when_the_message_is_published_not_when_it_is_due() -> None:
    seen: list[str] = []

    class Stamp(Middleware):
        def on_send(self, message: Message, send: Callable[[Message], None]) -> None:
            seen.append(message.topic)
            message.headers["stamped"] = True
            send(message)

    with MessageQueue(MemoryTransport(), middleware=[Stamp()]) as queue:
        got = arrivals(queue, "t.mw")
        queue.publish("t.mw", 1, delay=0.2)
        assert seen == ["t.mw"]  # at publish time
        assert wait_until(lambda: len(got) == 1, timeout=5)
        assert got[0][1].headers["stamped"] is True


def test_publish_async_with_a_delay_does_not_block_the_loop() -> None:
    async def scenario() -> list[tuple[float, Message]]:
        async with MessageQueue(MemoryTransport()) as queue:
            got = arrivals(queue, "t.async")
            await queue.publish_async("t.async", "a", delay=0.2)
            assert got == []
            for _ in range(100):
                if got:
                    break
                await asyncio.sleep(0.05)
            return got

    got = asyncio.run(scenario())
    assert [m.payload for _, m in got] == ["a"]


def test_closing_the_transport_drops_and_counts_what_is_still_held() -> None:
    transport = MemoryTransport()
    queue = MessageQueue(transport)
    got = arrivals(queue, "t.held")
    queue.publish("t.held", 1, delay=30)
    queue.publish("t.held", 2, delay=30)
    assert transport.stats()["delayed_pending"] == 2
    queue.close()
    assert transport.stats()["delayed_dropped"] == 2
    assert got == []
