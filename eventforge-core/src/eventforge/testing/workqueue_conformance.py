"""The WorkQueue conformance suite: the contract of a work-queue backend, as tests.

A backend proves itself by subclassing :class:`WorkQueueConformance` and providing one fixture,
``make_backend``: a factory ``(name, retry) -> WorkQueueBackend`` that returns a fresh, empty
backend for the queue ``name`` (the suite picks a unique name per test)::

    import pytest
    from eventforge.testing.workqueue_conformance import WorkQueueConformance

    class TestMyBackend(WorkQueueConformance):
        visibility_timeout = 0.5  # or None when unsettled items are not redelivered by time

        @pytest.fixture
        def make_backend(self, my_broker):
            return lambda name, retry: my_broker.work_queue_backend(name, retry)

Every test drives the backend through :class:`~eventforge.workqueue.WorkQueue`, so retries and
dead-lettering follow the queue's :class:`~eventforge.workqueue.RetryPolicy` on every backend.
Waits are generous and backoffs small; no test asserts a duration. Contract tests cannot be
silently replaced: a subclass method with a contract test's name fails at class creation unless
it is marked ``@pytest.mark.xfail(reason=...)`` or ``@WorkQueueConformance.overrides(reason=...)``.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, TypeVar

import pytest

from eventforge.message import Message
from eventforge.testing._workqueue_delays import DelayedItemsContract
from eventforge.testing.waiting import wait_until
from eventforge.transport import DEAD_LETTER_REASON_HEADER, WORK_QUEUE_STATS
from eventforge.workqueue import (
    ATTEMPT_HEADER,
    Delivery,
    RetryPolicy,
    WorkQueue,
    WorkQueueBackend,
)

__all__ = ["BackendFactory", "WorkQueueConformance"]

BackendFactory = Callable[[str, RetryPolicy], WorkQueueBackend]
"""What ``make_backend`` returns: ``(queue name, retry policy) -> a fresh backend``."""

F = TypeVar("F", bound=Callable[..., Any])
_OVERRIDE_ATTR = "__workqueue_conformance_override__"


class WorkQueueConformance(DelayedItemsContract):
    """Base class of a work-queue backend's conformance tests; provide ``make_backend``.

    Class attributes a subclass may tune: ``timeout`` (how long a test waits for something
    that must happen), ``retry`` (the policy the tests use; keep its backoffs small) and
    ``visibility_timeout`` (seconds after which the factory's backends redeliver an item that
    was fetched and never settled; ``None`` skips that test).
    """

    timeout: ClassVar[float] = 10.0
    retry: ClassVar[RetryPolicy] = RetryPolicy(
        max_attempts=3, initial_backoff=0.01, max_backoff=0.05, jitter=0.0
    )
    visibility_timeout: ClassVar[float | None] = None

    _contract_tests: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, value in vars(cls).items():
            if name in WorkQueueConformance._contract_tests and not _deliberate(value):
                raise TypeError(
                    f"{cls.__qualname__}.{name} overrides the work-queue conformance test of the "
                    "same name, which would silently replace part of the contract. Mark a "
                    "deliberate override with @pytest.mark.xfail(reason='why') or "
                    "@WorkQueueConformance.overrides(reason='why'), or give your test another name"
                )

    @staticmethod
    def overrides(*, reason: str) -> Callable[[F], F]:
        """Mark a method as a deliberate replacement of the contract test it is named after."""
        if not reason.strip():
            raise TypeError("WorkQueueConformance.overrides needs a non-empty reason='...'")

        def mark(func: F) -> F:
            setattr(func, _OVERRIDE_ATTR, reason)
            return func

        return mark

    # -- fixtures ---------------------------------------------------------------------------

    @pytest.fixture
    def make_backend(self) -> BackendFactory:
        """Return ``(name, retry) -> backend``. Subclasses must provide it."""
        pytest.fail(
            f"{type(self).__name__} must define a 'make_backend' fixture returning a factory "
            "(name, retry) -> WorkQueueBackend (see eventforge.testing.workqueue_conformance)"
        )

    @pytest.fixture
    def make_queue(self, make_backend: BackendFactory) -> Iterator[Callable[..., WorkQueue]]:
        """A factory of WorkQueues on fresh backends, each with a unique name; all closed after."""
        made: list[WorkQueue] = []

        def factory(retry: RetryPolicy | None = None) -> WorkQueue:
            policy = retry or self.retry
            name = f"conformance-{os.urandom(5).hex()}"
            queue = WorkQueue(name, retry=policy, backend=make_backend(name, policy))
            made.append(queue)
            return queue

        yield factory
        for queue in made:
            queue.close()

    # -- put / get / ack --------------------------------------------------------------------

    def test_put_get_ack(self, make_queue: Callable[..., WorkQueue]) -> None:
        """Items come back in put order with payload, headers and attempt 1; ack removes them."""
        queue = make_queue()
        ids = [queue.put({"n": i, "tags": ["a", "b"]}, source="test") for i in range(3)]
        assert len(set(ids)) == 3
        for i in range(3):
            delivery = queue.get(timeout=self.timeout)
            assert delivery is not None
            assert delivery.message.payload == {"n": i, "tags": ["a", "b"]}
            assert delivery.message.id == ids[i]
            assert delivery.message.headers.get("source") == "test"
            assert delivery.attempt == 1
            delivery.ack()
        assert queue.get(timeout=0.2) is None
        assert wait_until(lambda: queue.stats["in_flight"] == 0, self.timeout)
        assert queue.stats["pending"] == 0
        assert queue.stats["acked"] == 3

    def test_put_many_stores_every_item_in_order(
        self, make_queue: Callable[..., WorkQueue]
    ) -> None:
        """``put_many`` stores a batch (ids returned in order) that is delivered like single puts."""
        queue = make_queue()
        ids = queue.put_many([{"n": i} for i in range(5)], batch="yes")
        assert len(set(ids)) == 5
        assert queue.put_many([]) == []
        for i in range(5):
            delivery = queue.get(timeout=self.timeout)
            assert delivery is not None
            assert delivery.message.payload == {"n": i}
            assert delivery.message.id == ids[i]
            assert delivery.message.headers.get("batch") == "yes"
            delivery.ack()
        assert queue.get(timeout=0.2) is None

    def test_get_on_empty_queue_returns_none(self, make_queue: Callable[..., WorkQueue]) -> None:
        """``get(timeout)`` returns None when nothing arrives in time (never hangs)."""
        assert make_queue().get(timeout=0.2) is None

    def test_nack_redelivers_with_next_attempt(self, make_queue: Callable[..., WorkQueue]) -> None:
        """A nacked item comes back, same id and payload, with ``attempt`` + 1."""
        queue = make_queue()
        message_id = queue.put("again")
        first = queue.get(timeout=self.timeout)
        assert first is not None
        first.nack()
        second = queue.get(timeout=self.timeout)
        assert second is not None
        assert (second.message.id, second.message.payload) == (message_id, "again")
        assert second.attempt == first.attempt + 1
        second.ack()
        assert queue.stats["retried"] == 1

    def test_nack_without_requeue_dead_letters(self, make_queue: Callable[..., WorkQueue]) -> None:
        """``nack(requeue=False)`` sends the item straight to the dead-letter queue."""
        queue = make_queue()
        queue.put("reject me")
        delivery = queue.get(timeout=self.timeout)
        assert delivery is not None
        delivery.nack(requeue=False)
        assert wait_until(lambda: len(queue.dead_letters()) == 1, self.timeout)
        letter = queue.dead_letters()[0]
        assert letter.message.payload == "reject me"
        assert letter.attempts == 1
        assert "requeue=False" in letter.reason
        assert queue.get(timeout=0.2) is None

    def test_settling_twice_takes_effect_once(self, make_queue: Callable[..., WorkQueue]) -> None:
        """After ``ack``, a later ``nack`` of the same delivery does nothing."""
        queue = make_queue()
        queue.put("once")
        delivery = queue.get(timeout=self.timeout)
        assert delivery is not None
        delivery.ack()
        delivery.nack()
        assert queue.get(timeout=0.2) is None
        assert queue.stats["acked"] == 1
        assert queue.stats["retried"] == 0

    # -- retries and dead letters -----------------------------------------------------------

    def test_poison_is_dead_lettered_after_max_attempts_without_blocking_others(
        self, make_queue: Callable[..., WorkQueue]
    ) -> None:
        """A failing item gets exactly ``max_attempts`` tries; healthy items flow meanwhile."""
        policy = RetryPolicy(max_attempts=3, initial_backoff=0.2, max_backoff=0.2, jitter=0.0)
        queue = make_queue(policy)
        queue.put("poison")
        for i in range(5):
            queue.put(f"ok-{i}")
        calls: list[tuple[str, int]] = []
        lock = threading.Lock()

        def handler(message: Message) -> None:
            with lock:
                calls.append((message.payload, len([c for c in calls if c[0] == message.payload])))
            if message.payload == "poison":
                raise ValueError("poison")

        consumer = queue.consume(handler, concurrency=1)
        try:
            assert wait_until(lambda: len(queue.dead_letters()) == 1, self.timeout)
        finally:
            consumer.stop()
        poison_calls = [i for i, (payload, _) in enumerate(calls) if payload == "poison"]
        healthy_calls = [i for i, (payload, _) in enumerate(calls) if payload != "poison"]
        assert len(poison_calls) == 3
        assert len(healthy_calls) == 5
        assert max(healthy_calls) < poison_calls[1]  # healthy items did not wait for the backoff
        letter = queue.dead_letters()[0]
        assert (letter.message.payload, letter.attempts) == ("poison", 3)
        stats = queue.stats
        assert (stats["acked"], stats["retried"], stats["dead_lettered"]) == (5, 2, 1)
        assert stats["handler_errors"] == 3

    def test_replay_puts_dead_letters_back(self, make_queue: Callable[..., WorkQueue]) -> None:
        """``replay()`` returns dead letters to the queue as fresh items (attempt 1, without the
        reason they were dead-lettered for)."""
        queue = make_queue(RetryPolicy(max_attempts=1, initial_backoff=0.0, jitter=0.0))
        queue.put("retry me later")
        delivery = queue.get(timeout=self.timeout)
        assert delivery is not None
        delivery.nack()  # the only attempt: dead-lettered
        assert wait_until(lambda: len(queue.dead_letters()) == 1, self.timeout)
        assert queue.replay() == 1
        assert queue.dead_letters() == []
        again = queue.get(timeout=self.timeout)
        assert again is not None
        assert again.message.payload == "retry me later"
        assert again.attempt == 1
        assert DEAD_LETTER_REASON_HEADER not in again.message.headers
        again.ack()

    def test_replay_selected_dead_letters(self, make_queue: Callable[..., WorkQueue]) -> None:
        """``replay([letter])`` returns only the chosen dead letters."""
        queue = make_queue(RetryPolicy(max_attempts=1, initial_backoff=0.0, jitter=0.0))
        for payload in ("a", "b"):
            queue.put(payload)
        for _ in range(2):
            delivery = queue.get(timeout=self.timeout)
            assert delivery is not None
            delivery.nack()
        assert wait_until(lambda: len(queue.dead_letters()) == 2, self.timeout)
        chosen = [d for d in queue.dead_letters() if d.message.payload == "b"]
        assert queue.replay(chosen) == 1
        assert [d.message.payload for d in queue.dead_letters()] == ["a"]
        again = queue.get(timeout=self.timeout)
        assert again is not None
        assert again.message.payload == "b"
        again.ack()

    # -- competing consumers ----------------------------------------------------------------

    def test_competing_consumers_handle_each_item_once(
        self, make_queue: Callable[..., WorkQueue]
    ) -> None:
        """Two consumers with several threads share the items; each item is handled once."""
        queue = make_queue()
        expected = [f"job-{i}" for i in range(60)]
        for payload in expected:
            queue.put(payload)
        seen: Counter[str] = Counter()
        by_consumer: Counter[str] = Counter()
        lock = threading.Lock()

        def make_handler(tag: str) -> Callable[[Message], None]:
            def handler(message: Message) -> None:
                with lock:
                    seen[message.payload] += 1
                    by_consumer[tag] += 1
                time.sleep(0.001)

            return handler

        first = queue.consume(make_handler("first"), concurrency=2)
        second = queue.consume(make_handler("second"), concurrency=2)
        try:
            assert wait_until(lambda: sum(seen.values()) >= len(expected), self.timeout)
            assert queue.join(self.timeout)
        finally:
            first.stop()
            second.stop()
        assert sorted(seen) == sorted(expected)
        assert set(seen.values()) == {1}
        assert queue.stats["acked"] == len(expected)

    def test_unsettled_item_is_redelivered_after_visibility_timeout(
        self, make_queue: Callable[..., WorkQueue]
    ) -> None:
        """An item fetched and never settled (its consumer died) is delivered again."""
        if self.visibility_timeout is None:
            pytest.skip("this backend declares no visibility timeout")
        queue = make_queue()
        message_id = queue.put("orphan")
        lost = queue.get(timeout=self.timeout)
        assert lost is not None  # ... and never settled
        again = queue.get(timeout=self.timeout + self.visibility_timeout)
        assert again is not None
        assert again.message.id == message_id
        assert again.attempt == lost.attempt + 1
        again.ack()
        lost.ack()  # too late: must not disturb anything
        assert queue.get(timeout=0.2) is None

    def test_item_never_settled_is_dead_lettered_after_max_attempts(
        self, make_queue: Callable[..., WorkQueue]
    ) -> None:
        """An item whose lease runs out ``max_attempts`` times (its consumers keep dying) is not
        delivered again: it is dead-lettered with that reason, and the other items flow."""
        if self.visibility_timeout is None:
            pytest.skip("this backend declares no visibility timeout")
        queue = make_queue()
        most = self.retry.max_attempts
        queue.put("kills its consumer")
        queue.put("healthy")
        stuck: list[Delivery] = []
        deadline = time.monotonic() + self.timeout + 2 * most * self.visibility_timeout
        while not queue.dead_letters():
            assert time.monotonic() < deadline, f"never dead-lettered: {len(stuck)} deliveries"
            delivery = queue.get(timeout=0.2)
            if delivery is None:
                continue
            if delivery.message.payload == "healthy":
                delivery.ack()
                continue
            stuck.append(delivery)  # ... and never settled, as by a consumer that died
            assert len(stuck) <= most, f"delivered {len(stuck)} times, max_attempts={most}"
        # A delivery lost on its way (a broker's pull inbox given up under load) still counts,
        # so the handed-out attempts may skip a number; they never exceed max_attempts.
        attempts = [d.attempt for d in stuck]
        assert attempts, "the stuck item was never handed out"
        assert attempts == sorted(set(attempts)), f"attempts of the stuck item: {attempts}"
        assert attempts[-1] <= most, f"attempts of the stuck item: {attempts}"
        headers = [d.message.headers.get(ATTEMPT_HEADER) for d in stuck]
        assert headers == attempts, f"{ATTEMPT_HEADER} headers {headers} != attempts {attempts}"
        letters = queue.dead_letters()
        assert len(letters) == 1, f"dead letters: {letters}"
        letter = letters[0]
        assert letter.message.payload == "kills its consumer", letter
        expected = f"times without being settled (max_attempts={most})"
        assert expected in letter.reason, f"reason {letter.reason!r} lacks {expected!r}"
        assert f"delivered {letter.attempts} times" in letter.reason, letter
        # Dead-lettered either by the queue when the item comes back past max_attempts, or by
        # the backend itself when the lease of the last allowed delivery runs out.
        assert letter.attempts >= most, f"dead-lettered at attempt {letter.attempts}: {letter}"
        assert "its consumers crashed" in letter.reason, letter.reason
        assert queue.join(self.timeout), f"not drained: {queue.stats}"
        assert queue.get(timeout=0.2) is None, "an item is left after the dead letter"
        stats = queue.stats
        counts = (stats["acked"], stats["over_delivered"], stats["dead_lettered"])
        assert counts in ((1, 1, 1), (1, 0, 0)), (
            f"(acked, over_delivered, dead_lettered) = {counts}"
        )

    def test_handler_sees_the_attempt_number_in_a_header(
        self, make_queue: Callable[..., WorkQueue]
    ) -> None:
        """A ``consume`` handler reads the attempt number (1, 2, ...) from the message header
        ``x-eventforge-attempt`` on every backend, so it can tell a retry from a first try."""
        queue = make_queue()
        queue.put("flaky")
        seen: list[object] = []

        def handler(message: Message) -> None:
            seen.append(message.headers.get(ATTEMPT_HEADER))
            if len(seen) < self.retry.max_attempts:
                raise ValueError("fails until the last attempt")

        consumer = queue.consume(handler)
        try:
            assert wait_until(lambda: queue.stats["acked"] == 1, self.timeout), queue.stats
        finally:
            consumer.stop()
        expected = list(range(1, self.retry.max_attempts + 1))
        assert seen == expected, f"{ATTEMPT_HEADER} seen by the handler: {seen}, not {expected}"

    def _redelivered_after_lease(
        self, make_queue: Callable[..., WorkQueue]
    ) -> tuple[WorkQueue, Delivery, Delivery]:
        """Put one item, fetch it and leave it unsettled until it is delivered again.

        Returns the queue, the first delivery (whose lease ran out) and the redelivery, which
        holds the item now; skips the test on a backend without a visibility timeout.
        """
        if self.visibility_timeout is None:
            pytest.skip("this backend declares no visibility timeout")
        queue = make_queue()
        queue.put("slow")
        late = queue.get(timeout=self.timeout)
        assert late is not None
        again = queue.get(timeout=self.timeout + self.visibility_timeout)
        assert again is not None
        assert again.attempt == late.attempt + 1
        return queue, late, again

    def test_late_ack_after_redelivery_is_stale_and_counted_once(
        self, make_queue: Callable[..., WorkQueue]
    ) -> None:
        """A consumer whose lease ran out acks after the redelivery was acked: the backend
        reports the late ack stale (``False``) and the queue counts one ack."""
        queue, late, again = self._redelivered_after_lease(make_queue)
        again.ack()
        assert queue.backend.ack(late) is False
        assert queue.stats["acked"] == 1
        assert queue.join(self.timeout)
        assert queue.get(timeout=0.2) is None

    def test_late_nack_after_redelivery_disturbs_nothing(
        self, make_queue: Callable[..., WorkQueue]
    ) -> None:
        """A stale nack (its item was delivered again) is reported and neither retries the item
        nor takes it from the consumer that holds it now."""
        queue, late, again = self._redelivered_after_lease(make_queue)
        late.nack()  # through the queue's policy: must not count as a retry
        assert queue.stats["retried"] == 0
        assert queue.get(timeout=0.2) is None  # not put back while `again` holds it
        again.ack()
        assert queue.join(self.timeout)
        assert queue.stats["acked"] == 1
        assert queue.stats["retried"] == 0
        assert queue.get(timeout=0.2) is None

    # -- stats and async --------------------------------------------------------------------

    def test_stats_track_pending_and_in_flight(self, make_queue: Callable[..., WorkQueue]) -> None:
        """``pending`` counts stored items, ``in_flight`` fetched but unsettled ones."""
        queue = make_queue()
        for i in range(3):
            queue.put(i)
        assert wait_until(lambda: queue.stats["pending"] == 3, self.timeout)
        delivery = queue.get(timeout=self.timeout)
        assert delivery is not None
        assert wait_until(
            lambda: (queue.stats["pending"], queue.stats["in_flight"]) == (2, 1), self.timeout
        )
        delivery.ack()
        assert wait_until(lambda: queue.stats["in_flight"] == 0, self.timeout)
        assert queue.stats["acked"] == 1

    def test_backend_stats_have_the_standard_keys(
        self, make_queue: Callable[..., WorkQueue]
    ) -> None:
        """Every backend's ``stats()`` names ``pending``, ``in_flight`` and ``dead_letters``."""
        queue = make_queue()
        queue.put("x")
        assert set(WORK_QUEUE_STATS) <= set(queue.backend.stats())

    def test_async_put_and_get(self, make_queue: Callable[..., WorkQueue]) -> None:
        """``put_async`` / ``get_async`` work inside a running loop."""
        queue = make_queue()

        async def main() -> None:
            message_id = await queue.put_async({"x": 1})
            delivery = await queue.get_async(timeout=self.timeout)
            assert delivery is not None
            assert delivery.message.id == message_id
            delivery.ack()
            assert await queue.get_async(timeout=0.2) is None
            assert await queue.join_async(self.timeout)

        asyncio.run(main())


def _deliberate(value: object) -> bool:
    if getattr(value, _OVERRIDE_ATTR, None):
        return True
    marks = getattr(value, "pytestmark", [])
    return any(getattr(mark, "name", None) == "xfail" for mark in marks)


WorkQueueConformance._contract_tests = frozenset(
    name for name in dir(WorkQueueConformance) if name.startswith("test_")
)
