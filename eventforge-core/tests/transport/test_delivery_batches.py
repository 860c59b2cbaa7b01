"""The batching delivery thread: batches run in order, a bound cuts and counts, depth drains."""

from __future__ import annotations

import threading

import pytest
from eventforge.testing import wait_until
from eventforge.transport import BatchDeliveryThread


def test_batches_run_item_by_item_in_the_order_they_were_handed_over() -> None:
    seen: list[int] = []
    thread = BatchDeliveryThread("test-batches", seen.append)
    assert thread.put_batch([(1,), (2,), (3,)]) == 3
    assert thread.put((4,))
    assert thread.put_batch([]) == 0
    thread.stop()
    assert seen == [1, 2, 3, 4]
    assert thread.delivered == 4
    assert thread.errors == 0


def test_without_a_handler_each_item_is_a_callback_and_its_argument() -> None:
    seen: list[tuple[str, int]] = []
    thread = BatchDeliveryThread("test-batches", None)
    thread.put_batch([(lambda n: seen.append(("a", n)), 1), (lambda n: seen.append(("b", n)), 2)])
    thread.put_batch([(lambda n: 1 // n, 0), (lambda n: seen.append(("c", n)), 3)])
    thread.stop()
    assert seen == [("a", 1), ("b", 2), ("c", 3)]
    assert (thread.delivered, thread.errors) == (3, 1)


def test_a_handler_that_raises_is_counted_and_the_next_item_still_runs() -> None:
    seen: list[int] = []

    def handle(n: int) -> None:
        if n == 2:
            raise RuntimeError("boom")
        seen.append(n)

    thread = BatchDeliveryThread("test-batches", handle)
    thread.put_batch([(1,), (2,), (3,)])
    thread.stop()
    assert seen == [1, 3]
    assert (thread.delivered, thread.errors) == (2, 1)


def test_a_bounded_backlog_cuts_a_batch_that_does_not_fit_and_counts_the_rest() -> None:
    gate = threading.Event()
    seen: list[int] = []

    def handle(n: int) -> None:
        gate.wait(5)
        seen.append(n)

    thread = BatchDeliveryThread("test-batches", handle, max_pending=4)
    assert thread.put_batch([(0,), (1,)]) == 2
    assert thread.put_batch([(2,), (3,), (4,)]) == 2
    assert thread.put((5,)) is False
    assert thread.depth() == 4
    assert thread.dropped.value == 2
    gate.set()
    thread.stop()
    assert seen == [0, 1, 2, 3]
    assert thread.depth() == 0


def test_an_unbounded_backlog_takes_everything_and_reports_each_drained_batch() -> None:
    gate = threading.Event()
    reported: list[int] = []
    thread = BatchDeliveryThread(
        "test-batches", lambda n: gate.wait(5), None, after_batch=reported.append
    )
    for _ in range(3):
        assert thread.put_batch([(n,) for n in range(1000)]) == 1000
    assert thread.depth() >= 2000  # the first batch may be running: it still counts
    gate.set()
    assert wait_until(lambda: thread.depth() == 0)
    thread.stop()
    assert reported == [2000, 1000, 0]
    assert thread.dropped.value == 0


def test_the_thread_knows_itself_and_stop_from_inside_does_not_wait() -> None:
    inside: list[bool] = []
    thread: BatchDeliveryThread

    def handle() -> None:
        inside.append(thread.in_thread())
        thread.stop()

    thread = BatchDeliveryThread("test-batches", handle)
    thread.put(())
    assert wait_until(lambda: thread.delivered == 1)
    assert inside == [True]
    assert not thread.in_thread()


def test_a_bound_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="max_pending"):
        BatchDeliveryThread("test-batches", print, max_pending=0)
