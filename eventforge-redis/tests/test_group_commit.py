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


def test_a_failing_batch_raises_in_each_of_its_callers_and_the_next_batch_succeeds() -> None:
    calls: list[list[int]] = []
    entered = threading.Event()
    release = threading.Event()

    def send(items: list[int]) -> list[object]:
        calls.append(items)
        if len(calls) == 1:
            entered.set()
            release.wait(10)  # the others queue up behind this batch meanwhile
            return list(items)
        if len(calls) == 2:
            raise ConnectionError("link down")
        return list(items)

    commit: GroupCommit[int] = GroupCommit(send)
    outcomes: dict[int, object] = {}

    def call(i: int) -> None:
        try:
            outcomes[i] = commit.submit(i)
        except ConnectionError as exc:
            outcomes[i] = exc

    first = threading.Thread(target=call, args=(0,))
    first.start()
    assert entered.wait(10)
    queued = [threading.Thread(target=call, args=(i,)) for i in range(1, 6)]
    for t in queued:
        t.start()
    while len(commit._queue) < 5:
        threading.Event().wait(0.01)
    release.set()
    for t in [first, *queued]:
        t.join(10)
    assert outcomes[0] == 0
    # The five queued callers formed the second batch, which failed as a whole.
    assert calls[1] == [1, 2, 3, 4, 5]
    assert all(isinstance(outcomes[i], ConnectionError) for i in range(1, 6))
    assert commit.submit(9) == 9  # the lead was handed back: a later call goes through
