"""WorkQueue review: no item stranded in flight by a cancelled ``get_async``; honest counters."""

from __future__ import annotations

import asyncio

from eventforge.workqueue import WorkQueue


def test_cancelled_get_async_does_not_strand_an_item() -> None:
    with WorkQueue("review.cancel", visibility_timeout=300.0) as wq:

        async def give_up() -> None:
            waiting = asyncio.ensure_future(wq.get_async(timeout=5))
            # Let the off-loop fetch start waiting for an item, then abandon it.
            for _ in range(20):
                await asyncio.sleep(0.005)
            waiting.cancel()
            try:
                await waiting
            except asyncio.CancelledError:
                pass
            # An item put now may be taken by the abandoned fetch: it must come back.
            wq.put("job")

        asyncio.run(give_up())
        delivery = wq.get(timeout=5)
        assert delivery is not None, f"the item was stranded in flight: {wq.stats}"
        assert delivery.message.payload == "job"
        delivery.ack()
        assert wq.stats["in_flight"] == 0


def test_late_ack_of_a_redelivered_item_is_not_counted_twice() -> None:
    with WorkQueue("review.stale", visibility_timeout=0.05) as wq:
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
    with WorkQueue("review.stale-nack", visibility_timeout=0.05) as wq:
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
