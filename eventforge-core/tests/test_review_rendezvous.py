"""Rendezvous review: a queue that used the rendezvous is not kept alive by it."""

from __future__ import annotations

import gc
import weakref

from eventforge.queue import MessageQueue


def test_queue_that_announced_is_collected_after_close() -> None:
    queue = MessageQueue()
    queue.announce_ready(["worker"])
    assert queue.wait_until_ready({"worker": 1}, timeout=5)
    queue.close()
    gone = weakref.ref(queue)
    del queue
    gc.collect()
    assert gone() is None, "the rendezvous registry keeps every queue (and its transport) alive"
