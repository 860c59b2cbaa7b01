"""The example scripts in examples/ run and print what they promise, in-process and over brokers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(name: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_hello_event() -> None:
    assert run("hello_event.py") == "hello world (session s-42)\n"


def test_rpc_by_correlation() -> None:
    assert run("rpc_by_correlation.py") == "result: 6\n"


def test_wait_for_many_modes() -> None:
    assert run("wait_for_many.py").splitlines() == [
        "given order: {0: 'booting', 1: 'ready', 2: 'running'}",
        "given order, out of order: {0: 'booting', 1: 'ready'} (timed out)",
        "random order: {0: 'booting', 1: 'ready', 2: 'running'}",
        "any of: {0: 'error'}",
    ]


def test_controller_waits_for_three_workers_over_tcp() -> None:
    pytest.importorskip("eventforge_tcp")
    assert run("controller_waits_for_workers.py").splitlines() == [
        "3 workers ready",
        "3 workers finished the suite",
    ]


@pytest.mark.parametrize("broker", ["redis", "nats"])
def test_examples_over_brokers(broker: str, request: pytest.FixtureRequest) -> None:
    pytest.importorskip(f"eventforge_{broker}")
    url = request.getfixturevalue(f"{broker}_server").url
    assert run("hello_event.py", url) == "hello world (session s-42)\n"
    assert run("rpc_by_correlation.py", url) == "result: 6\n"
    assert run("controller_waits_for_workers.py", url).splitlines() == [
        "3 workers ready",
        "3 workers finished the suite",
    ]
