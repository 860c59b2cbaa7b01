"""Periodic schedules run by real worker processes, for transports that can claim ticks.

:func:`run_ticker` starts ``eventforge run`` on a small service whose schedules write every
firing to a file, optionally SIGKILLs one worker midway (the pool restarts it), and returns the
:class:`Firings`; :func:`one_firing_per_tick` checks that a schedule fired each tick of a time
window exactly once. The tests of every transport with the ``claims`` capability use them, so
they all prove the same thing the same way.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["TICKER_APP", "Firing", "Firings", "TickReport", "one_firing_per_tick", "run_ticker"]

TICKER_APP = """
import os
from pathlib import Path
from eventforge.service import Service

OUT = Path(os.environ["EF_TEST_OUT"])
svc = Service(os.environ.get("EF_TEST_SERVICE", "ticker"), probe_interval=None)


def record(tick):
    with open(OUT / "firings", "a") as f:
        scheduled = round(tick.scheduled.timestamp() * 1000)
        f.write(f"{tick.name} {scheduled} {int(tick.late)} {os.getpid()}\\n")


for missed in os.environ.get("EF_TEST_MISSED", "skip").split(","):
    svc.every(
        float(os.environ.get("EF_TEST_INTERVAL", "0.5")),
        name=f"beat-{missed}",
        missed=missed,
        catch_up=float(os.environ.get("EF_TEST_CATCH_UP", "3600")),
    )(record)
"""
"""The service ``tickerapp:svc``: one schedule ``beat-<policy>`` per missed-tick policy in
``EF_TEST_MISSED``, every ``EF_TEST_INTERVAL`` seconds, each firing appended to
``$EF_TEST_OUT/firings`` as ``name tick_ms late pid``."""


@dataclass(frozen=True)
class Firing:
    """One line of the firings file."""

    name: str
    tick_ms: int
    late: bool
    pid: int


@dataclass
class Firings:
    """What the workers of one or more runs fired, in the order they wrote it."""

    all: list[Firing] = field(default_factory=list)
    started: float = 0.0
    """When the first run's workers were all ready (Unix time)."""
    ended: float = 0.0
    """When the last run was told to stop (Unix time)."""

    def of(self, name: str) -> list[Firing]:
        return [f for f in self.all if f.name == name]


@dataclass(frozen=True)
class TickReport:
    """One schedule over a window: its ticks, firings, duplicate firings and missed ticks."""

    ticks: int
    firings: int
    duplicates: int
    misses: list[int]
    workers: int

    def line(self, what: str) -> str:
        return (
            f"{what}: ticks {self.ticks}, firings {self.firings}, duplicates {self.duplicates}, "
            f"misses {len(self.misses)}, workers that fired {self.workers}"
        )


def run_ticker(
    directory: Path,
    url: str,
    *,
    workers: int = 1,
    seconds: float = 1.0,
    kill_one_after: float | None = None,
    env: dict[str, str] | None = None,
    firings: Firings | None = None,
) -> Firings:
    """Run ``tickerapp:svc`` under ``eventforge run --workers N --transport url`` for
    ``seconds`` once every worker is ready, then stop it with SIGTERM (a graceful stop).

    ``kill_one_after`` SIGKILLs the first worker that many seconds in (``seconds`` counts from
    the start either way). Pass the ``firings`` of an earlier run to add to them (a restart).
    """
    (directory / "tickerapp.py").write_text(TICKER_APP)
    out = directory / "out"
    out.mkdir(exist_ok=True)
    environ = {**os.environ, "EF_TEST_OUT": str(out), "PYTHONUNBUFFERED": "1", **(env or {})}
    command = [sys.executable, "-m", "eventforge.cli", "run", "tickerapp:svc"]
    command += ["--workers", str(workers), "--transport", url, "--health-port", "0"]
    proc = subprocess.Popen(
        command,
        cwd=directory,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    result = firings or Firings()
    try:
        assert proc.stdout is not None
        ready: list[str] = []
        deadline = time.monotonic() + 60
        while len(ready) < workers and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if line.startswith("eventforge service ready"):
                ready.append(line)
        if len(ready) < workers:
            raise AssertionError(f"only {len(ready)} of {workers} workers became ready in 60 s")
        pids = [int(w.partition("=")[2]) for r in ready for w in r.split() if w.startswith("pid=")]
        result.started = result.started or time.time()
        if kill_one_after is not None:
            time.sleep(kill_one_after)
            os.kill(pids[0], signal.SIGKILL)  # the pool restarts it
            time.sleep(max(0.0, seconds - kill_one_after))
        else:
            time.sleep(seconds)
        result.ended = time.time()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    done = len(result.all)
    lines = (out / "firings").read_text().splitlines() if (out / "firings").exists() else []
    for line in lines[done:]:
        name, tick, late, pid = line.split()
        result.all.append(Firing(name, int(tick), late == "1", int(pid)))
    return result


def one_firing_per_tick(firings: Firings, name: str, interval: float) -> TickReport:
    """Check schedule ``name`` against its ticks between the start and the end of the runs."""
    step = round(interval * 1000)
    mine = firings.of(name)
    counts = collections.Counter(f.tick_ms for f in mine)
    first = int(firings.started * 1000) // step * step + step
    window = list(range(first, int(firings.ended * 1000), step))
    return TickReport(
        ticks=len(window),
        firings=len(mine),
        duplicates=sum(c - 1 for c in counts.values()),
        misses=[t for t in window if t not in counts],
        workers=len({f.pid for f in mine}),
    )
