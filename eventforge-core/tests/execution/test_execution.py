"""Executor: submit / result / map in the three modes, sync and async, errors, timeouts, retention."""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref
from collections.abc import Callable

import pytest
from eventforge import ExecutionMode, Executor, TaskResult, TaskStatus
from eventforge.execution import TaskNotFound, UnpicklableTaskError

ALL_MODES = [ExecutionMode.SEQUENTIAL, ExecutionMode.THREAD, ExecutionMode.PROCESS]


def square(x: int) -> int:
    return x * x


def add(a: int, b: int, *, scale: int = 1) -> int:
    return (a + b) * scale


def boom(x: int) -> int:
    raise ValueError(f"bad item {x}")


def fail_on_odd(x: int) -> int:
    if x % 2:
        raise ValueError(f"odd {x}")
    return x


async def async_double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


@pytest.fixture(params=ALL_MODES, ids=lambda m: m.name.lower())
def executor(request: pytest.FixtureRequest):
    with Executor(mode=request.param, max_workers=2) as ex:
        yield ex


def test_submit_result_returns_value_status_and_time(executor: Executor) -> None:
    task_id = executor.submit(add, 2, 3, scale=10)
    assert isinstance(task_id, str)
    result = executor.result(task_id, timeout=30)
    assert isinstance(result, TaskResult)
    assert (result.task_id, result.value, result.status, result.error) == (
        task_id,
        50,
        TaskStatus.SUCCESS,
        None,
    )
    assert result.ok
    assert result.execution_time >= 0.0


def test_error_is_captured_not_raised(executor: Executor) -> None:
    result = executor.result(executor.submit(boom, 7), timeout=30)
    assert result.status is TaskStatus.FAILED
    assert isinstance(result.error, ValueError)
    assert str(result.error) == "bad item 7"
    assert result.value is None
    with pytest.raises(ValueError, match="bad item 7"):
        result.unwrap()


def test_map_keeps_order_and_captures_each_error(executor: Executor) -> None:
    results = executor.map(fail_on_odd, range(10), timeout=30)
    assert [r.status for r in results] == [
        TaskStatus.SUCCESS if i % 2 == 0 else TaskStatus.FAILED for i in range(10)
    ]
    assert [r.value for r in results if r.ok] == [0, 2, 4, 6, 8]
    assert all(isinstance(r.error, ValueError) for r in results if not r.ok)
    assert len({r.task_id for r in results}) == 10


def test_coroutine_functions_run_in_every_mode(executor: Executor) -> None:
    assert executor.result(executor.submit(async_double, 21), timeout=30).value == 42
    assert [r.value for r in executor.map(async_double, [1, 2, 3], timeout=30)] == [2, 4, 6]


def test_result_is_released_once_fetched(executor: Executor) -> None:
    task_id = executor.submit(square, 3)
    assert executor.result(task_id, timeout=30).value == 9
    with pytest.raises(TaskNotFound, match="already fetched"):
        executor.result(task_id)
    assert executor.stats["retained"] == 0


def test_unknown_task_id_is_a_clear_error() -> None:
    with pytest.raises(TaskNotFound, match="never submitted") as info:
        Executor().result("nope")
    assert info.value.task_id == "nope"


def test_sequential_runs_inline_at_submit() -> None:
    ran_on: list[threading.Thread] = []
    ex = Executor()
    task_id = ex.submit(lambda: ran_on.append(threading.current_thread()))
    assert ran_on == [threading.current_thread()]  # before result() was called
    assert ex.result(task_id).status is TaskStatus.SUCCESS


def test_thread_timeout_is_a_status_and_task_stays_fetchable() -> None:
    release = threading.Event()
    with Executor(mode=ExecutionMode.THREAD, max_workers=1) as ex:
        task_id = ex.submit(release.wait, 30)
        first = ex.result(task_id, timeout=0.01)
        assert first.status is TaskStatus.TIMEOUT
        assert first.value is None
        assert first.error is None
        assert ex.status(task_id) in (TaskStatus.RUNNING, TaskStatus.PENDING)
        release.set()
        assert ex.result(task_id, timeout=30).value is True


def test_map_timeout_reports_unfinished_items_as_timeout() -> None:
    release = threading.Event()

    def wait_or_fast(x: int) -> int:
        if x == 0:
            release.wait(30)
        return x

    with Executor(mode=ExecutionMode.THREAD, max_workers=2) as ex:
        results = ex.map(wait_or_fast, [0, 1, 2], timeout=1.0)
        release.set()
    assert results[0].status is TaskStatus.TIMEOUT
    assert [r.value for r in results[1:]] == [1, 2]


def test_cancel_and_stop_without_wait_report_cancelled() -> None:
    release = threading.Event()
    ex = Executor(mode=ExecutionMode.THREAD, max_workers=1)
    blocker = ex.submit(release.wait, 30)
    queued = ex.submit(square, 2)
    also_queued = ex.submit(square, 3)
    assert ex.cancel(queued) is True
    assert ex.result(queued).status is TaskStatus.CANCELLED
    ex.stop(wait=False)
    release.set()
    assert ex.result(also_queued, timeout=30).status is TaskStatus.CANCELLED
    assert ex.result(blocker, timeout=30).value is True


def test_retention_caps_unfetched_results_and_counts_evictions() -> None:
    ex = Executor(max_retained=3)
    ids = [ex.submit(square, i) for i in range(5)]
    assert ex.stats["retained"] == 3
    assert ex.stats["evicted"] == 2
    assert ex.stats["submitted"] == 5
    for evicted in ids[:2]:
        with pytest.raises(TaskNotFound):
            ex.result(evicted)
    assert [ex.result(i).value for i in ids[2:]] == [4, 9, 16]


def test_map_retains_nothing(executor: Executor) -> None:
    executor.map(square, range(20), timeout=30)
    assert executor.stats["retained"] == 0


def test_submitted_callables_are_not_kept_alive() -> None:
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


def test_process_mode_rejects_unpicklable_callables_at_submit_and_map() -> None:
    def local_function(x: int) -> int:
        return x

    with Executor(mode=ExecutionMode.PROCESS, max_workers=1) as ex:
        with pytest.raises(UnpicklableTaskError, match="module level"):
            ex.submit(lambda: 1)
        with pytest.raises(UnpicklableTaskError, match="local_function"):
            ex.map(local_function, [1, 2])
        assert ex.stats["retained"] == 0


def test_process_mode_unpicklable_argument_is_a_failed_result() -> None:
    with Executor(mode=ExecutionMode.PROCESS, max_workers=1) as ex:
        result = ex.result(ex.submit(square, threading.Lock()), timeout=30)
    assert result.status is TaskStatus.FAILED
    assert result.error is not None


def test_process_map_chunks_many_items_and_keeps_order() -> None:
    with Executor(mode=ExecutionMode.PROCESS, max_workers=2) as ex:
        results = ex.map(square, range(1000))
    assert [r.value for r in results] == [i * i for i in range(1000)]


def test_stop_then_submit_starts_a_new_pool() -> None:
    ex = Executor(mode=ExecutionMode.THREAD)
    assert ex.result(ex.submit(square, 2), timeout=30).value == 4
    ex.stop()
    assert ex.stats["running"] is False
    assert ex.result(ex.submit(square, 3), timeout=30).value == 9
    ex.stop()


def test_invalid_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="max_workers"):
        Executor(max_workers=0)
    with pytest.raises(ValueError):
        Executor(mode="fibers")


# -- async twins ---------------------------------------------------------------------------------


def test_async_twins_in_every_mode(executor: Executor) -> None:
    async def main() -> None:
        task_id = await executor.submit_async(add, 1, 2)
        assert (await executor.result_async(task_id, timeout=30)).value == 3
        failed = await executor.result_async(await executor.submit_async(boom, 1), timeout=30)
        assert failed.status is TaskStatus.FAILED
        results = await executor.map_async(square, [1, 2, 3], timeout=30)
        assert [r.value for r in results] == [1, 4, 9]
        coro_id = await executor.submit_async(async_double, 5)
        assert (await executor.result_async(coro_id, timeout=30)).value == 10

    asyncio.run(main())


def test_result_async_does_not_block_the_loop_and_times_out() -> None:
    release = threading.Event()

    async def main() -> None:
        with Executor(mode=ExecutionMode.THREAD, max_workers=1) as ex:
            task_id = await ex.submit_async(release.wait, 30)
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0)

            ticking = asyncio.create_task(ticker())
            timed_out = await ex.result_async(task_id, timeout=0.05)
            assert timed_out.status is TaskStatus.TIMEOUT
            assert ticks > 0  # the loop kept running while we waited
            release.set()
            assert (await ex.result_async(task_id, timeout=30)).value is True
            ticking.cancel()

    asyncio.run(main())


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


def test_sequential_submit_async_awaits_coroutines_on_the_running_loop() -> None:
    async def on_this_loop() -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    async def main() -> None:
        ex = Executor()
        result = await ex.result_async(await ex.submit_async(on_this_loop))
        assert result.value is asyncio.get_running_loop()

    asyncio.run(main())


def test_thread_work_submitted_before_exit_still_runs(tmp_path) -> None:
    import subprocess
    import sys

    script = tmp_path / "fire_and_forget.py"
    script.write_text(
        "import time\n"
        "from eventforge import Executor, ExecutionMode\n"
        "ex = Executor(mode=ExecutionMode.THREAD, max_workers=1)\n"
        "def late():\n"
        "    time.sleep(0.2)\n"
        "    print('ran', flush=True)\n"
        "for _ in range(3):\n"
        "    ex.submit(late)\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ran", "ran", "ran"]


def test_a_task_raising_system_exit_is_a_failure_and_the_worker_survives() -> None:
    def leave() -> None:
        raise SystemExit(3)

    with Executor(mode=ExecutionMode.THREAD, max_workers=1) as ex:
        failed = ex.result(ex.submit(leave), timeout=30)
        assert failed.status is TaskStatus.FAILED
        assert isinstance(failed.error, SystemExit)
        assert ex.result(ex.submit(square, 4), timeout=30).value == 16


def test_many_waiters_on_one_thread_task() -> None:
    release = threading.Event()
    with Executor(mode=ExecutionMode.THREAD, max_workers=1) as ex:
        task_id = ex.submit(release.wait, 30)
        statuses: list[TaskStatus] = []

        async def waiter() -> None:
            statuses.append((await ex.result_async(task_id, timeout=0.05)).status)

        asyncio.run(waiter())
        release.set()
        assert ex.result(task_id, timeout=30).value is True
    assert statuses == [TaskStatus.TIMEOUT]


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_thread_executor_works_in_a_forked_child() -> None:
    import os

    with Executor(mode=ExecutionMode.THREAD, max_workers=2) as ex:
        assert ex.result(ex.submit(square, 2), timeout=30).value == 4
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: the parent's worker threads do not exist here
            try:
                value = ex.result(ex.submit(square, 5), timeout=10).value
                os.write(write, str(value).encode())
            finally:
                os._exit(0)
        os.close(write)
        os.waitpid(pid, 0)
        assert os.read(read, 100) == b"25"
        os.close(read)


def test_thread_mode_runs_max_workers_tasks_at_once() -> None:
    barrier = threading.Barrier(4, timeout=10)
    with Executor(mode=ExecutionMode.THREAD, max_workers=4) as ex:
        assert ex.result(ex.submit(square, 1), timeout=30).value == 1  # one warm, idle worker
        ids = [ex.submit(barrier.wait) for _ in range(4)]
        results = [ex.result(i, timeout=30) for i in ids]
    assert [r.status for r in results] == [TaskStatus.SUCCESS] * 4
    assert sorted(r.value for r in results) == [0, 1, 2, 3]


def test_a_forgotten_executor_lets_its_threads_finish_and_exit() -> None:
    import gc

    done = threading.Event()
    ex = Executor(mode=ExecutionMode.THREAD, max_workers=2)
    ex.submit(done.wait, 10)
    ex.submit(square, 3)
    pool = ex._pool
    assert pool is not None
    threads = list(pool._threads)
    del ex
    gc.collect()
    done.set()
    for thread in threads:
        thread.join(10)
    assert not any(t.is_alive() for t in threads)
