"""local:// claims (schedules fire once per tick across processes) and delayed work items."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

from eventforge.transports.local import LocalTransport
from eventforge.workqueue import WorkQueue


def _claim_in_child(directory: str, key: str, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    with LocalTransport(directory) as transport:
        out.put(transport.claim(key, 30))


def test_a_key_is_claimed_once_across_processes_until_its_ttl_passes(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    children = [
        ctx.Process(target=_claim_in_child, args=(str(tmp_path), "tick.1", out)) for _ in range(3)
    ]
    for child in children:
        child.start()
    results = sorted(out.get(timeout=60) for _ in children)
    for child in children:
        child.join(30)
    assert results == [False, False, True]
    with LocalTransport(tmp_path) as transport:
        assert transport.claim("short", 0.1) is True
        assert transport.claim("short", 0.1) is False
        time.sleep(0.15)
        assert transport.claim("short", 0.1) is True


def test_a_delayed_item_waits_in_the_store_until_its_time(tmp_path: Path) -> None:
    with LocalTransport(tmp_path) as producer_side:
        start = time.time()
        WorkQueue("later", producer_side).put("x", delay=0.4)
    with LocalTransport(tmp_path) as consumer_side:
        queue = WorkQueue("later", consumer_side)
        assert queue.get(timeout=0.1) is None
        item = queue.get(timeout=10)
        assert item is not None
        assert item.message.payload == "x"
        assert item.attempt == 1
        assert time.time() - start >= 0.4
        item.ack()
