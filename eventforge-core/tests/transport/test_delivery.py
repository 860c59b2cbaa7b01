"""Deliveries and consumers of a WorkQueue: one settle per delivery, retries wait their delay,
waiting calls wait, and a consumer keeps going through failures."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from eventforge import Message, RetryPolicy, WorkQueue
from eventforge.errors import TransportClosedError
from eventforge.testing.waiting import wait_until
from eventforge.transports._memory_workqueue import MemoryWorkQueueBackend
from eventforge.workqueue import Consumer, Delivery, WorkQueueBackend

NO_JITTER = RetryPolicy(max_attempts=3, initial_backoff=1.0, multiplier=2.0, jitter=0)


def _get(queue: WorkQueue, timeout: float = 5) -> Delivery:
    delivery = queue.get(timeout=timeout)
    assert delivery is not None, f"no item within {timeout} s: {queue.stats}"
    return delivery


def test_ack_then_nack_only_the_ack_takes_effect() -> None:
    with WorkQueue(retry=NO_JITTER) as queue:
        queue.put("x")
        delivery = _get(queue)
        delivery.ack()
        assert delivery.settled
        delivery.nack()
        delivery.nack(requeue=False)
        stats = queue.stats
        assert (stats["acked"], stats["retried"], stats["dead_lettered"]) == (1, 0, 0)
        assert stats["pending"] == 0
        assert stats["stale_settles"] == 0  # the later calls never reached the backend


def test_nack_then_ack_only_the_nack_takes_effect() -> None:
    with WorkQueue(retry=RetryPolicy(initial_backoff=0, jitter=0)) as queue:
        queue.put("x")
        delivery = _get(queue)
        delivery.nack()
        delivery.ack()
        assert delivery.settled
        again = _get(queue)
        assert again.attempt == 2
        assert queue.stats["acked"] == 0
        assert queue.stats["retried"] == 1
        assert queue.stats["stale_settles"] == 0  # the ack never reached the backend
        again.ack()


def test_rejecting_dead_letters_at_once_and_later_settles_do_nothing() -> None:
    with WorkQueue(retry=NO_JITTER) as queue:
        queue.put("x")
        delivery = _get(queue)
        delivery.nack(requeue=False)
        delivery.ack()
        delivery.nack()
        (letter,) = queue.dead_letters()
        assert letter.reason == "rejected by the consumer (requeue=False)"
        assert letter.attempts == 1
        assert queue.stats["acked"] == 0
        assert queue.stats["pending"] == 0
        assert queue.stats["stale_settles"] == 0


def test_settle_options_are_keyword_only() -> None:
    with WorkQueue() as queue:
        queue.put("x")
        delivery = _get(queue)
        with pytest.raises(TypeError):
            delivery.nack(False)  # type: ignore[misc]
        assert not delivery.settled
        delivery.ack()
    with pytest.raises(TypeError):
        WorkQueue("jobs", None, RetryPolicy())  # type: ignore[misc]
    with WorkQueue() as queue, pytest.raises(TypeError):
        queue.consume(lambda m: None, 2)  # type: ignore[misc]
    with WorkQueue() as queue:  # a second positional would otherwise be taken as a delay
        with pytest.raises(TypeError):
            queue.put("x", 5)  # type: ignore[misc]
        with pytest.raises(TypeError):
            queue.put_many(["x"], 5)  # type: ignore[misc]
        with pytest.raises(TypeError):
            asyncio.run(queue.put_async("x", 5))  # type: ignore[misc]
        assert queue.stats["pending"] == 0


def test_in_progress_after_settling_does_nothing() -> None:
    with WorkQueue(visibility_timeout=0.3) as queue:
        queue.put("x")
        delivery = _get(queue)
        delivery.ack()
        delivery.in_progress()
        assert queue.stats["in_flight"] == 0


def test_a_delivery_without_a_backend_settles_as_a_no_op() -> None:
    delivery = Delivery(Message("jobs", 1), attempt=1, queue="jobs")
    delivery.ack()
    delivery.nack()
    delivery.in_progress()
    assert not delivery.settled


def test_a_delivery_shows_its_message_and_attempt_but_not_its_backend() -> None:
    with WorkQueue("jobs") as queue:
        queue.put("x")
        delivery = _get(queue)
        text = repr(delivery)
        assert text.startswith("Delivery(message=")
        assert "attempt=1" in text
        assert "backend" not in text
        delivery.ack()


def test_a_backend_must_implement_the_whole_contract() -> None:
    assert WorkQueueBackend.durable is False  # durable only when a backend says so
    assert WorkQueueBackend.__abstractmethods__ == {
        "put",
        "fetch",
        "ack",
        "nack",
        "dead_letter",
        "dead_letters",
        "replay",
        "stats",
    }


def test_nacked_item_is_not_available_before_the_policy_backoff() -> None:
    with WorkQueue(retry=NO_JITTER) as queue:
        queue.put("x")
        _get(queue).nack()  # failed attempt 1: waits initial_backoff = 1 s
        assert queue.stats["delayed"] == 1
        assert queue.get(timeout=0.2) is None
        again = _get(queue)
        assert again.attempt == 2
        again.ack()


def test_nack_delay_is_the_callers_not_the_policys() -> None:
    with WorkQueue(retry=RetryPolicy(initial_backoff=0, jitter=0)) as queue:
        queue.put("x")
        _get(queue).nack(delay=30.0)
        assert queue.stats["delayed"] == 1
        assert queue.get(timeout=0.2) is None
        assert queue.stats["delayed"] == 1


def test_nack_with_a_zero_backoff_is_available_at_once() -> None:
    with WorkQueue(retry=RetryPolicy(initial_backoff=0, jitter=0)) as queue:
        queue.put("x")
        _get(queue).nack()
        assert queue.stats["delayed"] == 0
        assert queue.stats["ready"] == 1


def test_get_takes_one_item_and_leaves_the_rest_ready() -> None:
    with WorkQueue() as queue:
        queue.put("a")
        queue.put("b")
        first = _get(queue)
        assert first.message.payload == "a"
        assert queue.stats["in_flight"] == 1
        assert queue.stats["ready"] == 1


def test_put_many_stores_every_item_and_returns_their_ids() -> None:
    with WorkQueue() as queue:
        assert queue.put_many([]) == []
        ids = queue.put_many(["a", "b", "c"], kind="batch")
        assert len(set(ids)) == 3
        got = [_get(queue) for _ in range(3)]
        assert [d.message.id for d in got] == ids
        assert {d.message.headers["kind"] for d in got} == {"batch"}


def test_put_async_stores_the_item() -> None:
    with WorkQueue() as queue:
        message_id = asyncio.run(queue.put_async("a", kind="async"))
        delivery = _get(queue)
        assert delivery.message.id == message_id
        assert delivery.message.headers["kind"] == "async"


def test_put_async_on_a_durable_backend_runs_off_the_event_loop_thread() -> None:
    threads: list[threading.Thread] = []

    class DurableMemory(MemoryWorkQueueBackend):
        durable = True

        def put(self, message: Message) -> None:
            threads.append(threading.current_thread())
            super().put(message)

    with WorkQueue("jobs", backend=DurableMemory("jobs")) as queue:
        asyncio.run(queue.put_async("a"))
        assert threads
        assert threads[0] is not threading.main_thread()
        assert _get(queue).message.payload == "a"


def test_join_returns_false_when_the_timeout_passes_first() -> None:
    with WorkQueue() as queue:
        queue.put("nobody handles this")
        assert queue.join(timeout=0.1) is False
        assert asyncio.run(queue.join_async(timeout=0.1)) is False
        _get(queue).ack()
        assert queue.join(timeout=5) is True
        assert asyncio.run(queue.join_async(timeout=5)) is True


@pytest.mark.parametrize("timeout", [None, 30.0])
def test_join_waits_for_items_in_flight(timeout: float | None) -> None:
    with WorkQueue() as queue:
        queue.put("x")
        first = _get(queue)
        assert queue.join(timeout=0.1) is False
        threading.Timer(0.2, first.ack).start()
        assert queue.join(timeout) is True
        queue.put("y")
        second = _get(queue)
        threading.Timer(0.2, second.ack).start()
        assert asyncio.run(queue.join_async(timeout)) is True


def test_get_async_waits_for_an_item_put_later() -> None:
    with WorkQueue() as queue:

        async def main() -> tuple[Delivery | None, Delivery | None]:
            threading.Timer(0.3, queue.put, args=("late",)).start()
            bounded = await queue.get_async(timeout=10)
            threading.Timer(0.3, queue.put, args=("later",)).start()
            unbounded = await queue.get_async()
            return bounded, unbounded

        bounded, unbounded = asyncio.run(main())
        assert bounded is not None
        assert bounded.message.payload == "late"
        assert unbounded is not None
        assert unbounded.message.payload == "later"


def test_get_async_with_a_short_timeout_still_waits_for_it() -> None:
    with WorkQueue() as queue:
        threading.Timer(0.2, queue.put, args=("soon",)).start()
        delivery = asyncio.run(queue.get_async(timeout=0.9))
        assert delivery is not None
        assert delivery.message.payload == "soon"


def test_get_async_returns_none_when_nothing_comes() -> None:
    with WorkQueue() as queue:
        assert asyncio.run(queue.get_async(timeout=0.2)) is None
        queue.put("x")
        assert asyncio.run(queue.get_async(timeout=0)) is None


def test_a_cancelled_get_async_gives_its_item_back_at_once() -> None:
    with WorkQueue(retry=NO_JITTER) as queue:

        async def give_up() -> None:
            waiting = asyncio.ensure_future(queue.get_async(timeout=5))
            await asyncio.sleep(0.05)
            queue.put("job")  # may be taken by the fetch that is about to be abandoned
            waiting.cancel()
            try:
                await waiting
            except asyncio.CancelledError:
                pass

        asyncio.run(give_up())  # returns once the abandoned fetch has finished
        stats = queue.stats
        assert stats["delayed"] == 0, stats
        assert stats["in_flight"] == 0, stats
        assert stats["retried"] == 0, stats  # giving back is not a retry
        assert _get(queue, timeout=0.5).message.payload == "job"


class SlowLinkNackFails(MemoryWorkQueueBackend):
    """A fetch that takes a while to come back, and a link that is down for giving back."""

    def fetch(self, max_items: int = 1, timeout: float | None = None) -> list[Delivery]:
        deliveries = super().fetch(max_items, timeout)
        if deliveries:
            time.sleep(0.5)  # the caller gives up meanwhile
        return deliveries

    def nack(self, delivery: Delivery, *, delay: float = 0.0) -> bool:
        raise ConnectionError("link to the broker dropped")


def test_an_item_that_cannot_be_given_back_is_logged_and_redelivered_after_its_lease(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = SlowLinkNackFails("giveback", visibility_timeout=0.3)
    with WorkQueue("giveback", backend=backend) as queue:
        queue.put("job")

        async def give_up() -> None:
            waiting = asyncio.ensure_future(queue.get_async(timeout=5))
            await asyncio.sleep(0.05)  # the fetch has taken the item and is on its way back
            waiting.cancel()
            try:
                await waiting
            except asyncio.CancelledError:
                pass

        asyncio.run(give_up())
        (record,) = [r for r in caplog.records if "could not give back" in r.getMessage()]
        assert "redelivered when its lease runs out" in record.getMessage()
        assert record.exc_info  # the cause is in the log
        assert record.exc_info[0] is ConnectionError
        again = _get(queue)
        assert again.message.payload == "job"
        assert again.attempt == 2
        again.ack()


def test_process_waits_its_idle_timeout_for_a_retry_to_come_due() -> None:
    attempts: list[int] = []

    def fails_once(message: Message) -> None:
        attempts.append(message.headers["x-eventforge-attempt"])
        if len(attempts) == 1:
            raise ValueError("first attempt fails")

    with WorkQueue(retry=RetryPolicy(initial_backoff=0.05, jitter=0)) as queue:
        queue.put("x")
        assert queue.process(fails_once) == 2  # the default idle timeout outlasts the backoff
        assert attempts == [1, 2]


def test_dead_letters_lists_a_hundred_by_default_and_replay_puts_them_back() -> None:
    with WorkQueue(max_size=None) as queue:
        queue.put_many(range(101))
        for _ in range(101):
            _get(queue).nack(requeue=False)
        letters = queue.dead_letters()
        assert len(letters) == 100
        assert [letter.message.payload for letter in letters[:3]] == [0, 1, 2]
        assert len(queue.dead_letters(limit=200)) == 101
        assert queue.replay([letters[0], letters[1].token]) == 2
        assert queue.stats["ready"] == 2
        assert queue.replay() == 99
        assert queue.dead_letters() == []
        assert queue.stats["ready"] == 101


def test_a_consumer_runs_one_thread_unless_told_otherwise() -> None:
    def threads_of(queue_name: str) -> list[str]:
        prefix = f"{Consumer.thread_name}-{queue_name}-"
        return sorted(t.name for t in threading.enumerate() if t.name.startswith(prefix))

    with WorkQueue("single") as queue:
        direct = Consumer(queue, lambda m: None)
        assert threads_of("single") == ["eventforge-wq-single-0"]
        assert all(t.daemon for t in direct._threads)  # never holds up interpreter exit
        direct.stop()
        via_queue = queue.consume(lambda m: None)
        assert threads_of("single") == ["eventforge-wq-single-0"]
        via_queue.stop()
        assert threads_of("single") == []


def test_consumer_counts_handled_and_failed_items() -> None:
    def handler(message: Message) -> None:
        if message.payload == "bad":
            raise ValueError("cannot handle this one")

    with WorkQueue(retry=RetryPolicy(max_attempts=1)) as queue:
        for payload in ["good", "bad", "good"]:
            queue.put(payload)
        consumer = queue.consume(handler)
        assert queue.join(timeout=10)
        consumer.stop()
        assert consumer.handled == 3
        assert consumer.failed == 1
        assert queue.stats["handler_errors"] == 1
        assert queue.stats["acked"] == 2


class FlakyBackend(MemoryWorkQueueBackend):
    """The first ``failures`` fetches fail the way a dropped broker link does."""

    def __init__(self, failures: int) -> None:
        super().__init__("flaky")
        self.failures = failures
        self.fetches = 0

    def fetch(self, max_items: int = 1, timeout: float | None = None) -> list[Delivery]:
        self.fetches += 1
        if self.fetches <= self.failures:
            raise ConnectionError("link to the broker dropped")
        return super().fetch(max_items, timeout)


@pytest.mark.parametrize("failures", [1, 3])
def test_consumer_keeps_consuming_after_transient_fetch_errors(
    failures: int, caplog: pytest.LogCaptureFixture
) -> None:
    backend = FlakyBackend(failures)
    seen: list[Any] = []
    with WorkQueue("flaky", backend=backend) as queue:
        consumer = queue.consume(lambda m: seen.append(m.payload))
        queue.put("first")
        assert queue.join(timeout=10), queue.stats
        queue.put("second")
        assert queue.join(timeout=10), queue.stats
        assert consumer.running
        consumer.stop()
    assert seen == ["first", "second"]
    assert backend.fetches > failures
    logged = [r for r in caplog.records if "fetch failed" in r.getMessage()]
    assert len(logged) == failures
    assert all(r.exc_info and r.exc_info[0] is ConnectionError for r in logged)  # with the cause


class SwitchableBackend(MemoryWorkQueueBackend):
    """Every fetch fails, the way a dropped broker link does, while ``broken`` is set."""

    def __init__(self) -> None:
        super().__init__("switchable")
        self.broken = False
        self.failed = 0

    def fetch(self, max_items: int = 1, timeout: float | None = None) -> list[Delivery]:
        if self.broken:
            self.failed += 1
            raise ConnectionError("link to the broker dropped")
        return super().fetch(max_items, timeout)


def test_consumer_counts_fetch_failures_in_a_row_and_forgets_them_after_a_good_fetch() -> None:
    backend = SwitchableBackend()
    with WorkQueue("switchable", backend=backend) as queue:
        consumer = queue.consume(lambda m: None)
        assert (consumer.fetch_failures, consumer.last_fetch_error) == (0, None)
        backend.broken = True
        assert wait_until(lambda: consumer.fetch_failures >= 2, 10)
        assert consumer.last_fetch_error == "ConnectionError: link to the broker dropped"
        backend.broken = False
        assert wait_until(lambda: consumer.fetch_failures == 0, 10)
        failed_before = backend.failed
        backend.broken = True
        assert wait_until(lambda: backend.failed >= failed_before + 2, 10)
        consumer.stop()
        assert consumer.fetch_failures == backend.failed - failed_before  # each one, once


def test_consumer_ends_when_its_backend_is_closed() -> None:
    backend = MemoryWorkQueueBackend("closing")
    with WorkQueue("closing", backend=backend) as queue:
        consumer = queue.consume(lambda m: None, concurrency=2)
        backend.close()
        for thread in consumer._threads:
            thread.join(10)
        assert not consumer.running
        with pytest.raises(TransportClosedError):
            queue.put("late")


def test_concurrent_consumer_threads_each_take_their_own_item() -> None:
    both_started = threading.Barrier(2, timeout=10)
    handled: list[str] = []

    def handler(message: Message) -> None:
        both_started.wait()  # only passes if two items are being handled at the same time
        handled.append(message.payload)

    with WorkQueue() as queue:
        queue.put("a")
        queue.put("b")
        consumer = queue.consume(handler, concurrency=2)
        assert queue.join(timeout=15)
        consumer.stop()
    assert sorted(handled) == ["a", "b"]
    assert consumer.failed == 0


def test_a_handler_may_stop_its_own_consumer() -> None:
    stopped = threading.Event()

    with WorkQueue() as queue:
        holder: list[Any] = []

        def handler(message: Message) -> None:
            holder[0].stop()
            stopped.set()

        holder.append(queue.consume(handler))
        queue.put("x")
        assert stopped.wait(10)
        holder[0]._threads[0].join(10)
        assert not holder[0].running
        assert holder[0].handled == 1


def test_consumer_stop_waits_for_its_threads() -> None:
    with WorkQueue() as queue:
        consumer = queue.consume(lambda m: None, concurrency=3)
        assert len(consumer._threads) == 3
        assert consumer.running
        consumer.stop()
        assert not consumer.running


def test_repr_names_the_queue_and_its_backend() -> None:
    with WorkQueue("jobs") as queue:
        assert repr(queue) == "WorkQueue('jobs', backend=MemoryWorkQueueBackend)"
