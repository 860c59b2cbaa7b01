"""The subscribing side: the reader only reads; callbacks run on a bounded delivery thread.

A slow subscription callback used to run on the pub/sub reader thread, so it held up reading,
the health check and every other delivery. These tests block a callback on purpose and show
what keeps working meanwhile, what the backlog bound does, and what unsubscribing does to
messages still waiting for the delivery thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from eventforge import MessageQueue
from eventforge.message import Message
from eventforge.testing.brokers import RedisServer

pytestmark = pytest.mark.broker


def _wait_until(predicate: Callable[[], bool], what: str, limit: float = 30.0) -> None:
    """A watchdog, not a timing assertion: fail only when the system is stuck."""
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"stalled waiting for: {what}")
        time.sleep(0.01)


class _Blocker:
    """A callback that blocks on its first message until released; records every payload."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.got: list[Any] = []

    def __call__(self, message: Message) -> None:
        self.got.append(message.payload)
        self.entered.set()
        # Longer than every watchdog of a test together: a test releases it itself (finally).
        self.release.wait(300)


def test_a_slow_callback_stalls_neither_the_health_check_nor_nonblocking_deliveries(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """While one callback blocks: ``receive`` (a nonblocking waiter, run on the reader) still
    gets its message, a paused server is still noticed by the health check, and after the
    server resumes every subscription is back. Then the blocked callback's backlog arrives."""
    from eventforge_redis import RedisTransport

    server = redis_server_factory()
    options = {"health_check_interval": 0.3, "socket_timeout": 1.0, "socket_connect_timeout": 1.0}
    subscriber = RedisTransport.from_url(server.url, **options)
    publisher = RedisTransport.from_url(server.url, **options)
    slow = _Blocker()
    try:
        subscriber.subscribe("slow.t", slow)
        publisher.send(Message("slow.t", 1))
        assert slow.entered.wait(30), "the slow callback never ran"

        # 1. Other deliveries: a receive on another topic is served while the callback blocks.
        got: list[Message | None] = []
        receiver = threading.Thread(target=lambda: got.append(subscriber.receive("fast.t", 30)))
        receiver.start()
        while receiver.is_alive():  # until receive's subscription is confirmed and served
            publisher.send(Message("fast.t", "while blocked"))
            receiver.join(0.05)
        assert [m.payload if m is not None else None for m in got] == ["while blocked"]

        # 2. The health check: a paused server is noticed while the callback still blocks.
        before = subscriber.stats()["health_check_failures"]
        server.pause()
        try:
            _wait_until(
                lambda: subscriber.stats()["health_check_failures"] > before,
                "the health check to notice the paused server",
            )
        finally:
            server.resume()
        _wait_until(
            lambda: (
                subscriber.stats()["resubscribes"] >= 1
                and publisher.client.pubsub_numsub("slow.t") == [(b"slow.t", 1)]
            ),
            "the reader to resubscribe",
        )
        assert not slow.release.is_set(), "the callback was blocked all along"

        # 3. Messages for the blocked callback wait for it, in order.
        for n in (2, 3):
            publisher.send(Message("slow.t", n))
        publisher.flush(10)
        _wait_until(lambda: subscriber.stats()["delivery_backlog"] == 2, "the backlog to form")
        slow.release.set()
        _wait_until(lambda: slow.got == [1, 2, 3], "the backlog to be delivered")
        stats = subscriber.stats()
        print(
            f"health_check_failures={stats['health_check_failures']} "
            f"resubscribes={stats['resubscribes']} delivery_dropped={stats['delivery_dropped']}"
        )
        assert stats["delivery_dropped"] == 0
    finally:
        slow.release.set()
        subscriber.close()
        publisher.close()


def test_a_full_delivery_backlog_drops_new_messages_and_counts_them(
    make_redis: Callable[..., Any],
) -> None:
    """``max_delivery_backlog`` bounds what waits for the callbacks; beyond it new messages
    are dropped and counted (``delivery_dropped``, included in ``dropped``), never queued
    without limit, and the reader keeps reading."""
    transport = make_redis(max_delivery_backlog=5)
    slow = _Blocker()
    try:
        transport.subscribe("backlog.t", slow)
        transport.send(Message("backlog.t", 0))
        assert slow.entered.wait(30)
        for n in range(1, 21):
            transport.send(Message("backlog.t", n))
        transport.flush(10)
        # The reader counts a message when it reads it and hands a batch over after the
        # read: wait for the hand-over, not only for the read.
        _wait_until(lambda: transport.stats()["received"] == 21, "the reader to read all 21")
        # The reader counts the dropped part of a batch before it hands the rest over, so wait
        # for both counters (a reader preempted in between shows the drop without the backlog).
        _wait_until(
            lambda: (
                (transport.stats()["delivery_dropped"], transport.stats()["delivery_backlog"])
                == (15, 5)
            ),
            "the batch to be handed over",
        )
        stats = transport.stats()
        assert stats["delivery_backlog"] == 5
        assert stats["delivery_dropped"] == 15
        assert stats["dropped"] >= 15
        slow.release.set()
        _wait_until(lambda: len(slow.got) == 6, "the backlog to be delivered")
        assert slow.got == [0, 1, 2, 3, 4, 5]
    finally:
        slow.release.set()


def test_unsubscribing_discards_the_messages_still_waiting_for_the_callback(
    make_redis: Callable[..., Any],
) -> None:
    transport = make_redis()
    slow = _Blocker()
    sub_id = transport.subscribe("gone.t", slow)
    transport.send(Message("gone.t", 0))
    assert slow.entered.wait(30)
    for n in range(1, 4):
        transport.send(Message("gone.t", n))
    transport.flush(10)
    _wait_until(lambda: transport.stats()["delivery_backlog"] == 3, "the backlog to form")
    assert transport.unsubscribe(sub_id)
    slow.release.set()
    _wait_until(lambda: transport.stats()["delivery_backlog"] == 0, "the backlog to drain")
    assert slow.got == [0]


def test_a_handler_may_make_a_blocking_request(make_redis: Callable[..., Any]) -> None:
    """Replies reach their waiter on the reader thread (the waiter is nonblocking), so a
    handler running on the delivery thread can wait for a reply without deadlocking itself."""
    responder = MessageQueue(transport=make_redis())
    asker = MessageQueue(transport=make_redis())
    answers: list[Any] = []
    done = threading.Event()
    try:
        responder.subscribe(
            "math.add", lambda m: responder.reply(m, m.payload["a"] + m.payload["b"])
        )

        def handler(message: Message) -> None:
            reply = asker.ask("math.add", {"a": message.payload, "b": 1}, timeout=10)
            answers.append(None if reply is None else reply.payload)
            done.set()

        asker.subscribe("outer.t", handler)
        asker.publish("outer.t", 41)
        assert done.wait(30), "the handler never finished"
        assert answers == [42]
    finally:
        asker.close()
        responder.close()


def test_nonblocking_callbacks_run_on_the_reader_and_others_on_the_delivery_thread(
    make_redis: Callable[..., Any],
) -> None:
    from eventforge.transport import nonblocking

    transport = make_redis()
    threads: dict[str, str] = {}
    seen = threading.Event()

    @nonblocking
    def inline(message: Message) -> None:
        threads["inline"] = threading.current_thread().name

    def threaded(message: Message) -> None:
        threads["threaded"] = threading.current_thread().name
        seen.set()

    transport.subscribe("where.t", inline)
    transport.subscribe("where.t", threaded)
    transport.send(Message("where.t", None))
    assert seen.wait(30)
    _wait_until(lambda: "inline" in threads, "the inline callback")
    assert threads == {
        "inline": "eventforge-redis-subscriber",
        "threaded": "eventforge-redis-delivery",
    }


def test_subscribing_from_inside_a_callback(make_redis: Callable[..., object]) -> None:
    """A callback may subscribe without deadlocking: it runs on the delivery thread, so the
    reader confirms the new subscription meanwhile, and the new subscription works."""
    transport = make_redis()
    nested: list[object] = []
    done: list[str] = []

    def outer(message: Message) -> None:
        transport.subscribe("inside.nested", lambda m: nested.append(m.payload))  # type: ignore[attr-defined]
        done.append("subscribed")

    transport.subscribe("inside.outer", outer)  # type: ignore[attr-defined]
    transport.send(Message("inside.outer", None))  # type: ignore[attr-defined]
    deadline = time.monotonic() + 20
    while not nested and time.monotonic() < deadline:
        if done:
            transport.send(Message("inside.nested", "hello"))  # type: ignore[attr-defined]
        time.sleep(0.05)
    assert done == ["subscribed"]
    assert nested[0] == "hello"
