"""The in-process work-queue backend: each delivery owns its message; stale settles change nothing."""

from __future__ import annotations

from eventforge.transports._memory_workqueue import MemoryWorkQueueBackend
from eventforge.workqueue._api import (
    ATTEMPT_HEADER,
    DEAD_LETTER_REASON_HEADER,
    RetryPolicy,
    WorkQueue,
)

RETRY = RetryPolicy(max_attempts=5, initial_backoff=0.0, max_backoff=0.0, jitter=0.0)


def _queue(visibility_timeout: float = 0.05) -> WorkQueue:
    backend = MemoryWorkQueueBackend("stale", visibility_timeout=visibility_timeout)
    return WorkQueue("stale", retry=RETRY, backend=backend)


def test_each_delivery_gets_its_own_message() -> None:
    """A redelivery does not change the headers of the message a stale consumer still holds."""
    payload = {"order": 7}
    with _queue() as queue:
        message_id = queue.put(payload, source="test")
        first = queue.get(timeout=5)
        assert first is not None
        again = queue.get(timeout=5)  # the first lease ran out: redelivered
        assert again is not None
        assert again.message.id == first.message.id == message_id
        assert again.message is not first.message
        assert again.message.headers is not first.message.headers
        assert first.message.headers[ATTEMPT_HEADER] == 1
        assert again.message.headers[ATTEMPT_HEADER] == 2
        assert first.message.headers["source"] == again.message.headers["source"] == "test"
        # The payload is shared, not copied (the memory transport hands payloads by reference).
        assert again.message.payload is first.message.payload
        again.message.headers["note"] = "mine"
        assert "note" not in first.message.headers
        again.ack()


def test_headers_written_before_a_nack_travel_with_the_retry() -> None:
    with _queue(visibility_timeout=30.0) as queue:
        queue.put("job")
        first = queue.get(timeout=5)
        assert first is not None
        first.message.headers["progress"] = "half"
        first.nack()
        second = queue.get(timeout=5)
        assert second is not None
        assert second.message.headers["progress"] == "half"
        assert second.message.headers[ATTEMPT_HEADER] == 2
        assert first.message.headers[ATTEMPT_HEADER] == 1
        second.nack(requeue=False)
        (letter,) = queue.dead_letters()
        assert letter.message.headers[DEAD_LETTER_REASON_HEADER]
        assert DEAD_LETTER_REASON_HEADER not in first.message.headers


def test_late_settle_of_a_redelivered_item_is_stale_and_not_counted() -> None:
    """Lease runs out, the item is redelivered and acked; the late ack is reported stale."""
    with _queue() as queue:
        queue.put("job")
        late = queue.get(timeout=5)
        assert late is not None
        again = queue.get(timeout=5)
        assert again is not None
        again.ack()
        assert queue.backend.ack(late) is False
        late.ack()
        late.settled = False
        late.nack()
        stats = queue.stats
        assert stats["acked"] == 1
        assert stats["retried"] == 0
        assert stats["stale_settles"] == 3
        assert queue.get(timeout=0.05) is None


def test_late_ack_of_a_redelivered_item_is_not_counted_twice() -> None:
    with WorkQueue("stale.ack", visibility_timeout=0.05) as wq:
        wq.put("job")
        first = wq.get(timeout=5)
        assert first is not None
        # Not settled within the visibility timeout: delivered again.
        second = wq.get(timeout=5)
        assert second is not None
        assert second.attempt == 2
        second.ack()
        first.ack()  # late: the item is already done
        stats = wq.stats
        assert stats["acked"] == 1, stats
        assert stats["stale_settles"] == 1, stats


def test_late_nack_of_a_redelivered_item_is_not_counted_as_a_retry() -> None:
    with WorkQueue("stale.nack", visibility_timeout=0.05) as wq:
        wq.put("job")
        first = wq.get(timeout=5)
        assert first is not None
        second = wq.get(timeout=5)
        assert second is not None
        second.ack()
        first.nack()
        stats = wq.stats
        assert stats["retried"] == 0, stats
        assert stats["pending"] == 0, stats
        assert stats["in_flight"] == 0, stats
