"""The worker pool behind ``eventforge run --workers N``: a crash loop backs off, and a worker
that ran long enough before dying is restarted without the accumulated backoff."""

from __future__ import annotations

import logging
import sys
import time

import pytest
from eventforge.service import _pool
from eventforge.service._pool import WorkerPool
from eventforge.transport import Backoff

# A worker that checks EF_LIFETIME (read at each spawn) and then crashes.
CRASH = (
    "import os, time; time.sleep(float(os.environ.get('EF_LIFETIME', '0'))); raise SystemExit(3)"
)


def restart_delays(caplog: pytest.LogCaptureFixture) -> list[float]:
    """The delay of every restart the pool logged, in order."""
    return [
        float(r.args[4])  # type: ignore[index]
        for r in caplog.records
        if r.name == "eventforge.run" and "restarting in" in r.msg
    ]


def tick_until(pool: WorkerPool, caplog: pytest.LogCaptureFixture, restarts: int) -> None:
    deadline = time.monotonic() + 30
    while len(restart_delays(caplog)) < restarts:
        assert time.monotonic() < deadline, f"only {restart_delays(caplog)} restarts"
        pool._tick()
        time.sleep(0.01)


def test_a_crash_loop_backs_off_more_each_time_and_resets_after_a_stable_run(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.WARNING, logger="eventforge.run")
    monkeypatch.setattr(_pool, "STABLE_AFTER", 0.5)
    pool = WorkerPool(
        [sys.executable, "-I", "-S", "-c", CRASH],
        workers=1,
        drain_timeout=1.0,
        backoff=Backoff(initial=0.02, cap=0.2, jitter=0.0),
    )
    try:
        tick_until(pool, caplog, restarts=4)
        assert restart_delays(caplog) == [0.02, 0.04, 0.08, 0.16]  # doubling
        tick_until(pool, caplog, restarts=5)
        assert restart_delays(caplog)[4] == 0.2  # capped
        monkeypatch.setenv("EF_LIFETIME", "0.6")  # the next worker outlives STABLE_AFTER
        tick_until(pool, caplog, restarts=7)
        assert restart_delays(caplog)[5:] == [0.02, 0.02]  # back to the first step, twice
        assert pool.report()["workers"][0]["restarts"] == 7
    finally:
        pool._terminate([w for w in pool._slots if w is not None])
