"""Executor and @task overhead, each beside its stdlib anchor in the same run.

Scenarios:

* THREAD submit+result one at a time, and all submitted first, vs ``ThreadPoolExecutor(4)``
  (goal: at least 0.8x).
* PROCESS ``map`` of trivial items (chunked automatically) vs ``ProcessPoolExecutor.map`` with
  chunksize 1 (goal: at least 10x).
* ``@task(on_execute=[observer])`` call vs the bare function call (reported, no goal).

Every figure is the median of interleaved rounds; pools are started and warmed before timing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

from _common import medians, row
from eventforge import ExecutionMode, Executor, task


def noop(x: int) -> int:
    return x


class NullObserver:
    """The cheapest observer: measures the @task machinery, not an observer's own cost."""

    def before(self, event: Any) -> None:
        pass

    def after(self, event: Any) -> None:
        pass

    def on_error(self, event: Any) -> None:
        pass


def rate(n: int, fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return n / (time.perf_counter() - start)


def thread_rows(quick: bool) -> list[dict[str, Any]]:
    n = 300 if quick else 5_000
    rounds = 1 if quick else 3
    executor = Executor(mode=ExecutionMode.THREAD, max_workers=4).start()
    pool = ThreadPoolExecutor(4)
    try:
        # warm both pools (threads are created lazily)
        executor.map(noop, range(100))
        list(pool.map(noop, range(100)))

        def ef_seq() -> None:
            submit, result = executor.submit, executor.result
            for i in range(n):
                result(submit(noop, i))

        def tpe_seq() -> None:
            submit = pool.submit
            for i in range(n):
                submit(noop, i).result()

        def ef_batch() -> None:
            ids = [executor.submit(noop, i) for i in range(n)]
            result = executor.result
            for task_id in ids:
                result(task_id)

        def tpe_batch() -> None:
            futures = [pool.submit(noop, i) for i in range(n)]
            for future in futures:
                future.result()

        got = medians(
            rounds,
            {
                "ef_seq": lambda: rate(n, ef_seq),
                "tpe_seq": lambda: rate(n, tpe_seq),
                "ef_batch": lambda: rate(n, ef_batch),
                "tpe_batch": lambda: rate(n, tpe_batch),
            },
        )
    finally:
        executor.stop()
        pool.shutdown()
    return [
        row(
            "Executor THREAD submit+result, one at a time",
            got["ef_seq"],
            "ThreadPoolExecutor(4) submit().result()",
            got["tpe_seq"],
            "tasks/s",
            ">= 0.8x",
        ),
        row(
            "Executor THREAD submit all, then result each",
            got["ef_batch"],
            "ThreadPoolExecutor(4) submit all, then result",
            got["tpe_batch"],
            "tasks/s",
            ">= 0.8x",
        ),
    ]


def process_rows(quick: bool) -> list[dict[str, Any]]:
    n = 2_000 if quick else 10_000
    rounds = 1 if quick else 3
    items = list(range(-n // 2, n // 2))
    executor = Executor(mode=ExecutionMode.PROCESS, max_workers=2).start()
    pool = ProcessPoolExecutor(2)
    try:
        # start the worker processes before timing (abs pickles by reference anywhere)
        executor.map(abs, range(100))
        list(pool.map(abs, range(100)))

        def ef_map() -> None:
            results = executor.map(abs, items)
            assert results[0].value == n // 2

        def ppe_map() -> None:
            list(pool.map(abs, items, chunksize=1))

        got = medians(rounds, {"ef": lambda: rate(n, ef_map), "ppe": lambda: rate(n, ppe_map)})
    finally:
        executor.stop()
        pool.shutdown()
    return [
        row(
            f"Executor PROCESS map of {n:,} trivial items (auto chunks)",
            got["ef"],
            "ProcessPoolExecutor(2).map, chunksize 1",
            got["ppe"],
            "tasks/s",
            ">= 10x",
        )
    ]


def task_rows(quick: bool) -> list[dict[str, Any]]:
    n = 20_000 if quick else 300_000
    rounds = 1 if quick else 3

    def bare(x: int) -> int:
        return x + 1

    observed = task(on_execute=[NullObserver()])(bare)

    def call_bare() -> None:
        for i in range(n):
            bare(i)

    def call_task() -> None:
        for i in range(n):
            observed(i)

    got = medians(rounds, {"task": lambda: rate(n, call_task), "bare": lambda: rate(n, call_bare)})
    return [
        row(
            "@task(on_execute=[observer]) direct call",
            got["task"],
            "the bare function call",
            got["bare"],
            "calls/s",
            "report (overhead = 1 / ratio)",
        )
    ]


def run(quick: bool) -> list[dict[str, Any]]:
    """Measure every scenario; ``quick`` keeps the whole run to a few seconds."""
    return [*thread_rows(quick), *process_rows(quick), *task_rows(quick)]


if __name__ == "__main__":
    import sys

    for r in run("--quick" in sys.argv):
        print(
            f"{r['scenario']:<58} {r['eventforge']:>12,.0f} vs {r['anchor_value']:>12,.0f} "
            f"{r['unit']:<8} {r['ratio']:6.2f}x  goal {r['goal']}"
        )
