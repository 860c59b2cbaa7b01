"""ThreadPool: a submit racing shutdown is run or refused, never left with no thread to run it."""

from __future__ import annotations

from queue import SimpleQueue
from typing import Any

from eventforge.execution._runners import call
from eventforge.execution._threadpool import Job, ThreadPool


class _ShutdownAfterFirstJob:
    """A job queue that shuts the pool down right after the first job is queued (a racing stop)."""

    def __init__(self, pool: ThreadPool) -> None:
        self._pool = pool
        self._inner: SimpleQueue[Job | None] = SimpleQueue()
        self._raced = False

    def put(self, item: Job | None) -> None:
        self._inner.put(item)
        if isinstance(item, Job) and not self._raced:
            self._raced = True
            self._pool.shutdown(wait=False, cancel_pending=False)

    def get(self) -> Job | None:
        return self._inner.get()

    def get_nowait(self) -> Job | None:
        return self._inner.get_nowait()


def test_submit_racing_shutdown_is_run_or_refused_never_stranded() -> None:
    pool = ThreadPool(2, call)
    pool._queue = _ShutdownAfterFirstJob(pool)  # type: ignore[assignment]
    job: Any = None
    try:
        job = pool.submit(lambda: "ran", (), {})
    except RuntimeError:
        return  # refused: the caller knows it did not run
    assert job.wait(5), "the job was queued on a stopped pool with no thread to run it"
    assert job.done()
