"""The delayed-item part of the work-queue contract (mixed into ``WorkQueueConformance``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import ClassVar

import pytest

from eventforge.errors import UnsupportedCapabilityError
from eventforge.testing.waiting import wait_until
from eventforge.workqueue import WorkQueue

__all__ = ["DelayedItemsContract"]


class DelayedItemsContract:
    """``put(delay=)`` / ``put(not_before=)`` on backends that keep delayed items (``delays``),
    and a clear refusal on those that cannot."""

    timeout: ClassVar[float] = 10.0

    def test_delayed_item_is_not_handed_out_before_it_is_due(
        self, make_queue: Callable[..., WorkQueue]
    ) -> None:
        """``put(delay=)`` keeps the item from every consumer until its due time; an item put
        after it without a delay is handed out first. A backend without delays refuses."""
        queue = make_queue()
        if not getattr(queue.backend, "delays", False):
            with pytest.raises(UnsupportedCapabilityError, match="delayed item"):
                queue.put("later", delay=1.0)
            assert queue.get(timeout=0.2) is None  # nothing was stored
            return
        before = time.time()  # the due time is counted from the call, not from its return
        queue.put("later", delay=1.0)
        queue.put("now")
        first = queue.get(timeout=self.timeout)
        assert first is not None
        assert first.message.payload == "now"
        first.ack()
        later = queue.get(timeout=self.timeout + 1.0)
        assert later is not None
        assert later.message.payload == "later"
        assert time.time() - before >= 1.0 - 0.02  # never early (clock reads ~ms apart)
        assert later.attempt == 1
        later.ack()

    def test_not_before_in_the_past_is_handed_out_at_once(
        self, make_queue: Callable[..., WorkQueue]
    ) -> None:
        """A due time already past (or ``delay=0``) is a plain put, on every backend."""
        queue = make_queue()
        queue.put("past", not_before=time.time() - 60)
        queue.put("zero", delay=0)
        got = [queue.get(timeout=self.timeout) for _ in range(2)]
        assert [d.message.payload for d in got if d is not None] == ["past", "zero"]
        for delivery in got:
            assert delivery is not None
            delivery.ack()

    def test_a_delay_of_days_is_kept_and_put_many_delays_every_item(
        self, make_queue: Callable[..., WorkQueue]
    ) -> None:
        """An item three days away waits (and counts as ``pending``) while the items of a
        delayed ``put_many`` come, each no earlier than the delay."""
        queue = make_queue()
        if not getattr(queue.backend, "delays", False):
            return  # refused: test_delayed_item_is_not_handed_out_before_it_is_due
        queue.put("in three days", delay=3 * 86_400)
        before = time.time()
        queue.put_many(["a", "b"], delay=0.3)
        queue.put("now")
        assert wait_until(lambda: queue.stats["pending"] == 4, self.timeout)
        got = []
        for _ in range(3):
            delivery = queue.get(timeout=self.timeout + 1.0)
            assert delivery is not None
            got.append(delivery.message.payload)
            delivery.ack()
        assert got[0] == "now"
        assert sorted(got[1:]) == ["a", "b"]
        assert time.time() - before >= 0.3 - 0.02
        assert queue.get(timeout=0.2) is None
        assert wait_until(lambda: queue.stats["pending"] == 1, self.timeout)
