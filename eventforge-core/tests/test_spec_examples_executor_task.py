"""The spec's Executor and @task snippets, run verbatim as scripts, print what the spec says."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

EXECUTOR_SNIPPET = textwrap.dedent(
    """\
    from eventforge import Executor, ExecutionMode

    def heavy_task(n):
        return sum(range(n))

    # Submit a job and fetch its TaskResult by id.
    with Executor(mode=ExecutionMode.THREAD, max_workers=4) as executor:
        task_id = executor.submit(heavy_task, 1_000_000)
        result = executor.result(task_id)
        print(result.value)

    # Process pool for CPU-bound work, mapped over an iterable.
    with Executor(mode=ExecutionMode.PROCESS, max_workers=4) as executor:
        for r in executor.map(heavy_task, [100_000, 200_000, 300_000]):
            print(r.value)
    """
)

TASK_SNIPPET = textwrap.dedent(
    """\
    from eventforge import (
        task, MessageQueue, Executor, ExecutionMode, TimingMeter
    )

    queue = MessageQueue()
    executor = Executor(mode=ExecutionMode.THREAD)
    timing = TimingMeter()

    @task(
        queue=queue,              # pub-sub wiring (subscribe topic + publish result)
        topic="process.data",
        executor=executor,        # the Executor: local thread mode here
        on_execute=[timing],      # observers (cross-cutting)
        on_success=lambda ctx: print(f"Done: {ctx.result}"),
    )
    def process_data(data):
        return data.upper()

    # Direct call -- runs locally through the Executor, returns the result.
    result = process_data("hello")  # "HELLO"

    # Queue trigger -- same execution path, same observers.
    queue.publish("process.data", "world")
    print(timing.stats)  # {'count': 2, 'avg': ..., ...}
    """
)


def run_script(tmp_path: Path, source: str) -> list[str]:
    script = tmp_path / "snippet.py"
    script.write_text(source)
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_executor_snippet_prints_what_the_spec_says(tmp_path: Path) -> None:
    assert run_script(tmp_path, EXECUTOR_SNIPPET) == [
        "499999500000",
        "4999950000",
        "19999900000",
        "44999850000",
    ]


def test_task_snippet_prints_what_the_spec_says(tmp_path: Path) -> None:
    lines = run_script(tmp_path, TASK_SNIPPET)
    assert lines[:2] == ["Done: HELLO", "Done: WORLD"]
    assert lines[2].startswith("{'count': 2, 'avg': ")
    assert len(lines) == 3


def test_task_snippet_with_a_stand_in_observer_runs_the_same_lifecycle(tmp_path: Path) -> None:
    """The same snippet with a stand-in TimingMeter, so the lifecycle is checked regardless."""
    stand_in = textwrap.dedent(
        """\
        class TimingMeter:
            def __init__(self):
                self.times = []
            def before(self, event):
                pass
            def after(self, event):
                self.times.append(event.elapsed)
            def on_error(self, event):
                self.times.append(event.elapsed)
            @property
            def stats(self):
                return {"count": len(self.times), "avg": sum(self.times) / len(self.times)}
        """
    )
    source = TASK_SNIPPET.replace(
        "from eventforge import (\n    task, MessageQueue, Executor, ExecutionMode, TimingMeter\n)",
        "from eventforge import task, MessageQueue, Executor, ExecutionMode\n" + stand_in,
    )
    assert "TimingMeter\n)" not in source
    lines = run_script(tmp_path, source)
    assert lines[:2] == ["Done: HELLO", "Done: WORLD"]
    assert lines[2].startswith("{'count': 2, 'avg': ")
