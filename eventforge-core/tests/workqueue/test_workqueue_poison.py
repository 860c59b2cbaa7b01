"""In-process work queue: an item fetched and never settled is redelivered at most max_attempts
times, then dead-lettered, and never holds up the other items."""

from __future__ import annotations

import time

from eventforge.testing.waiting import wait_until
from eventforge.workqueue._api import (
    ATTEMPT_HEADER,
    DEAD_LETTER_REASON_HEADER,
    RetryPolicy,
    WorkQueue,
)

MAX_ATTEMPTS = 3
POLICY = RetryPolicy(max_attempts=MAX_ATTEMPTS, initial_backoff=0.01, jitter=0.0)
REASON = (
    f"delivered {MAX_ATTEMPTS + 1} times without being settled (max_attempts={MAX_ATTEMPTS}): "
    "its consumers crashed or exceeded the visibility timeout (visibility_timeout)"
)


def test_item_never_settled_is_dead_lettered_and_fifty_good_items_are_handled() -> None:
    """Visibility timeout 0.2 s, max 3 attempts: the unsettled item is handed out 3 times, then
    dead-lettered with the reason; the 50 good items are all handled meanwhile."""
    good_items = 50
    with WorkQueue("poison", retry=POLICY, visibility_timeout=0.2) as queue:
        queue.put("poison")
        queue.put_many(list(range(good_items)))
        poison_attempts: list[int] = []
        good: list[int] = []
        started = time.monotonic()
        while not (queue.dead_letters() and len(good) == good_items):
            assert time.monotonic() - started < 30, "stalled"  # a watchdog, not a timing
            delivery = queue.get(timeout=0.05)
            if delivery is None:
                continue
            if delivery.message.payload == "poison":
                poison_attempts.append(delivery.message.headers[ATTEMPT_HEADER])
                assert len(poison_attempts) <= MAX_ATTEMPTS, poison_attempts
                continue  # never settled: the consumer holding it "died"
            good.append(delivery.message.payload)
            delivery.ack()
        stats = queue.stats
        print(
            f"MEM poison pill (never settled): poison_deliveries={len(poison_attempts)} "
            f"dlq_count={len(queue.dead_letters())} good_handled={len(set(good))}/{good_items} "
            f"time_s={time.monotonic() - started:.1f}"
        )
        assert poison_attempts == [1, 2, 3]
        assert sorted(good) == list(range(good_items))
        [letter] = queue.dead_letters()
        assert (letter.message.payload, letter.attempts, letter.reason) == (
            "poison",
            MAX_ATTEMPTS + 1,
            REASON,
        )
        assert letter.message.headers[DEAD_LETTER_REASON_HEADER] == REASON
        assert (stats["over_delivered"], stats["dead_lettered"], stats["acked"]) == (1, 1, 50)
        assert queue.join(5)


def test_get_skips_an_over_delivered_item_and_waits_for_the_next() -> None:
    """When the only item fetched is dead-lettered for over-delivery, ``get`` goes on waiting
    within its timeout and returns the next item instead of ``None``."""
    with WorkQueue("poison", retry=POLICY, visibility_timeout=0.05) as queue:
        queue.put("poison")
        for _ in range(MAX_ATTEMPTS):
            held = queue.get(timeout=5)  # never settled
            assert held is not None
            assert held.message.payload == "poison"
        # The last lease runs out: the poison is ready again, ahead of the next item.
        assert wait_until(lambda: queue.stats["ready"] == 1, 5)
        queue.put("good")
        delivery = queue.get(timeout=5)
        assert delivery is not None
        assert delivery.message.payload == "good"
        assert delivery.attempt == 1
        delivery.ack()
        assert [letter.message.payload for letter in queue.dead_letters()] == ["poison"]
