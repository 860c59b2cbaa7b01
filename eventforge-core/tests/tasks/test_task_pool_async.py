"""TaskPool.acquire_async: woken by releases from any thread, never polls, safe to cancel."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from eventforge.tasks._support import TaskPool, TaskPoolTimeout


class _CountingLoop(asyncio.SelectorEventLoop):
    """An event loop that counts the timers scheduled on it (``asyncio.sleep`` makes one)."""

    timers = 0

    def call_at(self, when: float, callback: Any, *args: Any, context: Any = None) -> Any:
        self.timers += 1
        return super().call_at(when, callback, *args, context=context)


async def _until(predicate: Any) -> None:
    for _ in range(100_000):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never became true")


def _idle(pool: TaskPool) -> None:
    stats = pool.stats
    assert (stats["active"], stats["waiting"]) == (0, 0)
    assert not pool._async_waiters


def test_a_waiting_async_acquirer_does_not_poll_and_a_thread_release_wakes_it() -> None:
    pool = TaskPool(1, name="polling")
    pool.acquire()
    loop = _CountingLoop()

    async def main() -> None:
        waiter = asyncio.ensure_future(pool.acquire_async(timeout=None))
        await _until(lambda: pool.stats["waiting"] == 1)
        before = loop.timers
        await asyncio.to_thread(time.sleep, 0.1)  # the loop runs; a poller would wake up here
        assert loop.timers == before, "acquire_async scheduled timers while waiting (polling)"
        assert not waiter.done()
        await asyncio.to_thread(pool.release)  # a release from another (sync) thread wakes it
        await asyncio.wait_for(waiter, 10)
        pool.release()

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    _idle(pool)
    assert pool.stats["completed"] == 2


def test_a_cancelled_waiter_leaks_no_slot() -> None:
    pool = TaskPool(1, name="cancel")

    async def main() -> None:
        await pool.acquire_async()
        waiter = asyncio.ensure_future(pool.acquire_async())
        await _until(lambda: pool.stats["waiting"] == 1)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        pool.release()

    asyncio.run(main())
    _idle(pool)
    pool.acquire(timeout=0)  # the slot is free
    pool.release()


def test_a_waiter_cancelled_after_its_wake_up_passes_it_on() -> None:
    """The release woke the oldest waiter, which was cancelled before it ran: the next gets in."""
    pool = TaskPool(1, name="handover")

    async def main() -> None:
        await pool.acquire_async()
        first = asyncio.ensure_future(pool.acquire_async())
        await _until(lambda: pool.stats["waiting"] == 1)
        second = asyncio.ensure_future(pool.acquire_async())
        await _until(lambda: pool.stats["waiting"] == 2)
        pool.release()  # wakes `first` ...
        first.cancel()  # ... which goes away before it could take the slot
        await asyncio.wait_for(second, 10)
        assert first.cancelled()
        assert pool.stats["active"] == 1
        pool.release()

    asyncio.run(main())
    _idle(pool)


def test_a_timed_out_async_waiter_is_rejected_and_leaves_nothing_behind() -> None:
    pool = TaskPool(1, timeout=0.01, name="timeout")
    pool.acquire()

    async def main() -> None:
        with pytest.raises(TaskPoolTimeout):
            await pool.acquire_async()

    asyncio.run(main())
    pool.release()
    _idle(pool)
    assert pool.stats["rejected"] == 1


def test_many_async_and_sync_waiters_all_get_through() -> None:
    pool = TaskPool(3, name="crowd")
    tasks, threads, rounds = 200, 4, 50
    running = 0
    peak = 0
    lock = threading.Lock()

    def enter() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)

    def leave() -> None:
        nonlocal running
        with lock:
            running -= 1

    def sync_worker() -> None:
        for _ in range(rounds):
            with pool.slot(timeout=None):
                enter()
                time.sleep(0)
                leave()

    async def one() -> None:
        await pool.acquire_async(timeout=None)
        try:
            enter()
            await asyncio.sleep(0)
            leave()
        finally:
            pool.release()

    async def main() -> None:
        workers = [threading.Thread(target=sync_worker) for _ in range(threads)]
        for worker in workers:
            worker.start()
        await asyncio.wait_for(asyncio.gather(*(one() for _ in range(tasks))), 60)
        await asyncio.to_thread(lambda: [worker.join(60) for worker in workers])

    asyncio.run(main())
    _idle(pool)
    assert pool.stats["completed"] == tasks + threads * rounds
    assert peak <= 3
    assert pool.stats["peak"] <= 3


def test_an_async_release_wakes_a_sync_acquirer() -> None:
    pool = TaskPool(1, name="sync-waiter")
    got = threading.Event()

    async def main() -> None:
        await pool.acquire_async()
        thread = threading.Thread(target=lambda: (pool.acquire(timeout=None), got.set()))
        thread.start()
        await _until(lambda: pool.stats["waiting"] == 1)
        pool.release()
        assert await asyncio.to_thread(got.wait, 10)
        await asyncio.to_thread(thread.join, 10)

    asyncio.run(main())
    pool.release()
    _idle(pool)
