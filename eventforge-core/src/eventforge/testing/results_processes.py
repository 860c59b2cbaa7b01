"""Stored task results between real processes: a worker process runs, this one reads.

A transport whose result store is shared across processes proves it by subclassing
:class:`ResultsAcrossProcesses` and providing ``results_url``, the URL of the transport (a
private broker), and optionally ``results_spec``, what ``@task(results=...)`` is given
(default ``True``: the transport's own store; a URL keeps results on another transport)::

    class TestMyResultsAcrossProcesses(ResultsAcrossProcesses):
        @pytest.fixture
        def results_url(self, my_broker):
            return my_broker.url

The worker is ``python -m eventforge.testing._results_worker``; this process only sends
(``send_task``: it never subscribes the tasks) and reads.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest

from eventforge.config import connect
from eventforge.errors import ResultTimeout, TaskFailedError
from eventforge.execution import ResultHandle, ResultStatus, resolve_result_store
from eventforge.queue import MessageQueue
from eventforge.tasks import send_task
from eventforge.testing.waiting import wait_until

__all__ = ["ResultsAcrossProcesses"]

_TTL = 120.0


class ResultsAcrossProcesses:
    """Base class: results of tasks run by another process, read by this one."""

    timeout: ClassVar[float] = 15.0

    @pytest.fixture
    def results_url(self) -> str:
        """The transport URL the worker and this process connect to. Subclasses provide it."""
        pytest.fail(f"{type(self).__name__} must define a 'results_url' fixture")

    @pytest.fixture
    def results_spec(self) -> Any:
        """What ``@task(results=...)`` is given on both sides (default: the transport's)."""
        return True

    def _worker(self, url: str, prefix: str, spec: Any) -> subprocess.Popen[str]:
        extra = [] if spec is True else [str(spec)]
        command = [sys.executable, "-m", "eventforge.testing._results_worker", url, prefix]
        return subprocess.Popen(
            [*command, *extra], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def _first_ping(self, queue: MessageQueue, prefix: str, spec: Any) -> int:
        """Ping the worker until one ping is answered (its subscription is live); its pid."""
        answered: list[int] = []

        def ping() -> bool:
            handle = send_task(queue, f"{prefix}.ping", results=spec, result_ttl=_TTL)
            try:
                answered.append(handle.get(timeout=0.5))
            except ResultTimeout:
                return False
            return True

        assert wait_until(ping, self.timeout, interval=0.01), "the worker never answered a ping"
        return answered[0]

    def test_results_travel_between_processes(
        self, results_url: str, results_spec: Any, tmp_path: Path
    ) -> None:
        """A task run by a worker process is seen pending or running, then its value, and a
        failure raises ``TaskFailedError`` with the worker's traceback, here and on a fresh
        client that only knows the id."""
        prefix = f"results{os.urandom(4).hex()}"
        worker = self._worker(results_url, prefix, results_spec)
        queue = MessageQueue(connect(results_url))
        try:
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "ready"
            assert self._first_ping(queue, prefix, results_spec) == worker.pid

            release = tmp_path / "release"
            held = send_task(queue, f"{prefix}.hold", (str(release), {"n": 7}),
                             results=results_spec, result_ttl=_TTL)  # fmt: skip
            assert held.status in (ResultStatus.PENDING, ResultStatus.RUNNING)
            assert wait_until(lambda: held.status is ResultStatus.RUNNING, self.timeout)
            with pytest.raises(ResultTimeout, match="running"):
                held.get(timeout=0.1)
            release.touch()
            assert held.get(timeout=self.timeout) == {"n": 7}

            failed = send_task(queue, f"{prefix}.fail", ("out of stock",),
                               results=results_spec, result_ttl=_TTL)  # fmt: skip
            with pytest.raises(TaskFailedError, match="out of stock") as info:
                failed.get(timeout=self.timeout)
            assert info.value.type_name == "ValueError"
            assert "in fail" in info.value.traceback_text
            assert info.value.worker.endswith(f":{worker.pid}")

            fresh = connect(results_url)
            try:
                store = resolve_result_store(results_spec, fresh)
                assert store is not None
                assert ResultHandle(held.id, store).get(timeout=self.timeout) == {"n": 7}
                assert ResultHandle(failed.id, store).status is ResultStatus.FAILURE
            finally:
                fresh.close()
        finally:
            queue.close()
            assert worker.stdin is not None
            worker.stdin.close()
            try:
                worker.wait(self.timeout)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
