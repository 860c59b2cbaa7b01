"""Group commit: concurrent puts share round trips, each returns its own outcome."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import pytest
from eventforge_redis._group_commit import GroupCommit


def test_each_caller_gets_its_own_result_and_batches_form() -> None:
    batches: list[list[int]] = []
    gate = threading.Event()

    def send(items: list[int]) -> list[object]:
        batches.append(items)
        gate.wait(0.05)  # a slow round trip, so that other callers queue up meanwhile
        return [ValueError(f"bad {i}") if i % 7 == 0 else i * 10 for i in items]

    commit: GroupCommit[int] = GroupCommit(send)
    results: dict[int, object] = {}

    def call(i: int) -> None:
        try:
            results[i] = commit.submit(i)
        except ValueError as exc:
            results[i] = str(exc)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(1, 41)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == {i: (f"bad {i}" if i % 7 == 0 else i * 10) for i in range(1, 41)}
    assert sorted(i for b in batches for i in b) == list(range(1, 41))  # each sent once
    assert len(batches) < 40  # callers shared round trips


def test_a_failing_send_raises_in_every_caller_of_the_batch() -> None:
    def send(items: list[int]) -> list[object]:
        raise ConnectionError("link down")

    commit: GroupCommit[int] = GroupCommit(send)
    with pytest.raises(ConnectionError):
        commit.submit(1)


@pytest.mark.broker
def test_concurrent_puts_are_all_stored_once(make_redis: Callable[..., object]) -> None:
    """Eight threads put at once: every put is stored exactly once when it returns."""
    from eventforge.message import Message
    from eventforge.workqueue import RetryPolicy

    transport = make_redis()
    name = f"gc-{os.urandom(3).hex()}"
    backend = transport.work_queue_backend(name, RetryPolicy())  # type: ignore[attr-defined]
    ids: list[str] = []
    lock = threading.Lock()

    def producer() -> None:
        for _ in range(200):
            message = Message(name, "x")
            backend.put(message)
            with lock:
                ids.append(message.id)

    threads = [threading.Thread(target=producer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    client = transport.client  # type: ignore[attr-defined]
    assert client.xlen(f"eventforge:wq:{name}") == 1600
    assert len(set(ids)) == 1600
    assert backend.stats()["put"] == 1600
