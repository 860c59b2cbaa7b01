"""How handlers run: isolation and the error hook, coroutine handlers, threaded handlers."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading

import pytest
from eventforge import MessageQueue
from eventforge.transport._loop import background_loop


@pytest.fixture
def queue():
    q = MessageQueue()
    yield q
    q.close()


def _wait(predicate, timeout=10.0):
    event = threading.Event()
    for _ in range(int(timeout / 0.005)):
        if predicate():
            return True
        event.wait(0.005)
    return predicate()


# -- isolation ----------------------------------------------------------------------------


def test_raising_handler_does_not_reach_publisher_or_other_handlers(caplog):
    hooked: list[tuple[str, object, object]] = []

    def hook(exc, message, handler):
        hooked.append((str(exc), message.payload, handler))

    queue = MessageQueue(error_hook=hook)
    got: list[int] = []

    def broken(message):
        raise RuntimeError("broken handler")

    queue.subscribe("t", broken)
    queue.subscribe("t", lambda m: got.append(m.payload))
    with caplog.at_level(logging.ERROR, logger="eventforge.queue"):
        queue.publish("t", 1)
        queue.publish("t", 2)
    assert got == [1, 2]
    assert hooked == [("broken handler", 1, broken), ("broken handler", 2, broken)]
    assert queue.stats["handler_errors"] == 2
    assert queue.stats["delivered"] == 4
    assert "broken handler" in caplog.text
    queue.close()


def test_error_hook_that_raises_is_logged_and_ignored(caplog):
    def bad_hook(exc, message, handler):
        raise ValueError("hook failed")

    queue = MessageQueue(error_hook=bad_hook)
    queue.subscribe("t", lambda m: 1 / 0)
    with caplog.at_level(logging.ERROR, logger="eventforge.queue"):
        queue.publish("t")
    assert queue.stats["handler_errors"] == 1
    assert "error_hook raised" in caplog.text
    queue.close()


def test_raising_group_member_is_isolated(queue):
    queue.subscribe("jobs", lambda m: 1 / 0, group="g")
    ok: list[int] = []
    queue.subscribe("jobs", lambda m: ok.append(m.payload), group="g")
    for n in range(4):
        queue.publish("jobs", n)
    assert len(ok) == 2
    assert queue.stats["handler_errors"] == 2


# -- coroutine handlers -------------------------------------------------------------------


def test_coroutine_handler_subscribed_outside_a_loop_runs_on_the_background_loop(queue):
    ran_on: list[object] = []
    done = threading.Event()

    async def handler(message):
        ran_on.append(asyncio.get_running_loop())
        done.set()

    queue.subscribe("t", handler)
    queue.publish("t")
    assert done.wait(10)
    assert ran_on == [background_loop().loop]


def test_coroutine_handler_subscribed_in_a_loop_runs_on_that_loop(queue):
    async def main():
        loop = asyncio.get_running_loop()
        ran_on: list[object] = []
        done = asyncio.Event()

        async def handler(message):
            ran_on.append(asyncio.get_running_loop())
            done.set()

        queue.subscribe("t", handler)
        # published from another thread: the handler still runs on this loop
        await asyncio.to_thread(queue.publish, "t")
        await asyncio.wait_for(done.wait(), 10)
        return ran_on == [loop]

    assert asyncio.run(main())


def test_coroutine_handler_never_blocks_the_publisher(queue):
    release = threading.Event()
    finished = threading.Event()

    async def slow(message):
        await asyncio.to_thread(release.wait, 10)
        finished.set()

    queue.subscribe("t", slow)
    queue.publish("t")  # returns while the handler is still waiting
    assert not finished.is_set()
    release.set()
    assert finished.wait(10)


def test_coroutine_handler_errors_are_isolated_and_reported():
    hooked: list[str] = []
    queue = MessageQueue(error_hook=lambda exc, m, h: hooked.append(str(exc)))

    async def broken(message):
        raise ValueError("async failure")

    queue.subscribe("t", broken)
    queue.publish("t")
    assert _wait(lambda: hooked == ["async failure"])
    assert queue.stats["handler_errors"] == 1
    queue.close()


def test_async_callable_objects_and_partials_are_coroutine_handlers(queue):
    got: list[str] = []
    done = threading.Event()

    class Handler:
        async def __call__(self, message):
            got.append("object")
            if len(got) == 2:
                done.set()

    async def tagged(tag, message):
        got.append(tag)
        if len(got) == 2:
            done.set()

    queue.subscribe("t", Handler())
    queue.subscribe("t", functools.partial(tagged, "partial"))
    queue.publish("t")
    assert done.wait(10)
    assert sorted(got) == ["object", "partial"]


def test_sync_handler_returning_an_awaitable_has_it_awaited(queue):
    done = threading.Event()

    async def work():
        done.set()

    queue.subscribe("t", lambda m: work())
    queue.publish("t")
    assert done.wait(10)


def test_handler_bound_to_a_closed_loop_is_dropped_and_counted():
    hooked: list[BaseException] = []
    queue = MessageQueue(error_hook=lambda exc, m, h: hooked.append(exc))

    async def handler(message):
        pass

    async def subscribe_in_a_short_lived_loop():
        queue.subscribe("t", handler)

    asyncio.run(subscribe_in_a_short_lived_loop())
    queue.publish("t")
    assert queue.stats["dropped"] == 1
    assert len(hooked) == 1
    assert isinstance(hooked[0], RuntimeError)
    queue.close()


# -- threaded handlers --------------------------------------------------------------------


def test_threaded_handler_runs_on_its_own_thread_and_never_delays_the_publisher(queue):
    release = threading.Event()
    seen: list[tuple[int, str]] = []

    def slow(message):
        release.wait(10)
        seen.append((message.payload, threading.current_thread().name))

    queue.subscribe("t", slow, threaded=True)
    for n in range(3):
        queue.publish("t", n)  # returns although the handler is blocked
    assert seen == []
    release.set()
    assert _wait(lambda: len(seen) == 3)
    assert [n for n, _ in seen] == [0, 1, 2]  # in order
    assert all(name != threading.current_thread().name for _, name in seen)


def test_threaded_handler_backlog_overflow_is_dropped_and_counted(queue, caplog):
    release = threading.Event()
    started = threading.Event()
    seen: list[int] = []

    def slow(message):
        started.set()
        release.wait(10)
        seen.append(message.payload)

    queue.subscribe("t", slow, max_pending=2)
    queue.publish("t", 0)
    assert started.wait(10)  # 0 is in the handler; 1 and 2 fill the backlog
    with caplog.at_level(logging.WARNING, logger="eventforge.queue"):
        for n in range(1, 6):
            queue.publish("t", n)
    assert queue.stats["dropped"] == 3
    assert "backlog" in caplog.text
    release.set()
    assert _wait(lambda: len(seen) == 3)
    assert seen == [0, 1, 2]


def test_unsubscribing_a_threaded_handler_discards_its_backlog_counted(queue):
    release = threading.Event()
    started = threading.Event()

    def slow(message):
        started.set()
        release.wait(10)

    handler_id = queue.subscribe("t", slow, threaded=True)
    queue.publish("t", 0)
    assert started.wait(10)
    queue.publish("t", 1)
    queue.publish("t", 2)
    release.set()
    assert queue.unsubscribe(handler_id)
    # the two waiting messages were either handled before the stop or dropped and counted
    assert queue.stats["delivered"] + queue.stats["dropped"] == 3


def test_threaded_handler_errors_are_isolated():
    hooked: list[str] = []
    queue = MessageQueue(error_hook=lambda exc, m, h: hooked.append(str(exc)))
    queue.subscribe("t", lambda m: 1 / 0, threaded=True)
    queue.publish("t")
    assert _wait(lambda: len(hooked) == 1)
    assert queue.stats["handler_errors"] == 1
    queue.close()


def test_max_pending_must_be_positive(queue):
    with pytest.raises(ValueError, match="max_pending"):
        queue.subscribe("t", print, max_pending=0)


def test_unsubscribing_with_a_drain_handles_the_backlog_first(queue):
    release = threading.Event()
    handled: list[int] = []

    def slow(message):
        release.wait(10)
        handled.append(message.payload)

    handler_id = queue.subscribe("t", slow, threaded=True)
    for n in range(3):
        queue.publish("t", n)
    release.set()
    assert queue.unsubscribe(handler_id, drain=10)
    assert handled == [0, 1, 2]
    assert queue.stats["dropped"] == 0


def test_a_drain_that_runs_out_discards_what_is_left_and_counts_it(queue):
    release = threading.Event()
    started = threading.Event()

    def stuck(message):
        started.set()
        release.wait(10)

    handler_id = queue.subscribe("t", stuck, threaded=True)
    for n in range(3):
        queue.publish("t", n)
    assert started.wait(10)
    try:
        assert queue.unsubscribe(handler_id, drain=0.05)  # returns although one is stuck
        assert queue.stats["dropped"] == 2
    finally:
        release.set()


def test_subscription_status_tells_the_backlog_and_progress_of_a_threaded_handler(queue):
    release = threading.Event()

    def slow(message):
        release.wait(10)

    plain = queue.subscribe("p", lambda m: None)
    threaded = queue.subscribe("t", slow, threaded=True)
    status = queue.subscription_status(plain)
    assert status.transport.present
    assert (status.pending, status.handled, status.thread_alive) == (None, None, None)
    for n in range(3):
        queue.publish("t", n)
    assert _wait(lambda: queue.subscription_status(threaded).pending == 2)
    assert queue.subscription_status(threaded).handled == 0
    assert queue.subscription_status(threaded).thread_alive
    release.set()
    assert _wait(lambda: queue.subscription_status(threaded).handled == 3)
    queue.unsubscribe(threaded)
    assert queue.subscription_status(threaded) is None
