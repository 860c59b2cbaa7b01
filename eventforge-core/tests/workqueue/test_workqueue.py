"""WorkQueue front: backend choice by transport, bounds, push/pull helpers, lifecycle."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, ClassVar

import pytest
from eventforge import MemoryTransport, Message, RetryPolicy, WorkQueue
from eventforge.config import _settings as config_settings
from eventforge.errors import ConfigurationError, TransportClosedError, UnsupportedCapabilityError
from eventforge.transport import Callback, Capability, Transport
from eventforge.transports._memory_workqueue import MemoryWorkQueueBackend, WorkQueueFull
from eventforge.workqueue._api import ATTEMPT_HEADER, WorkQueueBackend

FAST = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.02, jitter=0.0)


class PlainTransport(Transport):
    """A transport with no optional capability (enough to be refused by WorkQueue)."""

    name = "plain"

    def send(self, message: Message) -> None:
        pass

    def receive(self, topic: str, timeout: float | None = None) -> Message | None:
        return None

    def subscribe(self, topic: str, callback: Callback) -> str:
        return "sub"

    def unsubscribe(self, subscription_id: str) -> bool:
        return False

    def close(self) -> None:
        pass


class DurableTransport(PlainTransport):
    """Declares DURABLE and hands out a backend; records what WorkQueue asked for."""

    name = "durable-test"
    capabilities: ClassVar[frozenset[str]] = frozenset({Capability.DURABLE})

    def __init__(self) -> None:
        self.asked: list[tuple[str, RetryPolicy]] = []

    def work_queue_backend(self, name: str, policy: RetryPolicy) -> WorkQueueBackend:
        self.asked.append((name, policy))
        return MemoryWorkQueueBackend(name)


def test_default_and_memory_transport_use_the_in_process_backend() -> None:
    with WorkQueue() as default, WorkQueue("jobs", MemoryTransport()) as memory:
        assert isinstance(default.backend, MemoryWorkQueueBackend)
        assert isinstance(memory.backend, MemoryWorkQueueBackend)
        assert default.name == "default"
        assert memory.backend.name == "jobs"


def test_durable_transport_provides_the_backend() -> None:
    transport = DurableTransport()
    with WorkQueue("orders", transport, retry=FAST) as queue:
        assert transport.asked == [("orders", FAST)]
        queue.put("x")
        assert queue.stats["pending"] == 1


def test_transport_without_durable_capability_is_refused_clearly() -> None:
    with pytest.raises(UnsupportedCapabilityError, match="durable") as info:
        WorkQueue("orders", PlainTransport())
    assert info.value.capability == Capability.DURABLE
    assert "WorkQueue 'orders'" in str(info.value)


def test_only_a_queue_given_neither_transport_nor_backend_takes_the_configured_transport(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(config_settings, "_current", None)
    monkeypatch.setenv("EVENTFORGE_TRANSPORT", "memroy")  # a typo: taking it fails loudly
    with pytest.raises(ConfigurationError, match="EVENTFORGE_TRANSPORT"):
        WorkQueue("jobs")
    WorkQueue("jobs", backend=MemoryWorkQueueBackend("jobs")).close()
    WorkQueue("jobs", MemoryTransport()).close()


def test_explicit_backend_wins() -> None:
    backend = MemoryWorkQueueBackend("mine")
    with WorkQueue("mine", PlainTransport(), backend=backend) as queue:
        assert queue.backend is backend


def test_put_beyond_max_size_raises_and_stores_nothing() -> None:
    with WorkQueue(max_size=2) as queue:
        queue.put(1)
        queue.put(2)
        with pytest.raises(WorkQueueFull, match="max_size=2"):
            queue.put(3)
        assert queue.stats["pending"] == 2
        assert queue.stats["put"] == 2


def test_attempt_is_visible_in_the_message_headers() -> None:
    with WorkQueue(retry=FAST) as queue:
        queue.put("x")
        first = queue.get(timeout=5)
        assert first is not None
        assert first.message.headers[ATTEMPT_HEADER] == 1
        first.nack()
        second = queue.get(timeout=5)
        assert second is not None
        assert second.message.headers[ATTEMPT_HEADER] == 2
        second.ack()


def test_explicit_nack_delay_is_scheduled_not_blocking() -> None:
    with WorkQueue(retry=FAST) as queue:
        queue.put("later")
        queue.put("now")
        first = queue.get(timeout=5)
        assert first is not None
        first.nack(delay=30)
        other = queue.get(timeout=5)
        assert other is not None
        assert other.message.payload == "now"
        other.ack()
        assert queue.get(timeout=0.1) is None
        assert queue.stats["delayed"] == 1


def test_in_progress_extends_the_lease() -> None:
    with WorkQueue(visibility_timeout=0.5) as queue:
        queue.put("long job")
        delivery = queue.get(timeout=5)
        assert delivery is not None
        stop = threading.Event()

        def heartbeat() -> None:
            while not stop.wait(0.02):
                delivery.in_progress()

        beating = threading.Thread(target=heartbeat)
        beating.start()
        try:
            assert queue.get(timeout=1.0) is None  # never redelivered while it is kept alive
        finally:
            stop.set()
            beating.join()
        delivery.ack()
        assert queue.stats["expired"] == 0


def test_process_drains_synchronously_and_stops_when_idle() -> None:
    with WorkQueue(retry=FAST) as queue:
        for i in range(5):
            queue.put(i)
        seen: list[int] = []
        assert queue.process(lambda m: seen.append(m.payload), max_items=3) == 3
        assert seen == [0, 1, 2]
        assert queue.process(lambda m: seen.append(m.payload), timeout=0.1) == 2
        assert seen == [0, 1, 2, 3, 4]
        assert queue.stats["acked"] == 5


def test_handler_errors_are_logged_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    def fails(message: Message) -> None:
        raise RuntimeError("handler broke")

    with WorkQueue(retry=RetryPolicy(max_attempts=1)) as queue:
        queue.put("x")
        with caplog.at_level(logging.WARNING, logger="eventforge.workqueue"):
            assert queue.process(fails, timeout=0.1) == 1
        assert queue.stats["handler_errors"] == 1
        assert queue.stats["dead_lettered"] == 1
        assert "handler broke" in caplog.text


def test_coroutine_handler_is_awaited() -> None:
    done: list[Any] = []

    async def handler(message: Message) -> None:
        await asyncio.sleep(0)
        done.append(message.payload)

    with WorkQueue(retry=FAST) as queue:
        queue.put("a")
        queue.put("b")
        consumer = queue.consume(handler)
        assert queue.join(10)
        consumer.stop()
        assert sorted(done) == ["a", "b"]
        assert consumer.handled == 2


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_consumer_that_dies_mid_item_leaves_it_for_another() -> None:
    """A consumer thread killed between fetch and settle: the item is redelivered."""
    with WorkQueue(retry=FAST, visibility_timeout=0.2) as queue:
        queue.put("survives")

        class ConsumerDied(BaseException):
            pass

        def dies(message: Message) -> None:
            raise ConsumerDied  # not an Exception: escapes the handler wrapper, thread ends

        dead = queue.consume(dies)
        dead._threads[0].join(10)
        assert not dead.running
        got: list[int] = []
        healthy = queue.consume(lambda m: got.append(m.headers[ATTEMPT_HEADER]))
        assert queue.join(10)
        healthy.stop()
        assert got == [2]
        assert queue.stats["expired"] == 1


def test_cancelled_get_async_does_not_strand_an_item() -> None:
    with WorkQueue("cancelled.fetch", visibility_timeout=300.0) as wq:

        async def give_up() -> None:
            waiting = asyncio.ensure_future(wq.get_async(timeout=5))
            # Let the off-loop fetch start waiting for an item, then abandon it.
            for _ in range(20):
                await asyncio.sleep(0.005)
            waiting.cancel()
            try:
                await waiting
            except asyncio.CancelledError:
                pass
            # An item put now may be taken by the abandoned fetch: it must come back.
            wq.put("job")

        asyncio.run(give_up())
        delivery = wq.get(timeout=5)
        assert delivery is not None, f"the item was stranded in flight: {wq.stats}"
        assert delivery.message.payload == "job"
        delivery.ack()
        assert wq.stats["in_flight"] == 0


def test_close_stops_consumers_and_refuses_more_work() -> None:
    queue = WorkQueue()
    consumer = queue.consume(lambda m: None, concurrency=2)
    queue.close()
    assert not consumer.running
    with pytest.raises(TransportClosedError):
        queue.put("late")
    with pytest.raises(TransportClosedError):
        queue.consume(lambda m: None)
    queue.close()  # idempotent


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="visibility_timeout"):
        WorkQueue(visibility_timeout=0)
    with pytest.raises(ValueError, match="concurrency"):
        WorkQueue().consume(lambda m: None, concurrency=0)


def test_settled_leases_do_not_accumulate() -> None:
    backend = MemoryWorkQueueBackend("churn", visibility_timeout=300)
    with WorkQueue("churn", backend=backend) as queue:
        for i in range(3000):
            queue.put(i)
            delivery = queue.get(timeout=5)
            assert delivery is not None
            delivery.ack()
        assert queue.stats["acked"] == 3000
        assert queue.stats["in_flight"] == 0
        assert len(backend._expiries) <= 2 * 0 + 1024 + 1


def test_bad_names_and_headers_are_refused_on_every_backend() -> None:
    with pytest.raises(ValueError, match="empty segment"):
        WorkQueue("jobs..x")
    with WorkQueue("jobs") as queue:
        with pytest.raises(TypeError, match="header 'meta' is a dict"):
            queue.put("x", meta={"nested": True})
        assert queue.stats["pending"] == 0
