"""deploy/'s topology run as local processes: three workers and a demander on loopback.

Docker is not needed: the same worker command (``eventforge run service:svc``) and demander
code the containers run, with a shared token. Calls spread over all three workers; killing one
moves its share to the others; the health check the containers use answers.
"""

from __future__ import annotations

import collections
import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("eventforge_tcp")

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
TOKEN = "topology-test-token"
HEALTH: dict[int, str] = {}


def _demander() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deploy_demander", DEPLOY / "demander.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def workers() -> Iterator[list[tuple[subprocess.Popen[str], int]]]:
    env = {**os.environ, "EVENTFORGE_TRANSPORT": f"tcp://:{TOKEN}@127.0.0.1:0?listen=1"}
    started: list[tuple[subprocess.Popen[str], int]] = []
    try:
        for _ in range(3):
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "eventforge.cli",
                    "run",
                    "service:svc",
                    "--health-port",
                    "0",
                ],
                cwd=DEPLOY,
                env=env,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith("eventforge service ready name=math"), line
            assert TOKEN not in line
            port = int(line.split("url=")[1].split()[0].rsplit(":", 1)[1])
            health = line.split("health=")[1].split()[0]
            HEALTH[proc.pid] = health
            started.append((proc, port))
        yield started
    finally:
        for proc, _ in started:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)


def test_demander_process_spreads_calls_over_three_workers(
    workers: list[tuple[subprocess.Popen[str], int]],
) -> None:
    servers = ",".join(f"127.0.0.1:{port}" for _, port in workers)
    out = subprocess.run(
        [sys.executable, str(DEPLOY / "demander.py"), "--servers", servers, "--calls", "9"],
        env={**os.environ, "EVENTFORGE_TOKEN": TOKEN},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    counts = {line.split(":")[1]: int(line.split()[-2]) for line in out.splitlines()}
    assert sorted(counts) == sorted(str(proc.pid) for proc, _ in workers)
    assert all(count == 3 for count in counts.values())


def test_killing_a_worker_moves_its_share_to_the_others(
    workers: list[tuple[subprocess.Popen[str], int]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EVENTFORGE_TOKEN", TOKEN)
    pool = _demander().Pool([f"127.0.0.1:{port}" for _, port in workers], timeout=5.0)
    try:
        before = collections.Counter(str(pool.call("whoami")).split(":")[1] for _ in range(30))
        assert sorted(before) == sorted(str(proc.pid) for proc, _ in workers)
        assert set(before.values()) == {10}

        victim, _ = workers[1]
        victim.kill()
        victim.wait(10)
        deadline = time.monotonic() + 10
        while pool.queues[1].transport.connected and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not pool.queues[1].transport.connected

        after = collections.Counter(str(pool.call("whoami")).split(":")[1] for _ in range(30))
        survivors = {str(proc.pid) for proc, _ in workers if proc is not victim}
        assert set(after) == survivors, "every call is answered by a live worker"
        assert sum(after.values()) == 30
        assert [pool.call("compute", n) for n in range(6)] == [n * n for n in range(6)]
    finally:
        pool.close()


def test_the_container_health_check_passes_on_a_serving_worker(
    workers: list[tuple[subprocess.Popen[str], int]],
) -> None:
    proc, _ = workers[0]
    done = subprocess.run(
        [sys.executable, "-m", "eventforge.cli", "status", HEALTH[proc.pid]],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[0] == "math: ready"
