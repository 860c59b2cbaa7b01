"""Executor: a cancelled ``result_async`` must not lose the task's result."""

from __future__ import annotations

import asyncio
import threading

from eventforge.execution import ExecutionMode, Executor, TaskStatus


def test_cancelled_result_async_keeps_the_task_retained() -> None:
    release = threading.Event()

    def slow() -> str:
        release.wait(10)
        return "done"

    with Executor(mode=ExecutionMode.THREAD, max_workers=1) as executor:
        task_id = executor.submit(slow)

        async def give_up_early() -> None:
            waiting = asyncio.ensure_future(executor.result_async(task_id))
            await asyncio.sleep(0)  # let it start waiting
            waiting.cancel()
            try:
                await waiting
            except asyncio.CancelledError:
                pass

        asyncio.run(give_up_early())
        release.set()
        result = executor.result(task_id, timeout=10)
        assert result.status is TaskStatus.SUCCESS
        assert result.value == "done"


def test_submitted_callables_are_not_kept_alive() -> None:
    import gc
    import weakref
    from collections.abc import Callable

    class Payload:
        pass

    refs: list[weakref.ref[Payload]] = []

    def make() -> Callable[[], int]:
        payload = Payload()
        refs.append(weakref.ref(payload))

        def closure() -> int:
            return id(payload)

        return closure

    executor = Executor()
    job = make()
    executor.result(executor.submit(job))
    del job
    gc.collect()
    assert refs[0]() is None, "the executor keeps every submitted closure (and what it holds) alive"
