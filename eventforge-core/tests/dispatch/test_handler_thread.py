"""A subscription's own thread: a bounded backlog that drops, counts and reports what overflows."""

from __future__ import annotations

import threading

import eventforge.dispatch
from eventforge.dispatch import HandlerThread
from eventforge.message import Message
from eventforge.testing.waiting import wait_until
from eventforge.transport import Counter

WAIT = 10.0  # generous bound for events; never an assertion about time


def test_a_full_backlog_drops_counts_and_reports_the_new_message() -> None:
    release = threading.Event()
    handled: list[int] = []
    discarded: list[int] = []

    def invoke(message: Message) -> None:
        release.wait(WAIT)
        handled.append(message.payload)

    dropped = Counter()
    thread = HandlerThread(
        invoke, 1, "test-handler-thread", dropped, lambda m: discarded.append(m.payload)
    )
    try:
        thread.submit(Message("t", 0))
        assert wait_until(lambda: thread.load() == 1 and thread.pending == 0, WAIT)
        thread.submit(Message("t", 1))  # waits in the backlog
        thread.submit(Message("t", 2))  # the backlog is full
        assert (dropped.value, discarded, thread.load()) == (1, [2], 2)
        release.set()
        assert wait_until(lambda: handled == [0, 1], WAIT)
    finally:
        release.set()
        thread.stop()
    assert thread.stopped


def test_stopping_discards_the_backlog_through_on_discard() -> None:
    release = threading.Event()
    running = threading.Event()
    discarded: list[int] = []
    dropped = Counter()

    def handler(message: Message) -> None:
        running.set()
        release.wait(WAIT)

    thread = HandlerThread(
        handler, 5, "test-handler-thread", dropped, lambda m: discarded.append(m.payload)
    )
    thread.submit(Message("t", 0))
    assert running.wait(WAIT)  # message 0 is being handled: it is not in the backlog
    assert wait_until(lambda: thread.pending == 0, WAIT)
    thread.submit(Message("t", 1))
    thread.submit(Message("t", 2))
    thread.stop(timeout=0.0)
    release.set()
    assert (sorted(discarded), dropped.value, thread.pending) == ([1, 2], 2, 0)


def test_the_subscription_thread_is_not_exported_as_a_worker() -> None:
    # eventforge.worker.Worker is the process that serves handlers; one name, one meaning.
    assert "HandlerThread" in eventforge.dispatch.__all__
    assert "Worker" not in eventforge.dispatch.__all__
