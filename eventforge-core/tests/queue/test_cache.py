"""SubscriptionCache: get / pop / peek, wait_for_one, wait_for_many in all modes, bounds, close."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import pytest
from eventforge import MessageQueue
from eventforge.events import event
from eventforge.message import Message
from eventforge.queue.cache import SubscriptionCache, WaitMode


@event("cache.hello")
@dataclass
class Hello:
    n: int


@pytest.fixture
def queue() -> Any:
    q = MessageQueue()
    yield q
    q.close()


def payloads(items: Any) -> list[Any]:
    return [m.payload for m in items]


def later(queue: MessageQueue, *values: Any, topic: str = "c.x") -> threading.Thread:
    """Publish ``values`` from another thread once the caller waits (after a short pause)."""

    def run() -> None:
        threading.Event().wait(0.05)
        for value in values:
            queue.publish(topic, value)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_get_pop_peek_and_timeouts(queue: MessageQueue) -> None:
    with queue.cache("c.*") as cache:
        assert cache.get(timeout=0.01) is None
        assert cache.peek(timeout=0.01) is None
        assert cache.pop(timeout=0) is None
        for n in range(4):
            queue.publish("c.x", n)
        assert cache.peek().payload == 0
        assert cache.get().payload == 0  # oldest, removed
        assert cache.pop().payload == 3  # newest, removed
        assert payloads(cache.drain()) == [1, 2]
        thread = later(queue, "from another thread")
        assert cache.get(timeout=5).payload == "from another thread"
        thread.join()


def test_wait_for_one_predicate_value_and_message(queue: MessageQueue) -> None:
    with queue.cache("c.x") as cache:
        thread = later(queue, {"id": 1}, {"id": 2, "correlation": "abc"}, {"id": 3})
        found = cache.wait_for_one(lambda m: m.payload.get("correlation") == "abc", timeout=5)
        thread.join()
        assert found.payload["id"] == 2
        assert payloads(cache.drain()) == [{"id": 1}, {"id": 3}]
        queue.publish("c.x", "value")
        assert cache.wait_for_one("value", timeout=1).payload == "value"
        assert cache.wait_for_one("missing", timeout=0.05) is None
        message_id = queue.publish("c.x", "by id")
        assert cache.wait_for_one(Message("c.x", id=message_id), timeout=1).payload == "by id"


def test_wait_for_many_all_in_given_order(queue: MessageQueue) -> None:
    with queue.cache("c.x") as cache:
        thread = later(queue, "b", "a", "x", "b", "c")
        got = cache.wait_for_many(["a", "b", "c"], WaitMode.ALL_IN_GIVEN_ORDER, timeout=5)
        thread.join()
        assert {i: m.payload for i, m in got.items()} == {0: "a", 1: "b", 2: "c"}
        # The "b" before "a" did not count and is still there, like the unrelated "x".
        assert payloads(cache.drain()) == ["b", "x"]


def test_wait_for_many_given_order_times_out_when_order_differs(queue: MessageQueue) -> None:
    with queue.cache("c.x") as cache:
        for value in ("c", "b", "a"):
            queue.publish("c.x", value)
        got = cache.wait_for_many(["a", "b", "c"], WaitMode.ALL_IN_GIVEN_ORDER, timeout=0.1)
        assert {i: m.payload for i, m in got.items()} == {0: "a"}
        assert len(cache) == 2  # only the partial match was taken


def test_wait_for_many_all_in_random_order(queue: MessageQueue) -> None:
    with queue.cache("c.x") as cache:
        thread = later(queue, "c", "a", "b")
        got = cache.wait_for_many(["a", "b", "c"], WaitMode.ALL_IN_RANDOM_ORDER, timeout=5)
        thread.join()
        assert {i: m.payload for i, m in got.items()} == {0: "a", 1: "b", 2: "c"}
        assert len(cache) == 0


def test_wait_for_many_random_order_needs_distinct_messages(queue: MessageQueue) -> None:
    with queue.cache("c.x") as cache:
        queue.publish("c.x", "a")
        got = cache.wait_for_many(["a", "a"], WaitMode.ALL_IN_RANDOM_ORDER, timeout=0.05)
        assert list(got) == [0]
        queue.publish("c.x", "a")
        queue.publish("c.x", "a")
        got = cache.wait_for_many(["a", "a"], WaitMode.ALL_IN_RANDOM_ORDER, timeout=1)
        assert list(got) == [0, 1]


def test_wait_for_many_any_of_given(queue: MessageQueue) -> None:
    with queue.cache("c.x") as cache:
        thread = later(queue, "x", "b", "a")
        got = cache.wait_for_many(["a", "b"], WaitMode.ANY_OF_GIVEN_MSGS, timeout=5)
        thread.join()
        assert {i: m.payload for i, m in got.items()} == {1: "b"}
        assert cache.wait_for_many(["zzz"], WaitMode.ANY_OF_GIVEN_MSGS, timeout=0.05) == {}


def test_wait_for_many_refuses_bad_arguments(queue: MessageQueue) -> None:
    with queue.cache("c.x") as cache:
        with pytest.raises(ValueError, match="at least one target"):
            cache.wait_for_many([])
        with pytest.raises(TypeError, match="WaitMode"):
            cache.wait_for_many(["a"], mode="any")  # type: ignore[arg-type]


def test_bounded_with_overflow_counted(queue: MessageQueue) -> None:
    with queue.cache("c.x", max_size=3) as cache:
        for n in range(5):
            queue.publish("c.x", n)
        assert payloads(cache.drain()) == [2, 3, 4]
        assert cache.stats == {"size": 0, "received": 5, "overflow": 2}
    with pytest.raises(ValueError, match="max_size"):
        queue.cache("c.x", max_size=0)


def test_close_unsubscribes_and_wakes_waiters(queue: MessageQueue) -> None:
    cache = queue.cache("c.x")
    assert queue.stats["subscriptions"] == 1
    result: list[Any] = ["not set"]
    waiter = threading.Thread(target=lambda: result.__setitem__(0, cache.get(timeout=30)))
    waiter.start()
    threading.Event().wait(0.05)
    cache.close()
    waiter.join(5)
    assert not waiter.is_alive()
    assert result == [None]
    assert queue.stats["subscriptions"] == 0
    cache.close()
    assert cache.closed


def test_queue_close_wakes_a_blocked_cache_get() -> None:
    queue = MessageQueue()
    cache = queue.cache("cache.blocked")
    outcome: list[object] = []
    started = threading.Event()

    def wait_forever() -> None:
        started.set()
        outcome.append(cache.get(timeout=None))

    waiter = threading.Thread(target=wait_forever, daemon=True)
    waiter.start()
    assert started.wait(5)
    queue.close()
    waiter.join(10)
    assert not waiter.is_alive(), "cache.get(timeout=None) still blocks after queue.close()"
    assert outcome == [None]
    assert cache.closed


def test_cache_of_an_event_class_holds_validated_events(queue: MessageQueue) -> None:
    with queue.cache(Hello) as cache:
        queue.publish(Hello(1))
        queue.publish("cache.hello", {"n": "2"})
        queue.publish("cache.hello", {"n": "bad"})
        assert cache.wait_for_many([Hello(1), Hello(2)], timeout=1) == {0: Hello(1), 1: Hello(2)}
        assert queue.stats["rejected"] == 1


def test_cache_with_header_match(queue: MessageQueue) -> None:
    with queue.cache("c.x", match={"format": "pdf"}) as cache:
        queue.publish("c.x", 1, format="pdf")
        queue.publish("c.x", 2, format="doc")
        assert payloads(cache.drain()) == [1]
        assert isinstance(cache, SubscriptionCache)


def test_concurrent_producers_lose_nothing(queue: MessageQueue) -> None:
    with queue.cache("c.x", max_size=10_000) as cache:
        threads = [
            threading.Thread(target=lambda k=k: [queue.publish("c.x", (k, n)) for n in range(200)])
            for k in range(4)
        ]
        for thread in threads:
            thread.start()
        targets = [(k, 199) for k in range(4)]
        got = cache.wait_for_many(targets, WaitMode.ALL_IN_RANDOM_ORDER, timeout=10)
        for thread in threads:
            thread.join()
        assert len(got) == 4
        assert cache.stats["received"] == 800
        assert len(cache) == 796
