"""SubscriptionCache review: closing the queue wakes the callers waiting on its caches."""

from __future__ import annotations

import threading

from eventforge.queue import MessageQueue


def test_queue_close_wakes_a_blocked_cache_get() -> None:
    queue = MessageQueue()
    cache = queue.cache("review.cache")
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
